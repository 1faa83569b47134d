"""The training recipe of the reference code and released configs (docs/method.md), checked against
the rule itself: AdamW betas and weight decay on every parameter, the learned logit scale in the
loss and the checkpoint, no gradient clipping, the augmentation, RandAugment off."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T

from text4vis.models.clip_loader import TINY_ARCH, ClipSource, load_clip
from text4vis.models.temporal import build_temporal_head, head_count
from text4vis.models.training.config import TrainConfig
from text4vis.models.training.data import (
    ReferenceSizedCrop,
    Sample,
    VideoDataset,
    enough_frames,
    read_samples,
    reference_crop_box,
)
from text4vis.models.training.train import _param_groups, epoch_batches
from text4vis.models.video_classifier import VideoClassifier


@pytest.fixture(scope="module")
def model() -> VideoClassifier:
    clip = load_clip(ClipSource(arch=TINY_ARCH, random_init=True, seed=0))
    head = build_temporal_head("transf", clip.embed_dim, heads=head_count(clip.text_width))
    return VideoClassifier(
        clip.model.visual, head, torch.randn(3, clip.embed_dim), logit_scale=float(clip.model.logit_scale.detach())
    )


def test_defaults_are_the_reference_recipe(tmp_path: Path) -> None:
    cfg = TrainConfig(train_list=tmp_path / "t.txt", labels=tmp_path / "l.txt")
    assert cfg.betas == (0.9, 0.999) and cfg.weight_decay == 0.2 and cfg.clip_grad is None
    assert cfg.lr == 5e-5 and cfg.lr_ratio == 0.1 and cfg.epochs == 30 and cfg.warmup_epochs == 5
    assert cfg.batch_size == 256 and cfg.rand_augment is False and cfg.grayscale == 0.2


def test_weight_decay_on_every_parameter_and_logit_scale_at_the_backbone_rate(
    model: VideoClassifier, tmp_path: Path
) -> None:
    cfg = TrainConfig(train_list=tmp_path / "t.txt", labels=tmp_path / "l.txt")
    groups = _param_groups(model, cfg)
    assert all(g["weight_decay"] == 0.2 for g in groups)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.logit_scale)]["lr"] == pytest.approx(5e-6)
    assert all(by_id[id(p)]["lr"] == pytest.approx(5e-6) for p in model.visual.parameters())
    assert all(by_id[id(p)]["lr"] == pytest.approx(5e-5) for p in model.head.parameters())
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_the_training_logits_use_the_learned_scale(model: VideoClassifier) -> None:
    torch.manual_seed(0)
    size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size)
    pixels = torch.randn(2, 1, 4, 3, size, size)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(42.0))
        frames = model.visual(pixels.flatten(0, 2)).view(2, 4, -1)
        video = F.normalize(model.head(frames).float(), dim=-1)
        expected = 42.0 * video @ F.normalize(model.classifier, dim=-1).T  # the reference: logit_scale.exp() * cos
        got = model(pixels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.test_logits(pixels).float(), expected * 100 / 42, rtol=1e-5, atol=1e-5)
    labels = torch.tensor([0, 2])
    loss = F.cross_entropy(model(pixels), labels)
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0  # it trains


def test_augmentation_is_the_reference_one(tmp_path: Path) -> None:
    data = VideoDataset([Sample(tmp_path / "x.mp4", 0)], 8, 224, (0.5,) * 3, (0.5,) * 3, train=True)
    steps = data.augment.transforms
    assert [type(s) for s in steps] == [T.Resize, ReferenceSizedCrop, T.RandomHorizontalFlip, T.RandomGrayscale]
    assert steps[0].size == [256]  # S = 256 for a 224-px model
    assert steps[1].size == 224
    assert steps[3].p == 0.2
    big = VideoDataset([Sample(tmp_path / "x.mp4", 0)], 8, 336, (0.5,) * 3, (0.5,) * 3, train=True)
    assert big.augment.transforms[0].size == [336]  # S = C for 336-px models
    clip = torch.randint(0, 256, (8, 3, 300, 400), dtype=torch.uint8)
    gray = VideoDataset([Sample(tmp_path / "x.mp4", 0)], 8, 224, (0.5,) * 3, (0.5,) * 3, train=True, grayscale=1.0)
    out = gray.augment(clip)
    assert out.shape == (8, 3, 224, 224) and torch.equal(out[:, 0], out[:, 1])  # one draw for the whole clip


def test_half_splits_follow_the_reference_rule() -> None:
    """The zero-shot script's half-class protocol: split ``s`` seeds numpy with ``s``, keeps the first
    half of a permutation of the classes, and classifies those classes' videos among them by the
    softmax of ``100 * cosine`` of the fused video embedding (views averaged before normalization:
    the script's softmax runs over a view axis of size 1)."""
    import numpy as np

    from text4vis.models.training.evaluate import half_class_splits

    rng = np.random.default_rng(0)
    view_embeddings = rng.normal(size=(40, 3, 16))
    text = rng.normal(size=(10, 16))
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    labels = rng.integers(0, 10, size=40)
    fused = view_embeddings.mean(axis=1)
    fused /= np.linalg.norm(fused, axis=-1, keepdims=True)
    expected = []
    for split in range(10):
        np.random.seed(split)
        kept = np.random.permutation(10)[:5]
        rows = np.isin(labels, kept)
        similarity = 100 * fused[rows] @ text[kept].T
        probs = np.exp(similarity - similarity.max(-1, keepdims=True))
        probs = (probs / probs.sum(-1, keepdims=True)).reshape(int(rows.sum()), 1, 5).mean(axis=1)
        expected.append(float((kept[probs.argmax(axis=1)] == labels[rows]).mean()))
    got = half_class_splits(torch.from_numpy(100 * fused @ text.T), torch.from_numpy(labels))
    assert got == pytest.approx(expected)
    assert len(set(expected)) > 1  # the splits differ: the test can tell a wrong seed or half


def _reference_sized_crop_box(width: int, height: int, rnd: random.Random) -> tuple[int, int, int, int] | None:
    """``GroupRandomSizedCrop.__call__`` of the reference (datasets/transforms.py), its draws as written."""
    for _attempt in range(10):
        area = width * height
        target_area = rnd.uniform(0.08, 1.0) * area
        aspect_ratio = rnd.uniform(3.0 / 4, 4.0 / 3)
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if rnd.random() < 0.5:
            w, h = h, w
        if w <= width and h <= height:
            x1 = rnd.randint(0, width - w)
            y1 = rnd.randint(0, height - h)
            return x1, y1, w, h
    return None


def test_random_sized_crop_draws_as_the_reference() -> None:
    """Aspect uniform (not log-uniform) in 3/4-4/3, sides swapped half the time, 10 tries: the same
    boxes as the reference's code for the same draws, on landscape, portrait and tiny frames."""
    boxes = []
    for seed in range(300):
        for width, height in ((341, 256), (256, 455), (30, 20)):
            got = reference_crop_box(width, height, random.Random(seed))
            assert got == _reference_sized_crop_box(width, height, random.Random(seed))
            boxes.append(got)
    shapes = [(w, h) for box in boxes if box is not None for _, _, w, h in [box]]
    assert sum(w > h for w, h in shapes) > 0.3 * len(shapes) and sum(h > w for w, h in shapes) > 0.3 * len(shapes)


def test_reference_crop_falls_back_to_scale_and_random_crop() -> None:
    """No try fits a frame far wider than tall: the short side scaled to the size, a random crop."""
    clip = torch.randint(0, 256, (4, 3, 10, 400), dtype=torch.uint8)
    torch.manual_seed(0)
    out = ReferenceSizedCrop(32)(clip)
    assert out.shape == (4, 3, 32, 32)


def test_three_column_lists_and_short_videos(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``path nframes label`` (the reference's rawframe lists) and ``path label`` both read; videos
    whose stated count is under T frames leave training lists, with a count in the log."""
    listing = tmp_path / "train.txt"
    listing.write_text("a/v1 300 0\nb/v 2 7 1\nc/v3 120 1\nwith space/v4.mp4 2\n")
    samples = read_samples(listing, ["x", "y", "z"], tmp_path)
    assert [(s.path.relative_to(tmp_path).as_posix(), s.frames, s.label) for s in samples] == [
        ("a/v1", 300, 0),
        ("b/v 2", 7, 1),
        ("c/v3", 120, 1),
        ("with space/v4.mp4", None, 2),
    ]
    with caplog.at_level(logging.INFO):
        kept = enough_frames(samples, 8, listing)
    assert [s.frames for s in kept] == [300, 120, None]
    assert "1 of 4 videos have fewer than 8 frames" in caplog.text


def test_epochs_keep_the_last_partial_batch() -> None:
    """drop_last=False: 10 samples in batches of 4 are 3 steps (4, 4, 2); over 2 processes the order
    is padded to a multiple of 2 and each process takes the same number of steps."""
    order = np.arange(10)
    one = epoch_batches(order, 4, 0, 1, 1)
    assert [sum(len(p) for p in step) for step in one] == [4, 4, 2]
    assert sorted(i for step in one for p in step for i in p) == list(range(10))
    ranks = [epoch_batches(np.arange(9), 4, r, 2, 2) for r in (0, 1)]
    assert [len(r) for r in ranks] == [3, 3]
    seen = sorted(i for r in ranks for step in r for p in step for i in p)
    assert seen == [0, *range(9)]  # every sample, and one repeated to even the processes out


@pytest.mark.parametrize("name", ["k400_few_shot", "ucf101_few_shot", "hmdb51_few_shot"])
def test_shipped_few_shot_configs_are_the_references(name: str) -> None:
    """The reference's few-shot configs: 2 shots, the mean head (sim_header None), global batch 64."""
    path = Path(__file__).parents[2] / "models" / "training" / "configs" / f"{name}.yaml"
    cfg = TrainConfig.load(path, {"train_list": Path("t.txt"), "labels": Path("l.txt")})
    assert (cfg.shots, cfg.temporal, cfg.batch_size, cfg.epochs, cfg.warmup_epochs) == (2, "mean", 64, 30, 5)
    assert (cfg.lr, cfg.lr_ratio, cfg.weight_decay) == (5e-5, 0.1, 0.2)


def test_shipped_fine_tuning_config() -> None:
    path = Path(__file__).parents[2] / "models" / "training" / "configs" / "k400_vitb16_f8.yaml"
    cfg = TrainConfig.load(path, {"train_list": Path("t.txt"), "labels": Path("l.txt")})
    assert (cfg.model, cfg.temporal, cfg.batch_size, cfg.frames) == ("ViT-B-16", "transf", 256, 8)
