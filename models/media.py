"""Open a video or an image and decode only the frames asked for.

Videos go to PyAV by default (``auto``): it jumps to the keyframe before each sampled frame and
skips decoding the non-reference frames nobody asked for, which is exact and 1.4x cheaper than
decord on a 1080p H.264 clip (bench/decode.py). decord stays selectable (``decord``, and only
decord then); it is not the default because a decord call cannot be interrupted at a
request's deadline and has known hangs. ``nvdec`` is the same PyAV reader with FFmpeg's CUDA
hardware decoder (the GPU's NVDEC engines) doing the decoding; a file NVDEC cannot decode is read
on the CPU instead, with a log line (:func:`nvdec_problem` says whether a GPU can be used at all).
Still images (JPEG, PNG, WebP, ...) are 1-frame videos;
animated GIF/WebP are videos, read by Pillow. Frames come back as uint8 ``[N, H, W, 3]`` RGB.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available
from av.video.reformatter import Interpolation
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from models.errors import MediaError, MediaLimitExceeded
from models.frames import upright
from models.limits import MediaLimits
from models.sampling import resized_size

log = logging.getLogger(__name__)

Decoder = Literal["auto", "decord", "pyav", "nvdec"]
FrameFn = Callable[[np.ndarray], np.ndarray]
DECODERS: tuple[Decoder, ...] = ("auto", "decord", "pyav", "nvdec")
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}

try:  # decord has wheels for x86-64 Linux only; PyAV covers the rest
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg would write to our stderr
    HAVE_DECORD = True
except ImportError:  # pragma: no cover - depends on the platform
    HAVE_DECORD = False


@dataclass(frozen=True)
class MediaInfo:
    """What a probe learns without decoding the frames."""

    kind: Literal["video", "image", "animation"]
    num_frames: int
    width: int
    height: int
    fps: float | None
    decoder: str


class MediaReader(ABC):
    """An open file; :meth:`read` decodes frames by index, in the order given."""

    info: MediaInfo

    @abstractmethod
    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        """The frames at ``indices``, ``[N, H, W, 3]`` uint8. ``each``: applied to every distinct
        frame as soon as it is decoded (a resize), so full-size frames are not all held at once;
        the result then stacks what it returns. ``short_side``: videos read by PyAV come back with
        their short side scaled to it by FFmpeg's bicubic scaler, straight from the decoded YUV
        (cheaper than converting the full frame and resizing it, but not Pillow's pixels: see
        bench/decode.py); other readers ignore it."""

    def keyframes(self) -> list[int] | None:
        """Display indices of the keyframes (frames that decode on their own), or None if unknown."""
        return None

    def frame_times(self) -> FrameTimes | None:
        """When each frame is shown (videos read by PyAV), or None if unknown."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _check(self, indices: Sequence[int]) -> None:
        if not len(indices):
            raise ValueError("no frame indices")
        bad = [i for i in indices if not 0 <= i < self.info.num_frames]
        if bad:
            raise ValueError(f"frame indices {bad[:4]} outside 0..{self.info.num_frames - 1}")


def open_media(
    path: Path, decoder: Decoder = "auto", threads: int = 1, name: str | None = None, gpu: int = 0,
    limits: MediaLimits | None = None,
) -> MediaReader:
    """Open ``path`` as an image or a video within ``limits`` (the defaults of :class:`MediaLimits`
    when None). Raises :class:`MediaError` for anything undecodable, :class:`MediaLimitExceeded`
    past a limit.

    ``name`` is how messages call the file (an upload's own name rather than a spool path);
    ``gpu``: the CUDA device index the ``nvdec`` decoder uses.
    """
    try:
        return _open(path, decoder, threads, gpu, limits or MediaLimits())
    except MediaError as exc:
        raise renamed(exc, path, name) from None


def renamed(exc: MediaError, path: Path, name: str | None) -> MediaError:
    """Keep server paths out of messages: the full path and the file name become ``name``."""
    name = name or path.name
    return type(exc)(str(exc).replace(str(path), name).replace(path.name, name))


def _open(path: Path, decoder: Decoder, threads: int, gpu: int, limits: MediaLimits) -> MediaReader:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    if not path.is_file():
        raise MediaError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path.name}: the file is empty")
    image = _PillowReader.try_open(path, limits)
    if image is not None:
        return image
    video = _PyAVReader(path, threads, gpu=gpu if decoder == "nvdec" else None)  # reads the header only
    info = video.info
    limits.check(path.name, info.kind, info.width, info.height, info.num_frames, info.fps)
    if decoder == "decord":
        if not HAVE_DECORD:
            raise MediaError("decord is not installed on this platform; use the pyav decoder")
        video.close()
        return _DecordReader(path, threads, (info.width, info.height))
    return video


class _PillowReader(MediaReader):
    def __init__(self, path: Path, image: Image.Image) -> None:
        self._path = path
        self._image = image
        frames = int(getattr(image, "n_frames", 1))
        turned = _orientation(image) in (5, 6, 7, 8)  # a phone's portrait photo
        self.info = MediaInfo(
            kind="animation" if frames > 1 else "image",
            num_frames=frames,
            width=image.height if turned else image.width,
            height=image.width if turned else image.height,
            fps=_gif_fps(image) if frames > 1 else None,
            decoder="pillow",
        )

    @classmethod
    def try_open(cls, path: Path, limits: MediaLimits) -> _PillowReader | None:
        """A reader if ``path`` is an image, None if it is not; MediaError for a broken image,
        MediaLimitExceeded (before decoding it) for one past the limits."""
        looks_like_image = _sniff_image(path)
        try:
            with warnings.catch_warnings():  # past Pillow's warning size: our own limit decides below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
        except Image.DecompressionBombError:
            raise MediaLimitExceeded(f"{path.name}: the image has more than {limits.max_pixels} pixels "
                                     "(T4V_MAX_PIXELS)") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            if looks_like_image:
                raise MediaError(f"{path.name}: the image is truncated or corrupt ({_short(exc)})") from None
            return None
        if image.format not in IMAGE_FORMATS:
            image.close()
            return None
        try:
            frames = int(getattr(image, "n_frames", 1))
            limits.check(path.name, "animation" if frames > 1 else "image", image.width, image.height, frames)
        except BaseException:
            image.close()
            raise
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            image.close()
            raise MediaError(f"{path.name}: the {image.format} image is truncated or corrupt ({_short(exc)})") from None
        return cls(path, image)

    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        self._check(indices)
        decoded: dict[int, np.ndarray] = {}
        sizes = _OneSize(self._path.name)
        try:
            for i in sorted(set(indices)):
                self._image.seek(i)
                frame = np.asarray(_upright(self._image).convert("RGB"))
                sizes.check(frame.shape[:2])
                decoded[i] = frame if each is None else each(frame)
        except (OSError, ValueError, EOFError, SyntaxError) as exc:
            raise MediaError(f"{self._path.name}: frame decoding failed ({_short(exc)})") from None
        return np.stack([decoded[i] for i in indices])

    def close(self) -> None:
        self._image.close()


class _DecordReader(MediaReader):
    def __init__(self, path: Path, threads: int, size: tuple[int, int]) -> None:
        """``size``: width and height from PyAV's look at the file (it fails quietly on what is not
        a video, where decord's own FFmpeg writes to the process's stderr)."""
        self._path = path
        width, height = size
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
            n = len(self._vr)
            fps = float(self._vr.get_avg_fps())
        except Exception as exc:  # noqa: BLE001 - decord raises DECORDError, RuntimeError, ...
            raise MediaError(f"{path.name}: truncated or corrupt video (decord: {_short(exc)})") from None
        if n < 1:
            raise MediaError(f"{path.name}: the video has no frames")
        self.info = MediaInfo("video", n, width, height, fps or None, "decord")

    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        self._check(indices)
        try:
            frames = self._vr.get_batch(list(indices)).asnumpy()
        except Exception as exc:  # noqa: BLE001
            raise MediaError(f"{self._path.name}: truncated or corrupt video ({_short(exc)})") from None
        return frames if each is None else np.stack([each(f) for f in frames])

    def keyframes(self) -> list[int] | None:
        return [int(i) for i in self._vr.get_key_indices()]

    def close(self) -> None:
        del self._vr


class _PyAVReader(MediaReader):
    def __init__(
        self, path: Path, threads: int, num_frames: int | None = None, count_frames: bool = True, seek: bool = True,
        gpu: int | None = None,
    ) -> None:
        self._path = path
        self._threads = threads
        self._gpu = gpu  # a CUDA device index: NVDEC decodes (probing and packet scans need no decoder)
        self._seek = seek  # False: always count frames from the start (the baseline in bench/decode.py)
        # The container opened to read the header is kept for the first read: an open costs as much
        # as decoding a frame (FFmpeg decodes the first one to learn the stream's parameters).
        self._unread: av.container.InputContainer | None = None
        try:
            container = _open_container(path)
            with _closed_on_error(container):
                if not container.streams.video:
                    raise MediaError(f"{path.name}: no video stream")
                stream = container.streams.video[0]
                n = num_frames or stream.frames
                counted = not n and count_frames
                if counted:  # no count in the header: count the packets
                    n = sum(1 for p in container.demux(stream) if p.size)
                fps = float(stream.average_rate) if stream.average_rate else None
                width, height = stream.codec_context.width, stream.codec_context.height
                if not width or not height or (count_frames and n < 1):
                    raise MediaError(f"{path.name}: the video has no decodable frames")
            if counted or gpu is not None:  # demuxed to its end, or NVDEC reads open their own
                container.close()
            else:
                self._unread = container
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001 - av raises InvalidDataError, FileNotFoundError, ...
            raise MediaError(f"{path.name}: not a video or image that can be decoded ({_short(exc)})") from None
        self.info = MediaInfo("video", int(n or 0), width, height, fps, "pyav" if gpu is None else "nvdec")

    @functools.cached_property
    def _scan(self) -> FrameTimes | None:
        try:
            return _scan_packets(self._path)
        except Exception:  # noqa: BLE001 - unreadable packets: the caller samples without keyframes
            return None

    def keyframes(self) -> list[int] | None:
        """Display indices of the keyframes, from one packet scan per reader (:func:`_scan_packets`):
        fast sampling, timelines and the seeking read share it."""
        return self._scan.keys if self._scan is not None else None

    def frame_times(self) -> FrameTimes | None:
        return self._scan

    def read(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        self._check(indices)
        if self._gpu is not None:
            try:
                return self._decode(indices, each, short_side)
            except Exception as exc:  # noqa: BLE001 - a codec, profile or size NVDEC lacks, or a damaged file
                log.warning("NVDEC could not decode %s (%s): decoding it on the CPU", self._path.name, _short(exc))
                self._gpu = None
                self.info = replace(self.info, decoder="pyav")
        try:
            return self._decode(indices, each, short_side)
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise MediaError(f"{self._path.name}: truncated or corrupt video ({_short(exc)})") from None

    def _decode(self, indices: Sequence[int], each: FrameFn | None = None, short_side: int | None = None) -> np.ndarray:
        sizes = _OneSize(self._path.name)

        def convert(frame: av.VideoFrame) -> np.ndarray:
            sizes.check((frame.height, frame.width))
            rgb = _rgb(frame, short_side)
            return rgb if each is None else each(rgb)

        decoded = None
        if self._seek:
            decoded = self._read_by_seeking(sorted(set(indices)), convert=convert)
        if decoded is None:  # no usable index or not constant-rate: count every frame from the start
            with self._container() as container:
                decoded = self._read_sequential(container, set(indices), convert)
        return np.stack([decoded[i] for i in indices])

    def _container(self) -> av.container.InputContainer:
        """The container the header was read from if nothing has read it since (reading starts at
        its first packet), else a new one; NVDEC's when it decodes."""
        if self._unread is not None and self._gpu is None:
            container, self._unread = self._unread, None
            return container
        return _open_container(self._path, self._gpu)

    def close(self) -> None:
        if self._unread is not None:
            self._unread.close()
            self._unread = None

    def _read_by_seeking(
        self, wanted: list[int], skip: bool = True, convert: Callable[[av.VideoFrame], np.ndarray] | None = None,
    ) -> dict[int, np.ndarray] | None:
        """Keyframes from the index, else from a packet scan (open GOPs, partial indexes); None
        when neither reads exactly (the caller counts frames)."""
        for scan in (False, True):
            times = self._scan if scan else None  # None: the container's index and the frame rate
            if scan and times is None:
                return None
            try:
                with self._container() as container:
                    decoded = _read_seeking(container, wanted, self._threads, skip=skip, times=times,
                                            convert=convert or _rgb)
            except Exception as exc:  # noqa: BLE001 - a failed seek or a damaged file: counting says which
                log.debug("seeking in %s failed (%s)", self._path.name, _short(exc))
                continue
            if decoded is not None:
                return decoded
        return None

    def _read_sequential(
        self, container: av.container.InputContainer, wanted: set[int],
        convert: Callable[[av.VideoFrame], np.ndarray] | None = None,
    ) -> dict[int, np.ndarray]:
        stream = _video_stream(container, self._threads)
        decoded: dict[int, np.ndarray] = {}
        count, last = 0, max(wanted)
        for count, frame in enumerate(container.decode(stream)):  # noqa: B007
            if count in wanted:  # convert only the sampled frames
                decoded[count] = (convert or _rgb)(frame)
            if count >= last:
                break
        if len(decoded) < len(wanted):
            raise MediaError(
                f"{self._path.name}: truncated or corrupt: decoded {count + 1} of the "
                f"{self.info.num_frames} frames its header announces"
            )
        return decoded


# An upload is a file: FFmpeg may read that file only (no network, no other local file) and only
# with the demuxers of video files. A playlist (HLS), a concat script, an SDP description or an
# image-sequence pattern renamed .mp4 is refused before its demuxer could follow what it names.
# (decord cannot be restricted: it only sees files PyAV has opened under these rules first.)
_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,h264,hevc,m4v,ivf,ogg,asf"
_INPUT_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": _DEMUXERS}


def _open_container(path: Path, gpu: int | None = None, demux_only: bool = False) -> av.container.InputContainer:
    """The file under the whitelists; with ``gpu``, its video decoded by NVDEC on that CUDA device
    (no silent software fallback: a failure is an error the reader answers by using the CPU).
    ``demux_only``: for reading packets, not frames; FFmpeg then does not decode a frame to learn
    the stream's parameters (a frame's decode at every open: 20 ms at 1080p H.264)."""
    if gpu is None:
        options = dict(_INPUT_OPTIONS, skip_frame="all") if demux_only else dict(_INPUT_OPTIONS)
        return av.open(str(path), options=options)
    # primary_ctx: FFmpeg uses the device's primary CUDA context, created once per process and
    # shared by every file, instead of creating (hundreds of ms) and destroying one per file
    hwaccel = HWAccel("cuda", device=str(gpu), allow_software_fallback=False, options={"primary_ctx": "1"})
    return av.open(str(path), options=dict(_INPUT_OPTIONS), hwaccel=hwaccel)


@contextlib.contextmanager
def _closed_on_error(container: av.container.InputContainer) -> Iterator[None]:
    try:
        yield
    except BaseException:
        container.close()
        raise


def _video_stream(container: av.container.InputContainer, threads: int) -> av.video.stream.VideoStream:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


# NVDEC hands back semi-planar frames; the CPU decoders planar ones. Splitting the chroma plane
# is exact, and then the conversion to RGB is the same code on both paths (converting NV12 straight
# to RGB differs from the planar path by up to 36 levels in FFmpeg 8).
_PLANAR_OF = {"nv12": "yuv420p", "p010le": "yuv420p10le", "p016le": "yuv420p16le"}


# FFmpeg's bicubic scaler, with chroma interpolated to full width before converting to RGB: without
# that, frames are 3.5 levels off Pillow's on average (1080p), with it 1.7 (bench/decode.py)
_SCALING = Interpolation.BICUBIC | Interpolation.FULL_CHR_H_INT


def _rgb(frame: av.VideoFrame, short_side: int | None = None) -> np.ndarray:
    """The frame as RGB, upright; ``short_side``: scaled by FFmpeg's bicubic scaler (in the same
    pass as the conversion to RGB) so that its short side, upright, is that long."""
    rotation = frame.rotation
    planar = _PLANAR_OF.get(frame.format.name)
    if planar is not None:
        frame = frame.reformat(format=planar)
    if short_side is None:
        return upright(frame.to_ndarray(format="rgb24"), rotation)
    turned = round(rotation / 90) % 2 == 1  # stored sideways: the shown height is the stored width
    shown = (frame.width, frame.height) if turned else (frame.height, frame.width)
    height, width = resized_size(*shown, short_side)
    if turned:
        height, width = width, height
    scaled = frame.reformat(width=width, height=height, format="rgb24", interpolation=_SCALING)
    return upright(scaled.to_ndarray(), rotation)


def nvdec_problem(gpu: int = 0) -> str | None:
    """Why NVDEC cannot decode for this process on CUDA device ``gpu``, or None when it can: a
    generated H.264 clip (with B-frames) must decode on the GPU to the very pixels the CPU gives."""
    if "cuda" not in hwdevices_available():
        return "this FFmpeg build has no CUDA hardware decoding"
    with tempfile.TemporaryDirectory(prefix="t4v-nvdec-") as tmp:
        clip = Path(tmp) / "probe.mp4"
        _write_probe_clip(clip)
        indices = [0, 5, 11]
        cpu = _PyAVReader(clip, 1)._decode(indices)
        try:
            gpu_frames = _PyAVReader(clip, 1, gpu=gpu)._decode(indices)
        except Exception as exc:  # noqa: BLE001 - no driver, no device, no NVDEC for H.264 ...
            return f"NVDEC did not decode on cuda:{gpu} ({_short(exc)})"
    if not np.array_equal(cpu, gpu_frames):
        diff = int(np.abs(cpu.astype(np.int16) - gpu_frames).max())
        return f"NVDEC's frames differ from the CPU decoder's (up to {diff} levels)"
    return None


def _write_probe_clip(path: Path, frames: int = 12) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"
        stream.options = {"preset": "fast", "bframes": "2", "g": "6"}
        y, x = np.mgrid[0:144, 0:256]
        for i in range(frames):
            rgb = np.stack([(x + 9 * i) % 256, (y + 5 * i) % 256, (x * y // 64 + 7 * i) % 256], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        container.mux(stream.encode())


@dataclass(frozen=True)
class FrameTimes:
    """When each frame of a video is shown, from its packets' timestamps (demuxing only, no
    decoding): right for variable frame rates, open GOPs and partial indexes alike."""

    pts: np.ndarray  # int64 [N]: presentation timestamps in display order (stream time units), distinct
    keys: list[int]  # display indices of the keyframes
    time_base: Fraction  # seconds per stream time unit
    end: int  # where the last frame ends (its timestamp plus its duration)

    def index_of(self, pts: int | None) -> int | None:
        """The display index of the frame shown at ``pts``; None for a timestamp no frame has."""
        if pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and int(self.pts[i]) == pts else None


def _scan_packets(path: Path) -> FrameTimes | None:
    """:class:`FrameTimes` of the video stream of ``path``; None where the packets do not say
    (a packet without a timestamp, two frames at one timestamp)."""
    with _open_container(path, demux_only=True) as container:
        stream = container.streams.video[0]
        base = stream.time_base
        if not base:
            return None
        pts: list[int] = []
        key_pts: list[int] = []
        end = None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
            last = packet.pts + max(packet.duration or 0, 0)
            end = last if end is None else max(end, last)
    order = np.array(sorted(pts), dtype=np.int64)
    if not len(order) or len(np.unique(order)) != len(order) or end is None:
        return None
    keys = sorted(int(np.searchsorted(order, k)) for k in key_pts)
    if end <= order[-1] and len(order) > 1:  # no packet durations: the last frame lasts as long as the one before
        end = int(order[-1] + (order[-1] - order[-2]))
    return FrameTimes(order, keys, Fraction(base), int(end))


def _read_seeking(
    container: av.container.InputContainer, wanted: list[int], threads: int = 1, skip: bool = True,
    times: FrameTimes | None = None, convert: Callable[[av.VideoFrame], np.ndarray] = _rgb,
) -> dict[int, np.ndarray] | None:
    """The ``wanted`` frames (sorted display indices), jumping to the last keyframe before each
    one instead of decoding everything between them; ``None`` where that cannot be done exactly.

    ``times``: the packet scan (:func:`_scan_packets`), which gives each timestamp's display index
    and the keyframes for any frame rate, open GOPs and partial indexes. Without it, the container's
    index gives the keyframes (one entry per frame, in decode order: a keyframe's position in it is
    its display index for closed GOPs only) and a frame's display index is its timestamp over the
    frame duration, which holds for constant-rate video only. Between a keyframe and a
    wanted frame, the packets of frames nobody wants are decoded with ``skip_frame=NONREF``
    (``skip``): a frame no other frame references is not decoded at all, which changes no other
    frame's pixels. So every decoded frame is checked: the first after a seek must be the keyframe
    sought, the next ones must come in display order, and a frame may be missing only if it was
    not wanted; anything else (variable rate without a scan, open GOPs, a bad index) answers
    ``None`` and the caller counts frames from the start instead.
    """
    stream = _video_stream(container, threads)
    index_of: Callable[[int | None], int | None]
    seek_pts: Callable[[int], int]
    if times is not None:
        keys = times.keys
        index_of = times.index_of

        def seek_pts(key: int) -> int:
            return int(times.pts[key])
    else:
        rate, base = stream.average_rate, stream.time_base
        if not rate or not base:
            return None
        entries = list(stream.index_entries or [])
        if len(entries) != (stream.frames or len(entries)) or len(entries) <= wanted[-1]:
            return None
        keys = [i for i, entry in enumerate(entries) if entry.is_keyframe]
        ticks = 1 / float(rate * base)  # stream time units per frame
        origin = stream.start_time or 0

        def index_of(pts: int | None) -> int | None:
            return None if pts is None else round((pts - origin) / ticks)

        def seek_pts(key: int) -> int:
            return round(origin + key * ticks)

    if len(keys) < 2 or keys[0] != 0:
        return None
    want = set(wanted)
    codec = stream.codec_context

    drain_at: int | None = None  # the display index after whose packet no more packets are fed

    def frames_from_here() -> Iterator[av.VideoFrame]:
        fed: set[int] = set()
        packets = container.demux(stream)
        while drain_at is None or drain_at not in fed:
            packet = next(packets, None)
            if packet is None:
                return
            i = index_of(packet.pts)
            if skip:  # decode only what is wanted or referenced; the decoder reads this per frame
                codec.skip_frame = "DEFAULT" if i is None or i in want else "NONREF"
            if i is not None:
                fed.add(i)
            yield from packet.decode()
        yield from codec.decode(None)  # the frames the decoder holds back for reordering

    decoded: dict[int, np.ndarray] = {}
    frames: Iterator[av.VideoFrame] | None = None
    at_start = True  # nothing demuxed yet: reading on starts at frame 0
    position = -1  # display index of the last frame decoded
    def key_of(index: int) -> int:
        return keys[bisect.bisect_right(keys, index) - 1]

    for n, target in enumerate(wanted):
        if target in decoded:
            continue
        key = key_of(target)
        expect = position + 1
        # The last wanted frame before a seek: once its packet is in, the decoder is drained instead
        # of fed the packets after it, which its output order would wait for and nothing here needs
        # (a frame only references frames decoded before it). A keyframe alone costs one frame.
        last_in_its_gop = n + 1 == len(wanted) or key_of(wanted[n + 1]) > key
        drain_at = target if last_in_its_gop else None
        first = True  # the first frame decoded from the start or after a seek must be the keyframe
        if frames is None and key == 0 and at_start:
            frames = frames_from_here()
        elif frames is None or key > expect:  # a keyframe between here and the target: jump to it
            container.seek(seek_pts(key), stream=stream, backward=True)  # demuxers seek on pts
            frames, expect = frames_from_here(), key
        else:
            first = False  # going on from the last frame: skipped frames may come before the next one
        at_start = False
        for frame in frames:
            index = index_of(frame.pts)
            if index is None or index < expect or (first and index != expect):
                return None
            if any(i in want for i in range(expect, index)):  # a wanted frame did not come out
                return None
            first, position = False, index
            if position in want:
                decoded[position] = convert(frame)
            if position >= target:
                break
            expect = position + 1
        if drain_at is not None:  # drained: reset the decoder for the next seek
            codec.flush_buffers()
            frames = None
        if target not in decoded:
            return None  # the file ended early: the sequential read says how
    return decoded


_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


class _OneSize:
    """Refuses a file whose frame size changes midway (MPEG-TS, multi-page TIFF), checked on the
    decoded frames before they are resized."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._shape: tuple[int, int] | None = None

    def check(self, shape: tuple[int, int]) -> None:
        """``shape``: height and width of the next decoded frame."""
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            shown = " and ".join(f"{w}x{h}" for h, w in sorted([self._shape, shape]))
            raise MediaError(f"{self._name}: the frame size changes inside the file ({shown}); "
                             "re-encode it at one size")


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation, 1 (as stored) where the EXIF block is missing or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data"
            return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - garbage EXIF raises SyntaxError, struct.error, ...
        return 1


def _upright(image: Image.Image) -> Image.Image:
    """The frame as a viewer shows it (EXIF orientation applied; garbage EXIF ignored)."""
    if _orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001
        return image


def _sniff_image(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(16)
    return head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _gif_fps(image: Image.Image) -> float | None:
    duration = image.info.get("duration")
    return 1000.0 / duration if duration else None


def _short(exc: BaseException) -> str:
    """One short clause for a message: FFmpeg's own words, without its errno and file name."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]
