"""``main(argv)``: fine-tune CLIP's visual encoder (and the temporal head) against a frozen
text classifier. One process, or ``torchrun`` DDP on one or several nodes (gloo on CPU, nccl on
GPU); only rank 0 writes. Run ``python -m text4vis.models.training.train --help`` for every flag.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from text4vis.models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint, released_state
from text4vis.models.clip_loader import load_clip
from text4vis.models.prompts import read_labels
from text4vis.models.temporal import build_temporal_head, head_count
from text4vis.models.training.classifier_init import build_classifier, visual_features
from text4vis.models.training.config import TrainConfig, head_kind, parse_args
from text4vis.models.training.data import Sample, VideoDataset, enough_frames, few_shot, read_samples
from text4vis.models.training.evaluate import evaluate
from text4vis.models.training.plot import plot_metrics
from text4vis.models.training.schedule import WarmupCosine, sets_rate
from text4vis.models.video_classifier import VideoClassifier

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point for ``t4v train`` and ``torchrun -m text4vis.models.training.train``; returns the last metrics."""
    return train(parse_args(argv))


def _distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def training_list(cfg: TrainConfig, classes: list[str]) -> list[Sample]:
    """The training list without the videos a 3-column list says have fewer than
    ``min_list_frames`` frames (the few-shot draw and the LDA initialization draw from it)."""
    return enough_frames(read_samples(cfg.train_list, classes, cfg.root), cfg.min_list_frames, cfg.train_list)


def _param_groups(model: VideoClassifier, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Two groups, as the reference: the CLIP visual encoder and ``logit_scale`` at lr x lr_ratio,
    the rest (temporal head; the classifier when trained) at lr; weight decay on every parameter."""
    groups: dict[bool, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.startswith("visual.") or name == "logit_scale", []).append(p)
    return [
        {
            "params": ps,
            "lr": cfg.lr * (cfg.lr_ratio if backbone else 1.0),
            "weight_decay": cfg.weight_decay,
            "backbone": backbone,
        }
        for backbone, ps in groups.items()
    ]


def repeated_few_shot(full: list[Sample], shots: int, seed: int) -> list[Sample]:
    """The reference's few-shot list: K videos per class, repeated ``len(full) // len(selected)``
    times, so an epoch has the full data's length (and as many steps)."""
    selected = few_shot(full, shots, seed)
    return selected * max(1, len(full) // len(selected))


def epoch_batches(order: np.ndarray, batch_size: int, rank: int, world: int, accumulate: int) -> list[list[list[int]]]:
    """This process's samples of each step of an epoch, split into ``accumulate`` micro-batches.

    Every sample is seen, the last partial batch included (the reference's ``drop_last=False``);
    as its ``DistributedSampler`` does, the order is padded with its first samples to a multiple
    of ``world`` so that every process takes the same number of steps."""
    order = np.concatenate([order, order[: -len(order) % world]]) if len(order) % world else order
    steps = []
    for start in range(0, len(order), batch_size):
        mine = order[start : start + batch_size][rank::world]
        steps.append([part.tolist() for part in np.array_split(mine, accumulate) if len(part)])
    return steps


def _rng_state() -> dict[str, Any]:
    """Tensors, lists and numbers only, so the checkpoint still loads with ``weights_only=True``."""
    numpy_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = numpy_state
    version, inner, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(inner), gauss],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, inner, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(cfg: TrainConfig) -> dict[str, Any]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    rank, world = _distributed(device)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    lead = rank == 0
    if cfg.batch_size % (world * cfg.accumulate):
        raise ValueError(
            f"batch_size {cfg.batch_size} must divide by processes x accumulate = {world * cfg.accumulate}"
        )
    cfg.check_files()  # a missing file or weights named twice: said before anything loads
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    classes = read_labels(cfg.labels)
    clip = load_clip(cfg.clip_source(seed=cfg.seed))
    full = training_list(cfg, classes)
    samples = repeated_few_shot(full, cfg.shots, cfg.seed) if cfg.shots else full
    batch_size = cfg.batch_size
    micro = max(1, batch_size // world // cfg.accumulate)
    steps_per_epoch = -(-len(samples) // batch_size)  # the last, partial batch included
    make = lambda s, train: VideoDataset(  # noqa: E731
        s, cfg.frames, cfg.input_size, clip.mean, clip.std, train, cfg.seed, cfg.rand_augment, grayscale=cfg.grayscale
    )
    train_set = make(samples, True)

    lda_data = None
    if cfg.classifier == "lda":
        lda_loader = DataLoader(make(few_shot(full, cfg.lda_shots, cfg.seed), False), batch_size=micro)
        lda_data = visual_features(clip.model.visual.to(device).eval(), lda_loader, device)
    weights = build_classifier(cfg.classifier, clip, classes, cfg.templates, cfg.seed, lda_data, cfg.other_text_model)
    head = build_temporal_head(head_kind(cfg), clip.embed_dim, heads=head_count(clip.text_width))
    model = VideoClassifier(
        clip.model.visual,
        head,
        weights,
        trainable_classifier=cfg.unfreeze_classifier,
        logit_scale=float(clip.model.logit_scale.detach()),
    )
    model = model.to(device).train()

    optimizer = torch.optim.AdamW(_param_groups(model, cfg), betas=cfg.betas, eps=1e-8)
    scheduler = WarmupCosine(optimizer, cfg.epochs, cfg.warmup_epochs)  # the reference's rule (schedule.py)
    use_amp = cfg.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch = 0
    out = cfg.output
    if cfg.resume is not None:
        start_epoch = _resume(cfg.resume, model, optimizer, scheduler, scaler)
    net: torch.nn.Module = DistributedDataParallel(model) if world > 1 else model
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.model_dump_json(indent=2))

    val_loader = None
    if cfg.val_list is not None:
        val_classes = read_labels(cfg.val_labels) if cfg.val_labels else classes
        val_samples = read_samples(cfg.val_list, val_classes, cfg.root)[rank::world]
        val_loader = DataLoader(make(val_samples, False), batch_size=max(1, micro), num_workers=cfg.workers)
        val_weights = (
            weights if cfg.val_labels is None else build_classifier("text", clip, val_classes, cfg.templates, cfg.seed)
        )

    metrics: dict[str, Any] = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=not lead or not sys.stderr.isatty(),
    )
    with progress:
        for epoch in range(start_epoch, min(cfg.epochs, cfg.stop_after or cfg.epochs)):
            train_set.set_epoch(epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(samples))
            plan = epoch_batches(order, batch_size, rank, world, cfg.accumulate)
            loader = DataLoader(
                train_set, batch_sampler=[part for step in plan for part in step], num_workers=cfg.workers
            )
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, status="")
            net.train()
            t0 = time.perf_counter()
            losses = _train_epoch(
                Step(net, optimizer, scheduler, scaler, use_amp, cfg.clip_grad, device, world, epoch),
                plan,
                iter(loader),
                functools.partial(_advance, progress, task),
            )
            metrics = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * steps_per_epoch,
                "loss": float(np.mean(losses)),
                "step_losses": losses,
                "lr": scheduler.get_last_lr()[0],
                "seconds": time.perf_counter() - t0,
            }
            if val_loader is not None:
                evaluated = model if cfg.val_labels is None else VideoClassifier(model.visual, model.head, val_weights)
                metrics.update(
                    {f"val_{k}": v for k, v in evaluate(evaluated, val_loader, device, len(val_weights)).items()}
                )
            if lead:
                _save(out, model, optimizer, scheduler, scaler, epoch + 1, cfg, metrics)
                with (out / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(metrics) + "\n")
                plot_metrics(out / "metrics.jsonl", out / "metrics.png")
                log.info("epoch %d: loss %.4f", epoch + 1, metrics["loss"])
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def _advance(progress: Progress, task: TaskID, status: str) -> None:
    progress.update(task, advance=1, status=status)


@dataclass
class Step:
    """What one optimization step needs (the DDP-wrapped net when there are several processes)."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    use_amp: bool
    clip_grad: float | None
    device: str
    world: int
    epoch: int = 0


def _train_epoch(
    step: Step,
    plan: list[list[list[int]]],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    report: Callable[[str], None],
) -> list[float]:
    """One epoch: per step, this process's micro-batches (gradients accumulated, all-reduced on
    the last), the loss being this process's mean as in the reference; the global mean loss of each step."""
    losses: list[float] = []
    done, t0 = 0, time.perf_counter()
    iterations = sum(len(parts) for parts in plan)  # the loader's batches this epoch (micro-batches)
    i = 0
    for parts in plan:
        loss_sum = torch.zeros((), dtype=torch.float64)
        mine = sum(len(part) for part in parts)
        for k in range(len(parts)):
            if sets_rate(i):  # the reference sets the rate at an iteration's start, every 10th
                step.scheduler.step(step.epoch + i / iterations)
            i += 1
            pixels, labels = next(batches)
            pixels, labels = pixels.to(step.device), labels.to(step.device)
            ctx: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
            if k < len(parts) - 1 and isinstance(step.net, DistributedDataParallel):
                ctx = step.net.no_sync()  # accumulate locally; all-reduce on the last micro-batch
            with ctx, torch.autocast("cuda", enabled=step.use_amp):
                ce = F.cross_entropy(step.net(pixels).float(), labels, reduction="sum")
                step.scaler.scale(ce / mine).backward()
            loss_sum += ce.detach().double().cpu()
        if step.clip_grad:
            step.scaler.unscale_(step.optimizer)
            torch.nn.utils.clip_grad_norm_(step.net.parameters(), step.clip_grad)
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.optimizer.zero_grad(set_to_none=True)
        if step.world > 1:
            dist.all_reduce(loss_sum)
        losses.append(float(loss_sum) / (mine * step.world))
        done += mine * step.world
        report(
            f"loss {losses[-1]:.4f} lr {step.scheduler.get_last_lr()[0]:.2e} "
            f"{done / (time.perf_counter() - t0):.1f} videos/s"
        )
    return losses


def _save(
    out: Path,
    model: VideoClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    cfg: TrainConfig,
    metrics: dict[str, Any],
) -> None:
    """``last.pt``: the released layout (``epoch``, ``model_state_dict``) plus what resuming needs."""
    state = {
        "epoch": epoch,
        "model_state_dict": released_state(model.visual, model.head, model.logit_scale),
        "classifier": model.classifier.detach().cpu(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
        "config": cfg.model_dump(mode="json"),
        "metrics": {k: v for k, v in metrics.items() if k != "step_losses"},
    }
    tmp = out / "last.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "last.pt")  # atomic: an interrupted save never leaves a broken checkpoint


def _resume(
    path: Path, model: VideoClassifier, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler
) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    head = apply_text4vis_checkpoint(model.visual, read_text4vis_checkpoint(path), getattr(model.head, "kind", None))
    model.head.load_state_dict(head.state_dict())
    with torch.no_grad():
        model.classifier.copy_(state["classifier"])
        model.logit_scale.copy_(state["model_state_dict"]["logit_scale"].reshape(()))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return int(state["epoch"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    main()
