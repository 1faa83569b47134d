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


def _reference_multi_split_test(vis_embs: torch.Tensor, text_embs: torch.Tensor, true_label: torch.Tensor):  # noqa: ANN202
    """The reference's ``multi_split_test`` and ``compute_accuracy`` (test_zeroshot.py) with its
    ``accuracy`` (utils/utils.py), transcribed line by line (percentages, as it prints them)."""
    import numpy as np

    def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[torch.Tensor]:
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum(0).mul_(100.0 / batch_size) for k in topk]

    def compute_accuracy(vis_emb: torch.Tensor, text_emb: torch.Tensor, label: torch.Tensor) -> tuple:
        n_class = len(text_emb)
        n_samples = len(vis_emb)
        similarity = 100.0 * vis_emb @ text_emb.T
        similarity = similarity.view(n_samples, -1, n_class).softmax(dim=-1)
        similarity = similarity.mean(dim=1, keepdim=False)
        prec = accuracy(similarity, label, topk=(1, 5))
        return prec[0], prec[1]

    true_label = true_label.numpy()
    accuracy_split, accuracy_split_top5 = np.zeros(10), np.zeros(10)
    for split in range(len(accuracy_split)):
        np.random.seed(split)
        sel_classes = np.random.permutation(len(text_embs))[: len(text_embs) // 2]
        sel = [lab in sel_classes for lab in true_label]
        subclasses = np.unique(true_label[sel])
        tl = np.array([int(np.where(lab == subclasses)[0][0]) for lab in true_label[sel]])
        tl = torch.from_numpy(tl)
        acc, acc5 = compute_accuracy(vis_embs[sel], text_embs[subclasses], tl)
        accuracy_split[split] = acc
        accuracy_split_top5[split] = acc5
    return accuracy_split, accuracy_split_top5


def test_half_splits_follow_the_reference_rule() -> None:
    """The zero-shot script's half-class protocol, compared with a transcription of the reference's
    own functions on the same embeddings: split ``s`` seeds numpy with ``s``, draws half of every
    class, keeps the videos of drawn classes and scores them among the drawn classes those videos
    have (``subclasses = np.unique(true_label[sel])``); top-1 and top-5. The evaluated videos
    here lack a third of the classes: scoring against every drawn class (the old rule) differs."""
    import numpy as np

    from text4vis.models.training.evaluate import half_class_splits

    rng = np.random.default_rng(0)
    text = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(30, 16))).float(), dim=-1)
    labels = torch.from_numpy(rng.integers(0, 20, size=200))  # classes 20..29 have no video
    vis = torch.nn.functional.normalize(
        text[labels] + 1.2 * torch.from_numpy(rng.normal(size=(200, 16))).float(), dim=-1
    )
    top1_ref, top5_ref = _reference_multi_split_test(vis, text, labels)
    top1, top5 = half_class_splits((100.0 * vis @ text.T).double(), labels)
    assert [round(100 * a, 3) for a in top1] == [round(float(a), 3) for a in top1_ref]
    assert [round(100 * a, 3) for a in top5] == [round(float(a), 3) for a in top5_ref]
    assert len(set(top1)) > 1 and min(top5) < 1.0  # the splits differ; top-5 is no formality
    # the old rule, every drawn class a candidate, gives other numbers on this list
    old = []
    for split in range(10):
        np.random.seed(split)
        kept = np.random.permutation(30)[:15]
        rows = np.isin(labels.numpy(), kept)
        scores = (vis @ text.T)[torch.from_numpy(rows)][:, torch.from_numpy(kept)]
        old.append(float((torch.from_numpy(kept)[scores.argmax(-1)] == labels[torch.from_numpy(rows)]).double().mean()))
    assert old != top1


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


def test_the_schedule_is_the_reference_s_as_its_train_py_steps_it() -> None:
    """The rate at every iteration of three epochs of 23 micro-batches (two per optimizer step,
    warm-up 1 epoch, two groups as the reference's) equals a transcription of the reference's
    WarmupLR / WarmupCosineAnnealingLR stepped as its train.py does: at the first iteration of
    an epoch and every 10th, with ``epoch + i / len(train_loader)``; the warm-up starts at 0."""
    import math
    import warnings

    from torch.optim.lr_scheduler import LRScheduler

    from text4vis.models.training.schedule import WarmupCosine
    from text4vis.models.training.train import Step, _train_epoch

    class ReferenceWarmupCosine(LRScheduler):  # utils/lr_scheduler.py, defaults as utils/solver.py uses them
        def __init__(self, optimizer: torch.optim.Optimizer, total_epoch: int, warmup_epochs: int) -> None:
            self.total_epoch, self.final_factor = total_epoch, 0
            self.num_groups = len(optimizer.param_groups)
            self.warmup_epochs = (warmup_epochs,) * self.num_groups
            self.warmup_powers, self.warmup_lrs = (1,) * self.num_groups, (0,) * self.num_groups
            super().__init__(optimizer, -1)

        def get_lr(self) -> list[float]:
            curr_lrs = []
            for g in range(self.num_groups):
                if self.last_epoch < self.warmup_epochs[g]:
                    progress = self.last_epoch / self.warmup_epochs[g]
                    factor = progress ** self.warmup_powers[g]
                    lr_gap = self.base_lrs[g] - self.warmup_lrs[g]
                    curr_lrs.append(factor * lr_gap + self.warmup_lrs[g])
                else:
                    warmup_epoch = self.warmup_epochs[g]
                    progress = (self.last_epoch - warmup_epoch) / (self.total_epoch - warmup_epoch)
                    progress = min(progress, 1.0)
                    cosine_progress = (math.cos(math.pi * progress) + 1) / 2
                    factor = cosine_progress * (1 - self.final_factor) + self.final_factor
                    curr_lrs.append(self.base_lrs[g] * factor)
            return curr_lrs

    def groups(net: torch.nn.Module) -> list[dict[str, object]]:
        return [{"params": [net.weight], "lr": 1e-5}, {"params": [net.bias], "lr": 1e-3}]

    epochs, warmup, iterations = 3, 1, 23
    ref_net = torch.nn.Linear(4, 3)
    ref_opt = torch.optim.AdamW(groups(ref_net))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch) is deprecated in torch; the reference calls it so
        reference = ReferenceWarmupCosine(ref_opt, epochs, warmup)
        expected = []
        for epoch in range(epochs):
            for i in range(iterations):
                if (i + 1) == 1 or (i + 1) % 10 == 0:
                    reference.step(epoch + i / iterations)
                expected.append([g["lr"] for g in ref_opt.param_groups])

    net = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(groups(net))
    schedule = WarmupCosine(optimizer, epochs, warmup)
    assert schedule.get_last_lr() == [0.0, 0.0]  # the warm-up starts at lr 0
    seen: list[list[float]] = []
    net.register_forward_hook(lambda *_: seen.append([g["lr"] for g in optimizer.param_groups]))
    plan = [[[0, 1], [2, 3]] for _ in range(iterations // 2)] + [[[0, 1]]]  # 23 micro-batches
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for epoch in range(epochs):
        batches = iter([(torch.randn(2, 4), torch.tensor([0, 2])) for _ in range(iterations)])
        _train_epoch(
            Step(net, optimizer, schedule, scaler, False, None, "cpu", 1, epoch), plan, batches, lambda _: None
        )
    assert len(seen) == len(expected) == epochs * iterations
    flat_seen, flat_expected = [x for row in seen for x in row], [x for row in expected for x in row]
    assert flat_seen == pytest.approx(flat_expected, rel=1e-12, abs=0.0)
    assert len({tuple(x) for x in expected}) > 5  # the rate moves: warm-up and cosine both seen


def test_a_3_column_list_keeps_videos_of_8_frames_whatever_t(tmp_path: Path) -> None:
    """The reference drops from a 3-column training list the videos of fewer than 8 frames, a
    fixed 8 (datasets.py), also at T = 16: a 10-frame video is trained on. (The threshold was T.)"""
    from text4vis.models.training.config import TrainConfig
    from text4vis.models.training.train import training_list

    listing = tmp_path / "train.txt"
    listing.write_text("a 10 0\nb 7 1\nc 300 1\n")
    cfg = TrainConfig(train_list=listing, labels=tmp_path / "l.txt", root=tmp_path, frames=16, random_init=True)
    assert [s.frames for s in training_list(cfg, ["x", "y"])] == [10, 300]
    strict = cfg.model_copy(update={"min_list_frames": 16})
    assert [s.frames for s in training_list(strict, ["x", "y"])] == [300]


def test_the_sized_crop_falls_back_to_a_bilinear_scale() -> None:
    """A frame no try fits (10 x 1000 pixels): the reference's fallback scales the short side with
    the crop's own interpolation, bilinear (it was bicubic here), then crops at random."""
    from text4vis.models.training.data import ReferenceSizedCrop

    torch.manual_seed(0)
    clip = torch.randint(0, 256, (2, 3, 10, 1000), dtype=torch.uint8)
    out = ReferenceSizedCrop(8)(clip)
    assert out.shape == (2, 3, 8, 8)

    def found_in(mode: T.InterpolationMode) -> bool:
        scaled = T.functional.resize(clip, [8], interpolation=mode, antialias=True)
        return any(torch.equal(out, scaled[..., :, x : x + 8]) for x in range(scaled.shape[-1] - 7))

    assert found_in(T.InterpolationMode.BILINEAR) and not found_in(T.InterpolationMode.BICUBIC)


def test_a_flag_naming_the_weights_replaces_the_config_s_and_files_are_checked_first(tmp_path: Path) -> None:
    """``t4v train --config ucf101_few_shot.yaml --clip-checkpoint X`` failed after loading for 15 s
    ("give either a pretrained tag or a CLIP checkpoint file, not both"), and ``--pretrained ""``
    did not unset the config's tag. The flag now wins and the config's other way gives way; a
    missing file is said before anything loads."""
    from text4vis.models.training.config import TrainConfig, parse_args

    config = Path(__file__).parents[2] / "models" / "training" / "configs" / "ucf101_few_shot.yaml"
    listing, labels, weights = tmp_path / "t.txt", tmp_path / "l.txt", tmp_path / "w.pt"
    for f in (listing, labels, weights):
        f.write_text("x")
    base = ["--config", str(config), "--train-list", str(listing), "--labels", str(labels)]
    cfg = parse_args([*base, "--clip-checkpoint", str(weights)])
    assert cfg.clip_checkpoint == weights and cfg.pretrained is None and cfg.shots == 2
    assert parse_args([*base, "--pretrained", ""]).pretrained is None
    assert parse_args(base).pretrained == "openai"  # the config's, with no flag against it
    with pytest.raises(ValueError, match="checkpoint file not found: .*nope.pt"):
        parse_args([*base, "--clip-checkpoint", str(tmp_path / "nope.pt")])
    with pytest.raises(ValueError, match="train_list .* does not exist"):
        TrainConfig.load(config, {"train_list": tmp_path / "none.txt", "labels": labels}).check_files()
