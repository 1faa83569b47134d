"""A tiny video data set: coloured squares moving in a class-specific direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.media import write_video

MOTIONS = {"moving right": (1, 0), "moving down": (0, 1), "moving left": (-1, 0), "moving up": (0, -1)}
COLORS = {
    "moving right": (230, 40, 40),
    "moving down": (40, 200, 40),
    "moving left": (40, 60, 230),
    "moving up": (220, 220, 30),
}


def make_clip(label: str, frames: int, rng: np.random.Generator, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    w, h = size
    dx, dy = MOTIONS[label]
    out = np.full((frames, h, w, 3), rng.integers(0, 60), dtype=np.uint8)
    side = 12
    x0, y0 = rng.integers(side, w - 2 * side), rng.integers(side // 2, h - side - side // 2)
    for t in range(frames):
        x = int(np.clip(x0 + dx * t * 2, 0, w - side))
        y = int(np.clip(y0 + dy * t * 2, 0, h - side))
        out[t, y : y + side, x : x + side] = COLORS[label]
    return out


def make_dataset(root: Path, classes: list[str], per_class: int, frames: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """Write the videos, ``labels.txt`` and ``train.txt`` ('path label' lines); return (list, labels)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for label_index, label in enumerate(classes):
        for i in range(per_class):
            path = write_video(
                root / f"{label.replace(' ', '_')}_{i}.mp4", make_clip(label, frames, rng), codec="mpeg4"
            )
            lines.append(f"{path.name} {label_index}")
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt", root / "labels.txt"
