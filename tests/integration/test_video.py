"""Decoding: sampled frames equal a full decode at those indices, for both decoders, on real clips."""

import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from engine.errors import MediaError
from engine.sampling import sample_indices
from engine.video import open_media
from models.training.data import read_video
from tests.conftest import REAL_CLIPS, shared_path
from tests.media import moving_square_frames, write_gif, write_video


def full_decode_pyav(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def full_decode_decord(path: Path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    return np.stack([vr[i].asnumpy() for i in range(len(vr))])


FULL = {"pyav": full_decode_pyav, "decord": full_decode_decord}


@pytest.mark.parametrize("name", REAL_CLIPS)
@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_sampled_equals_full_decode(name: str, decoder: str) -> None:
    path = shared_path("videos", name)
    full = FULL[decoder](path)
    with open_media(path, decoder) as media:
        assert media.info.num_frames == len(full)
        assert media.info.decoder == decoder
        assert (media.info.width, media.info.height) == (full.shape[2], full.shape[1])
        for t, clips in [(8, 1), (16, 1), (8, 4), (32, 1)]:
            idx = sample_indices(media.info.num_frames, t, clips).reshape(-1)
            np.testing.assert_array_equal(media.read(idx.tolist()), full[idx])


@pytest.mark.parametrize("name", REAL_CLIPS)
def test_decoders_agree(name: str) -> None:
    path = shared_path("videos", name)
    idx = sample_indices(open_media(path, "pyav").info.num_frames, 8).reshape(-1).tolist()
    a = open_media(path, "decord").read(idx).astype(int)
    b = open_media(path, "pyav").read(idx).astype(int)
    assert np.abs(a - b).mean() < 2.0  # both are FFmpeg; colour conversion may round differently


def test_generated_video_and_frame_count(tmp_path: Path) -> None:
    frames = moving_square_frames(30, 64, 48)
    path = write_video(tmp_path / "v.mp4", frames, codec="mpeg4")
    for decoder in ("decord", "pyav"):
        with open_media(path, decoder) as media:
            assert media.info.num_frames == 30
            assert media.read([0, 29]).shape == (2, 48, 64, 3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_is_read_upright_by_every_decoder(
    tmp_path: Path, rotation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phones store portrait video as landscape frames plus a display rotation."""
    frames = np.zeros((6, 32, 64, 3), np.uint8)
    frames[:, :, :16] = 255  # a white band at the left edge of the coded frame
    path = write_video(tmp_path / "phone.mp4", frames, rotation=rotation)
    upright = np.rot90(frames[0], rotation // 90)  # counter-clockwise, as the display matrix says
    got = {}
    for decoder in ("decord", "pyav"):
        with open_media(path, decoder) as media:
            got[decoder] = media.read([0, 5])
    got["training decord"] = read_video(path, lambda n: [0, 5])
    monkeypatch.setitem(sys.modules, "decord", None)  # training's PyAV fallback
    got["training pyav"] = read_video(path, lambda n: [0, 5])
    for decoder, frames_read in got.items():
        assert frames_read.shape[1:3] == upright.shape[:2], decoder
        assert np.abs(frames_read[0].astype(int) - upright).mean() < 4, decoder


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_still_images_are_one_frame(tmp_path: Path, fmt: str) -> None:
    frame = moving_square_frames(1, 80, 60)[0]
    path = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(frame).save(path, format=fmt)
    with open_media(path) as media:
        assert (media.info.kind, media.info.num_frames) == ("image", 1)
        out = media.read([0, 0, 0])
    assert out.shape == (3, 60, 80, 3)
    np.testing.assert_array_equal(out[0], np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize(("orientation", "turns"), [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turns: int) -> None:
    """A phone photo stores landscape pixels plus an EXIF Orientation (6: turn 90 degrees clockwise)."""
    stored = moving_square_frames(1, 80, 60)[0]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    upright = np.rot90(stored, turns)  # numpy turns counter-clockwise
    with open_media(path) as media:
        assert (media.info.width, media.info.height) == (upright.shape[1], upright.shape[0])
        np.testing.assert_array_equal(media.read([0])[0], upright)


def test_animated_gif_is_a_video(tmp_path: Path) -> None:
    frames = moving_square_frames(12, 40, 30)
    path = write_gif(tmp_path / "anim.gif", frames)
    with open_media(path) as media:
        assert (media.info.kind, media.info.num_frames) == ("animation", 12)
        out = media.read([11, 0, 5])
    gif = Image.open(path)
    gif.seek(5)
    np.testing.assert_array_equal(out[2], np.asarray(gif.convert("RGB")))
    assert not np.array_equal(out[0], out[1])


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        open_media(path)


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("hello, this is not a video\n" * 100)
    with pytest.raises(MediaError, match="not a video or image"):
        open_media(path)


def test_truncated_video(tmp_path: Path) -> None:
    data = shared_path("videos", "arm_wrestling.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError), open_media(path) as media:
        media.read(sample_indices(media.info.num_frames, 8).reshape(-1).tolist())


def test_truncated_image(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(moving_square_frames(1, 200, 200)[0]).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(MediaError, match="truncated or corrupt"):
        open_media(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        open_media(tmp_path / "nope.mp4")
