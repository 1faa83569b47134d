"""Decoded-frame helpers shared by serving (models/video_input.py) and training."""

from __future__ import annotations

import numpy as np


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A frame ``[H, W, 3]`` turned by its display rotation (degrees counter-clockwise, as PyAV's
    ``VideoFrame.rotation`` reads it: how phones store portrait video), as decord and FFmpeg's
    players show it."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
