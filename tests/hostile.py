"""A deterministic corpus of hostile uploads, generated at test time (a few MB, a few seconds).

Families: truncations, bit flips, header edits (an ``mdhd`` timescale of 0, an ``stts`` count of
2^31), decompression bombs announced in a tiny header (PNG, GIF, BMP, JPEG, TIFF), extreme aspect
ratios, an animation with thousands of frames, garbage EXIF, frame sizes changing midway
(MPEG-TS, multi-page TIFF), files that name other files or addresses (HLS, concat, SDP, an
image-sequence pattern), polyglots, and plain garbage. Each entry is a file name and its bytes;
what the server must do with each is the same: a 4xx or a 200, never a 5xx, never a hang.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.media import moving_square_frames, write_gif, write_video


def _png(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height``; its data need not fill it (a bomb is the
    header's promise, not the bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = pixels if pixels is not None else b"\x00" * 64
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _valid_png(width: int, height: int) -> bytes:
    return _png(width, height, b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height)))


def _gif_screen(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("P", (1, 1)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _bmp_header(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def _jpeg_sof(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiff_huge() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    # patch ImageWidth (256) and ImageLength (257) in the first IFD to 100000
    ifd = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[ifd : ifd + 2])[0]
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[at : at + 4])
        if tag in (256, 257):
            data[at + 2 : at + 4] = struct.pack("<H", 4)  # LONG
            data[at + 8 : at + 12] = struct.pack("<I", 100_000)
    return bytes(data)


def _tiff_pages_of_two_sizes() -> bytes:
    buf = io.BytesIO()
    first, second = Image.new("RGB", (64, 48), (10, 200, 10)), Image.new("RGB", (32, 96), (200, 10, 10))
    first.save(buf, "TIFF", save_all=True, append_images=[second])
    return buf.getvalue()


def _garbage_exif(fmt: str) -> bytes:
    buf = io.BytesIO()
    exif = b"Exif\x00\x00MM\x00*" + b"\xff" * 40  # a TIFF header pointing nowhere sensible
    Image.new("RGB", (32, 32), (5, 5, 250)).save(buf, fmt, exif=exif)
    return buf.getvalue()


def _patched(data: bytes, box: bytes, offset: int, value: bytes) -> bytes:
    """``value`` written ``offset`` bytes after the first ``box`` type code."""
    out = bytearray(data)
    at = out.index(box) + offset
    out[at : at + len(value)] = value
    return bytes(out)


def _flipped(data: bytes, seed: int, flips: int = 20) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(64, len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def hostile_corpus(tmp: Path) -> dict[str, bytes]:
    """File name -> bytes. Deterministic; generated in ``tmp``."""
    clip = write_video(tmp / "base.mp4", moving_square_frames(48, 96, 64))
    mp4 = clip.read_bytes()
    ts_a = write_video(tmp / "a.ts", moving_square_frames(12, 96, 64)).read_bytes()
    ts_b = write_video(tmp / "b.ts", moving_square_frames(12, 64, 96, seed=1)).read_bytes()
    many = np.zeros((2500, 4, 4, 3), dtype=np.uint8)
    many[:, :, :, 0] = (np.arange(2500) % 256)[:, None, None]
    corpus: dict[str, bytes] = {
        "empty.mp4": b"",
        "one_byte.mp4": b"\x00",
        "random.mp4": random.Random(1).randbytes(50_000),
        "text.mp4": b"this is not a video\n" * 100,
        "truncated_10.mp4": mp4[: len(mp4) // 10],
        "truncated_50.mp4": mp4[: len(mp4) // 2],
        "truncated_90.mp4": mp4[: len(mp4) * 9 // 10],
        "no_moov.mp4": mp4.replace(b"moov", b"free", 1),
        "mdhd_timescale_0.mp4": _patched(mp4, b"mdhd", 16, b"\x00\x00\x00\x00"),  # version 0: timescale at +16
        "stts_count_2e31.mp4": _patched(mp4, b"stts", 8, struct.pack(">I", 2**31)),
        "stsz_count_huge.mp4": _patched(mp4, b"stsz", 12, struct.pack(">I", 2**30)),
        "png_65535_square.png": _png(65535, 65535),
        "png_30000_square.png": _png(30000, 30000),
        "png_12000_square.png": _png(12000, 12000),
        "png_4000x2.png": _valid_png(4000, 2),
        "png_65535x1.png": _png(65535, 1),
        "png_1x65535.png": _png(1, 65535),
        "gif_3000x1.gif": write_gif(tmp / "wide.gif", np.full((2, 1, 3000, 3), 128, dtype=np.uint8)).read_bytes(),
        "gif_screen_65535.gif": _gif_screen(65535, 65535),
        "gif_2500_frames.gif": write_gif(tmp / "many.gif", many).read_bytes(),
        "bmp_50000_square.bmp": _bmp_header(50000, 50000),
        "jpeg_sof_65500.jpg": _jpeg_sof(65500, 65500),
        "tiff_100000_square.tif": _tiff_huge(),
        "tiff_two_sizes.tif": _tiff_pages_of_two_sizes(),
        "png_garbage_exif.png": _garbage_exif("PNG"),
        "webp_garbage_exif.webp": _garbage_exif("WEBP"),
        "ts_size_change.mp4": ts_a + ts_b,
        "hls.mp4": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n",
        "concat.mp4": b"ffconcat version 1.0\nfile /etc/passwd\n",
        "sdp.mp4": b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 9 RTP/AVP 96\n",
        "pattern%03d.mp4": b"\x89PNG\r\n\x1a\n" + b"\x00" * 32,
        "png_then_mp4.png": _valid_png(16, 16) + mp4,
        "mp4_then_zip.mp4": mp4 + b"PK\x03\x04" + b"\x00" * 100,
        "svg.mp4": b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
    }
    for seed in range(6):
        corpus[f"bitflip_{seed}.mp4"] = _flipped(mp4, seed)
    return corpus
