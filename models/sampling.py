"""Which frames and which crops: the method's pure arithmetic, shared by serving and training."""

from __future__ import annotations

import numpy as np

from text4vis.models.errors import InputError

MAX_FRAMES_PER_CLIP = 64  # frames per clip the method's sampling is used with (8, 16, 32 in the paper)


def sample_indices(n_frames: int, num_frames: int = 8, clips: int = 1) -> np.ndarray:
    """Frame indices ``[clips, num_frames]`` as the reference test loader picks them.

    ``tick = n_frames / T``; clip starts ``linspace(0, tick - 1, clips)`` as int;
    index ``int(start + tick * x) % n_frames`` for ``x = 0..T-1``. With one clip this is
    ``int(tick * x)``. Fewer frames than ``T`` repeat frames.
    """
    if n_frames < 1:
        raise InputError("a video needs at least one frame")
    if num_frames < 1 or clips < 1:
        raise ValueError("num_frames and clips must be positive")
    tick = n_frames / float(num_frames)
    # cast toward zero as the reference's np.linspace(..., dtype=int) did under NumPy 1.x
    # (NumPy 2 floors instead; the two differ only for videos shorter than T frames)
    starts = np.linspace(0, tick - 1, num=clips).astype(int)
    return np.array(
        [[int(start + tick * x) % n_frames for x in range(num_frames)] for start in starts.tolist()],
        dtype=np.int64,
    )


def train_indices(n_frames: int, num_frames: int, rng: np.random.Generator) -> list[int]:
    """TSN sampling for training: T equal segments, one frame at a random offset in each."""
    if n_frames < 1:
        raise InputError("a video needs at least one frame")
    segment = n_frames / num_frames
    return [min(int(segment * i + rng.uniform(0, segment)), n_frames - 1) for i in range(num_frames)]


def fast_indices(n_frames: int, num_frames: int, keyframes: list[int] | None) -> list[int]:
    """``sampling=fast``: one frame per TSN segment (the method trains on a random frame inside
    each of T equal segments, so any frame of segment k is one it has seen there), chosen to be
    cheap to decode: the segment's first keyframe when it holds one, else its first frame (the
    fewest frames to decode from the keyframe before it). T distinct frames, in order, each inside
    its segment; without keyframes known, the segments' first frames. Shorter videos than T frames
    take the test-time indices (frames repeat)."""
    if n_frames < num_frames:
        return sample_indices(n_frames, num_frames).reshape(-1).tolist()
    keys = sorted(set(keyframes or []))
    chosen = []
    for k in range(num_frames):
        start, end = (n_frames * k) // num_frames, (n_frames * (k + 1)) // num_frames  # [start, end)
        inside = [key for key in keys if start <= key < end]
        chosen.append(inside[0] if inside else start)
    return chosen


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's ``Resize(short)`` output size: the long side is truncated, not rounded."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def crop_offsets(height: int, width: int, crop: int, crops: int = 1) -> list[tuple[int, int]]:
    """``(top, left)`` of the crops: the center one (torchvision's rounding), or three.

    Three crops as the reference's ``GroupFullResSample``, whatever the orientation: with
    ``w_step = (W - C) // 4`` and ``h_step = (H - C) // 4``, (left, top) offsets ``(0, 2 h_step)``,
    ``(4 w_step, 2 h_step)``, ``(2 w_step, 2 h_step)``: left, right, center, along the width
    (DESIGN.md; a portrait frame is cropped across its short side too).
    """
    if height < crop or width < crop:
        raise ValueError(f"frame {width}x{height} is smaller than the {crop} crop")
    if crops == 1:
        return [(int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0)))]
    if crops != 3:
        raise ValueError("crops must be 1 or 3")
    h_step, w_step = (height - crop) // 4, (width - crop) // 4
    return [(2 * h_step, 0), (2 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)]
