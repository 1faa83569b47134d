"""PyAV containers opened under the upload rules, their video stream, and frames as upright RGB."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel
from av.video.reformatter import Interpolation

from text4vis.models.frames import upright
from text4vis.models.sampling import resized_size

# An upload is a file: FFmpeg may read that file only (no network, no other local file) and only
# with the demuxers of video files. A playlist (HLS), a concat script, an SDP description or an
# image-sequence pattern renamed .mp4 is refused before its demuxer could follow what it names.
# (decord cannot be restricted: it only sees files PyAV has opened under these rules first.)
_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,h264,hevc,m4v,ivf,ogg,asf"
_INPUT_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": _DEMUXERS}


def open_container(path: Path, gpu: int | None = None, demux_only: bool = False) -> av.container.InputContainer:
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
def closed_on_error(container: av.container.InputContainer) -> Iterator[None]:
    try:
        yield
    except BaseException:
        container.close()
        raise


def video_stream(container: av.container.InputContainer, threads: int) -> av.video.stream.VideoStream:
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


def to_rgb(frame: av.VideoFrame, short_side: int | None = None) -> np.ndarray:
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
