"""Frame preprocessing without torch: resize the short side, crop (decode workers import only this).

A served video gets exactly the pixels the reference PIL pipelines feed their models: Pillow itself
resizes (bicubic, ~12x cheaper than a torch resize on a 1080p frame: bench/decode.py). Frames
already on a GPU are resized there by ``models/preprocess_torch.py``, a torch port of Pillow's
algorithm that gives the same pixels (tests/unit/test_preprocess.py); normalization runs where the
encoder runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from text4vis.models.choices import Preprocess, Scaler
from text4vis.models.sampling import crop_offsets as crop_offsets  # re-exported: the crops are part of preprocessing
from text4vis.models.sampling import resized_size as resized_size

PreprocessMode = Preprocess  # the name this module's callers know


@dataclass(frozen=True)
class PreprocessConfig:
    resize: int  # short side after resizing
    crop: int  # square crop size = the model's input size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # who resizes video frames: Pillow (the reference's pixels) or FFmpeg's scaler as PyAV decodes
    # them (several times cheaper, a few levels off: an opt-in, see bench/decode.py)
    scaler: Scaler = Scaler.PILLOW

    @classmethod
    def for_mode(
        cls,
        mode: PreprocessMode | str,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> PreprocessConfig:
        mode = PreprocessMode(mode)
        # the reference: S = 256 if C == 224 else C (a 336-px model: short side 336, crop 336)
        text4vis = 256 if image_size == 224 else image_size
        resize = image_size if mode is PreprocessMode.CLIP else text4vis
        return cls(resize=resize, crop=image_size, mean=mean, std=std)


def resize_and_crop(frames: np.ndarray, cfg: PreprocessConfig, crops: int = 1) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> uint8 ``[crops, N, 3, crop, crop]``: the part worth doing where the
    frames were decoded (4x fewer bytes to move than the float result)."""
    x = np.asarray(frames)
    check_frames(x.dtype == np.uint8, x.shape, x.dtype)
    return crop_frames(np.stack([resize_short_side(frame, cfg) for frame in x]), cfg, crops)


def resize_short_side(frame: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One uint8 ``[H, W, 3]`` frame with its short side resized to ``cfg.resize`` (Pillow, bicubic)."""
    h, w = resized_size(frame.shape[0], frame.shape[1], cfg.resize)
    if (h, w) == frame.shape[:2]:
        return frame
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC))


def crop_frames(resized: np.ndarray, cfg: PreprocessConfig, crops: int = 1) -> np.ndarray:
    """Resized uint8 ``[N, h, w, 3]`` -> uint8 ``[crops, N, 3, crop, crop]``."""
    offsets = crop_offsets(resized.shape[1], resized.shape[2], cfg.crop, crops)
    out = np.stack([resized[:, top : top + cfg.crop, left : left + cfg.crop] for top, left in offsets])
    return np.ascontiguousarray(out.transpose(0, 1, 4, 2, 3))


def check_frames(is_uint8: bool, shape: tuple[int, ...], dtype: object) -> None:
    if not is_uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {dtype} {tuple(shape)}")
