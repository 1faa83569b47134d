"""Test-time frame sampling of Text4Vis (single view and ``clips`` temporal views)."""

from __future__ import annotations

import numpy as np


def sample_indices(n_frames: int, num_frames: int = 8, clips: int = 1) -> np.ndarray:
    """Frame indices ``[clips, num_frames]`` as the reference test loader picks them.

    ``tick = n_frames / T``; clip starts ``linspace(0, tick - 1, clips)`` as int;
    index ``int(start + tick * x) % n_frames`` for ``x = 0..T-1``. With one clip this is
    ``int(tick * x)``. Fewer frames than ``T`` repeat frames.
    """
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
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


def parse_views(views: str) -> tuple[int, int]:
    """``"4x3"`` -> ``(clips=4, crops=3)``. Crops are 1 (center) or 3 (three along the long side)."""
    try:
        clips_text, crops_text = views.lower().split("x")
        clips, crops = int(clips_text), int(crops_text)
    except ValueError:
        raise ValueError(f"views must look like CLIPSxCROPS, e.g. 1x1 or 4x3; got {views!r}") from None
    if not 1 <= clips <= 16 or crops not in (1, 3):
        raise ValueError(f"views {views!r}: clips must be 1..16 and crops 1 or 3")
    return clips, crops
