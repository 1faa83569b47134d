"""Frame preprocessing: resize the short side, crop, normalize.

A served video gets exactly the pixels the reference PIL pipelines feed their models: on the CPU,
Pillow itself resizes (bicubic, ~12x cheaper than a torch resize on a 1080p frame: bench/decode.py);
frames already on a GPU are resized there by :func:`pil_bicubic_resize`, a torch port of Pillow's
fixed-point, separable algorithm that gives the same pixels (tests/unit/test_preprocess.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from models.sampling import crop_offsets as crop_offsets  # re-exported: the crops are part of preprocessing
from models.sampling import resized_size as resized_size

_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c
_BICUBIC_SUPPORT = 2.0


class PreprocessMode(StrEnum):
    CLIP = "clip"  # CLIP's own transform: short side to the input size, center crop
    TEXT4VIS = "text4vis"  # fine-tuned checkpoints: short side to 256 (for 224), center crop


@dataclass(frozen=True)
class PreprocessConfig:
    resize: int  # short side after resizing
    crop: int  # square crop size = the model's input size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_mode(
        cls, mode: PreprocessMode | str, image_size: int,
        mean: tuple[float, float, float], std: tuple[float, float, float],
    ) -> PreprocessConfig:
        mode = PreprocessMode(mode)
        resize = image_size if mode is PreprocessMode.CLIP else image_size * 256 // 224
        return cls(resize=resize, crop=image_size, mean=mean, std=std)


def resize_and_crop(frames: np.ndarray | torch.Tensor, cfg: PreprocessConfig, crops: int = 1) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> uint8 ``[crops, N, 3, crop, crop]``: the part worth doing where the
    frames were decoded (4x fewer bytes to move than the float result). Frames on a GPU stay there."""
    if isinstance(frames, torch.Tensor) and frames.device.type != "cpu":
        return _resize_and_crop_torch(frames, cfg, crops)
    x = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    _check_frames(x.dtype == np.uint8, x.shape, x.dtype)
    h, w = resized_size(x.shape[1], x.shape[2], cfg.resize)
    offsets = crop_offsets(h, w, cfg.crop, crops)
    out = np.empty((crops, x.shape[0], cfg.crop, cfg.crop, 3), dtype=np.uint8)
    for i, frame in enumerate(x):
        if (h, w) != frame.shape[:2]:
            frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC))
        for c, (top, left) in enumerate(offsets):
            out[c, i] = frame[top : top + cfg.crop, left : left + cfg.crop]
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3).contiguous()


def _resize_and_crop_torch(frames: torch.Tensor, cfg: PreprocessConfig, crops: int = 1) -> torch.Tensor:
    """:func:`resize_and_crop` on the frames' own device, with the torch port of Pillow's resize."""
    _check_frames(frames.dtype == torch.uint8, tuple(frames.shape), frames.dtype)
    x = frames.permute(0, 3, 1, 2)
    h, w = resized_size(x.shape[2], x.shape[3], cfg.resize)
    x = pil_bicubic_resize(x, h, w)
    offsets = crop_offsets(h, w, cfg.crop, crops)
    return torch.stack([x[:, :, top : top + cfg.crop, left : left + cfg.crop] for top, left in offsets])


def _check_frames(is_uint8: bool, shape: tuple[int, ...], dtype: object) -> None:
    if not is_uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {dtype} {tuple(shape)}")


def normalize(pixels: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32, scaled to [0, 1] then normalized with the CLIP mean/std."""
    out = pixels.float().div_(255.0)
    shape = (3, 1, 1)
    mean = torch.tensor(cfg.mean, device=out.device).view(shape)
    std = torch.tensor(cfg.std, device=out.device).view(shape)
    return out.sub_(mean).div_(std)


def pil_bicubic_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> ``[N, C, height, width]``, equal to Pillow's BICUBIC resize."""
    if (height, width) == tuple(x.shape[-2:]):
        return x
    # both passes gather whole rows (dim -2), which is far faster than gathering columns
    if width != x.shape[-1]:
        x = _resample(x.transpose(-1, -2).to(torch.int32).contiguous(), width, dim=-2).transpose(-1, -2)
    if height != x.shape[-2]:
        x = _resample(x.to(torch.int32).contiguous(), height, dim=-2)
    return x.to(torch.uint8)


def _resample(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One pass along ``dim``; Pillow rounds to uint8 between the two passes, and so do we."""
    index, weight = _pil_coefficients(x.shape[dim], out_size)
    shape = [1] * x.ndim
    shape[dim] = out_size
    acc = torch.full(
        (*x.shape[:dim], out_size, *x.shape[dim:][1:]), 1 << (_PRECISION_BITS - 1), dtype=torch.int32,
        device=x.device,
    )
    for k in range(index.shape[1]):  # a handful of taps; int32 as in Pillow, which cannot overflow here
        taps = torch.index_select(x, dim, torch.from_numpy(index[:, k]).to(x.device))
        acc.addcmul_(taps, torch.from_numpy(weight[:, k]).to(x.device).view(shape))
    return (acc >> _PRECISION_BITS).clamp_(0, 255)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
        np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )


@lru_cache(maxsize=64)
def _pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices and fixed-point weights ``[out_size, taps]`` as Pillow's ``precompute_coeffs``."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _BICUBIC_SUPPORT * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, taps), dtype=np.int64)
    weight = np.zeros((out_size, taps), dtype=np.int32)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = _bicubic((np.arange(xmax) + xmin - center + 0.5) / filterscale)
        total = w.sum()
        if total != 0.0:
            w = w / total
        fixed = np.trunc(w * (1 << _PRECISION_BITS) + np.where(w < 0, -0.5, 0.5)).astype(np.int32)
        index[xx, :xmax] = np.arange(xmin, xmin + xmax)
        weight[xx, :xmax] = fixed
    return index, weight
