"""Whether NVDEC can decode for this process: a generated clip must decode on the GPU to the
very pixels the CPU gives."""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import hwdevices_available

from text4vis.models.media.base import short
from text4vis.models.media.pyav import PyAVReader


def nvdec_problem(gpu: int = 0) -> str | None:
    """Why NVDEC cannot decode for this process on CUDA device ``gpu``, or None when it can: a
    generated H.264 clip (with B-frames) must decode on the GPU to the very pixels the CPU gives."""
    if "cuda" not in hwdevices_available():
        return "this FFmpeg build has no CUDA hardware decoding"
    with tempfile.TemporaryDirectory(prefix="t4v-nvdec-") as tmp:
        clip = Path(tmp) / "probe.mp4"
        _write_probe_clip(clip)
        indices = [0, 5, 11]
        cpu = PyAVReader(clip, 1)._decode(indices)
        try:
            gpu_frames = PyAVReader(clip, 1, gpu=gpu)._decode(indices)
        except Exception as exc:  # noqa: BLE001 - no driver, no device, no NVDEC for H.264 ...
            return f"NVDEC did not decode on cuda:{gpu} ({short(exc)})"
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
