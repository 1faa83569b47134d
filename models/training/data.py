"""Training and evaluation data: list files or class folders, TSN sampling, augmentation.

Every random choice of sample ``i`` in epoch ``e`` comes from a generator seeded with
``(seed, e, i)``: the data a process sees does not depend on how many processes there are, on
DataLoader workers, or on where a run was interrupted (resume and DDP tests rely on it).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import Dataset

from text4vis.models.media import open_media
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.preprocess_torch import normalize
from text4vis.models.prompts import clean_label
from text4vis.models.sampling import train_indices
from text4vis.models.video_input import sample_clip, views

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif"}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    frames: int | None = None  # the frame count a 3-column list states


def read_samples(source: Path, classes: list[str], root: Path | None = None) -> list[Sample]:
    """``path label`` or ``path nframes label`` lines (the reference's two list forms; label: an index
    into ``classes``), or one sub-folder per class."""
    if source.is_dir():
        index = {clean_label(name): i for i, name in enumerate(classes)}
        samples = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            label = index.get(clean_label(folder.name))
            if label is None:
                raise ValueError(f"folder {folder.name!r} is not one of the {len(classes)} classes")
            samples += [Sample(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
        return samples
    samples = []
    for n, line in enumerate(source.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rsplit(maxsplit=2)
        frames: int | None = None
        try:
            if len(fields) == 3 and fields[1].isdigit() and fields[2].lstrip("-").isdigit():
                path_text, frames, label = fields[0], int(fields[1]), int(fields[2])
            else:
                path_text, label_text = line.rsplit(maxsplit=1)
                label = int(label_text)
        except ValueError:
            raise ValueError(f"{source}:{n}: expected 'path label' or 'path nframes label', got {line!r}") from None
        if not 0 <= label < len(classes):
            raise ValueError(f"{source}:{n}: label {label} outside 0..{len(classes) - 1}")
        path = Path(path_text)
        samples.append(Sample(root / path if root and not path.is_absolute() else path, label, frames))
    return samples


def enough_frames(samples: list[Sample], frames: int, source: Path | str) -> list[Sample]:
    """Training lists without the videos whose stated frame count is under ``frames``: the
    reference filters its 3-column training lists so, with a fixed 8 whatever the clip's T
    (``datasets.py``: ``int(item[1]) >= 8``; ``min_list_frames``); a 2-column list states no
    count and keeps all."""
    kept = [s for s in samples if s.frames is None or s.frames >= frames]
    if len(kept) < len(samples):
        log.info(
            "%s: %d of %d videos have fewer than %d frames; training without them",
            source,
            len(samples) - len(kept),
            len(samples),
            frames,
        )
    return kept


def reference_crop_box(width: int, height: int, draw: random.Random) -> tuple[int, int, int, int] | None:
    """The reference's random-sized crop (``GroupRandomSizedCrop``): up to 10 tries of an area
    uniform in 0.08-1 of the frame and an aspect ratio uniform in 3/4-4/3, width and height swapped
    with p=0.5; ``(x, y, w, h)``, or None when no try fits (the caller falls back)."""
    for _ in range(10):
        target_area = draw.uniform(0.08, 1.0) * width * height
        aspect_ratio = draw.uniform(3.0 / 4, 4.0 / 3)
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if draw.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            return draw.randint(0, width - w), draw.randint(0, height - h), w, h
    return None


class ReferenceSizedCrop(T.Transform):
    """A clip ``[T, 3, H, W]`` cropped by :func:`reference_crop_box` and resized to ``size`` square
    (bilinear, as the reference's PIL resize); when no try fits, the short side scaled to ``size``
    (bilinear too) and a random ``size`` crop (the reference's fallback). One draw for the whole clip."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, clip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        draw = random.Random(int(torch.randint(2**31, ())))  # tied to torch's seed, like torchvision's draws
        height, width = clip.shape[-2:]
        box = reference_crop_box(width, height, draw)
        if box is not None:
            x, y, w, h = box
            return T.functional.resize(
                clip[..., y : y + h, x : x + w],
                [self.size, self.size],
                interpolation=T.InterpolationMode.BILINEAR,
                antialias=True,
            )
        # the fallback's GroupScale is given the crop's own interpolation: bilinear
        scaled = T.functional.resize(clip, [self.size], interpolation=T.InterpolationMode.BILINEAR, antialias=True)
        height, width = scaled.shape[-2:]
        x, y = draw.randint(0, width - self.size), draw.randint(0, height - self.size)
        return scaled[..., y : y + self.size, x : x + self.size]


def few_shot(samples: list[Sample], shots: int, seed: int) -> list[Sample]:
    """K samples per class, chosen with ``seed`` (all of a class when it has fewer)."""
    rng = np.random.default_rng(seed)
    chosen: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        picks = rng.choice(len(members), size=min(shots, len(members)), replace=False)
        chosen += [members[i] for i in sorted(picks)]
    return chosen


def read_video(path: Path, choose: Callable[[int], list[int]]) -> np.ndarray:
    """The frames ``choose(frame count)`` picks, uint8 ``[N, H, W, 3]``, read by the server's reader
    (``models/media/``: decord or PyAV, upright, each distinct frame decoded once)."""
    with open_media(path) as media:
        indices = choose(media.info.num_frames)
        unique, inverse = np.unique(indices, return_inverse=True)
        return media.read(unique.tolist())[inverse]


class VideoDataset(Dataset):
    """Train (the reference's augmentation, one draw per clip, all frames alike): TSN frames, the
    short side scaled to S (256 for 224-px models, else the input size), a random-sized crop (area
    0.08-1, aspect uniform in 3/4-4/3, sides swapped with p=0.5) to the input size, a horizontal
    flip, grayscale with p=``grayscale``; RandAugment only when asked.
    Eval: exactly the pixels the server feeds the model (``models/video_input.py``): the test-time
    frames of ``clips`` views, short side to 256/224 of the input as Pillow resizes, ``crops`` crops."""

    def __init__(
        self,
        samples: list[Sample],
        frames: int,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        seed: int = 0,
        rand_augment: bool = False,
        clips: int = 1,
        crops: int = 1,
        grayscale: float = 0.2,
    ) -> None:
        self.samples = samples
        self.frames = frames
        self.input_size = input_size
        # eval: the server's text4vis preprocessing; both: its normalization
        self.preprocess = PreprocessConfig.for_mode("text4vis", input_size, mean, std)  # type: ignore[arg-type]
        self.train = train
        self.seed = seed
        self.clips, self.crops = clips, crops
        self.epoch = 0
        steps: list[T.Transform] = [
            T.Resize(self.preprocess.resize, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            ReferenceSizedCrop(input_size),
            T.RandomHorizontalFlip(),
            T.RandomGrayscale(p=grayscale),
        ]
        if rand_augment:
            steps.append(T.RandAugment(num_ops=2, magnitude=9))
        self.augment = T.Compose(steps)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.train:
            raw = read_video(sample.path, lambda n: train_indices(n, self.frames, rng))
            clip = torch.from_numpy(raw).permute(0, 3, 1, 2)  # [T, 3, H, W]
            torch.manual_seed(int(rng.integers(2**31)))  # torchvision's draws, tied to (seed, epoch, i)
            pixels = self.augment(clip).unsqueeze(0)  # one view
        else:
            pixels = torch.from_numpy(
                views(sample_clip(sample.path, self.preprocess, self.frames, self.clips, self.crops))
            )
        return normalize(pixels, self.preprocess), sample.label
