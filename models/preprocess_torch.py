"""Preprocessing in torch: normalization (where the encoder runs) and the resize of frames already
on a GPU: :func:`pil_bicubic_resize` reproduces Pillow's bicubic ``Image.resize`` bit for bit (its
fixed-point, separable, horizontal-then-vertical algorithm), vectorized over all frames."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from text4vis.models.preprocess import PreprocessConfig, check_frames, crop_offsets, resized_size

_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c
_BICUBIC_SUPPORT = 2.0


def resize_and_crop_on_device(frames: torch.Tensor, cfg: PreprocessConfig, crops: int = 1) -> torch.Tensor:
    """:func:`models.preprocess.resize_and_crop` for a tensor on its own device (a GPU), with the torch
    port of Pillow's resize: uint8 ``[N, H, W, 3]`` -> uint8 ``[crops, N, 3, crop, crop]``."""
    check_frames(frames.dtype == torch.uint8, tuple(frames.shape), frames.dtype)
    x = frames.permute(0, 3, 1, 2)
    h, w = resized_size(x.shape[2], x.shape[3], cfg.resize)
    x = pil_bicubic_resize(x, h, w)
    offsets = crop_offsets(h, w, cfg.crop, crops)
    return torch.stack([x[:, :, top : top + cfg.crop, left : left + cfg.crop] for top, left in offsets])


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
        (*x.shape[:dim], out_size, *x.shape[dim:][1:]),
        1 << (_PRECISION_BITS - 1),
        dtype=torch.int32,
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
