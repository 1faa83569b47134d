"""Top-1, top-5 and mean class accuracy of a VideoClassifier on a loader (views fused), and the
zero-shot protocol of the reference: full-class accuracy plus the mean and std of top-1 and top-5
over 10 random half-class splits (``np.random.seed(split)``, a permutation of the classes, the
first half, scored among those of them the evaluated videos have).

Evaluation sees exactly the pixels the server answers from (``models/video_input.py``), so its
per-video probabilities (``t4v eval --predictions FILE``) are the server's for the same clip.
Views are fused as the reference's test.py and zero-shot test script both fuse them, and as the
server does: their video embeddings are averaged before normalization (the zero-shot script's
softmax runs over a view axis of size 1, so it changes nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from text4vis.models.clip_loader import ClipSource
from text4vis.models.video_classifier import VideoClassifier


def half_class_splits(logits: torch.Tensor, labels: torch.Tensor, splits: int = 10) -> tuple[list[float], list[float]]:
    """Top-1 and top-5 accuracy on each of ``splits`` random halves of the classes, the rule of the
    reference's ``multi_split_test`` (test_zeroshot.py): split ``s`` seeds numpy's global generator
    with ``s`` and draws the first half of a permutation of every class; the videos whose label
    was drawn are kept, and they are classified among the drawn classes that have a kept video
    (``np.unique`` of their labels: a drawn class no evaluated video belongs to is no candidate),
    in that sorted order (which decides ties, as there). A split that keeps no video is skipped."""
    num_classes = logits.shape[-1]
    truth = labels.numpy()
    top1, top5 = [], []
    for split in range(splits):
        np.random.seed(split)
        drawn = np.random.permutation(num_classes)[: num_classes // 2]
        rows = np.isin(truth, drawn)
        if not rows.any():
            continue
        subclasses = np.unique(truth[rows])
        target = torch.from_numpy(np.searchsorted(subclasses, truth[rows]))
        scores = logits[torch.from_numpy(rows)][:, torch.from_numpy(subclasses)]
        top = scores.topk(min(5, len(subclasses)), dim=-1).indices
        top1.append(float((top[:, 0] == target).double().mean()))
        top5.append(float((top == target[:, None]).any(dim=-1).double().mean()))
    return top1, top5


@torch.inference_mode()
def evaluate(
    model: VideoClassifier,
    loader: torch.utils.data.DataLoader,
    device: str,
    num_classes: int,
    probabilities: list[torch.Tensor] | None = None,
    half_splits: int = 0,
) -> dict[str, Any]:
    """The metrics; ``probabilities`` (when given) receives each batch's ``[B, C]`` softmax, in order.
    ``half_splits``: also the zero-shot half-class splits' accuracies, mean and std."""
    model.eval()
    correct1 = torch.zeros(num_classes, dtype=torch.float64)
    correct5 = torch.zeros(num_classes, dtype=torch.float64)
    seen = torch.zeros(num_classes, dtype=torch.float64)
    kept_logits: list[torch.Tensor] = []
    kept_labels: list[torch.Tensor] = []
    for pixels, labels in loader:
        logits = model.test_logits(pixels.to(device)).double().cpu()  # [B, C], views fused
        if half_splits:
            kept_logits.append(logits)
            kept_labels.append(labels)
        if probabilities is not None:
            probabilities.append(logits.softmax(dim=-1))
        top = logits.topk(min(5, num_classes), dim=-1).indices
        hit1 = top[:, 0] == labels
        hit5 = (top == labels[:, None]).any(dim=-1)
        seen.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        correct1.index_add_(0, labels, hit1.double())
        correct5.index_add_(0, labels, hit5.double())
    if dist.is_available() and dist.is_initialized():
        for t in (correct1, correct5, seen):
            dist.all_reduce(t)
    present = seen > 0
    total = seen.sum().clamp(min=1)
    metrics: dict[str, Any] = {
        "top1": float(correct1.sum() / total),
        "top5": float(correct5.sum() / total),
        "mean_class_acc": float((correct1[present] / seen[present]).mean()) if present.any() else 0.0,
        "videos": int(seen.sum()),
    }
    if half_splits and kept_logits:
        top1, top5 = half_class_splits(torch.cat(kept_logits), torch.cat(kept_labels), half_splits)
        metrics.update(
            {
                "half_splits_top1": top1,
                "half_splits_mean": float(np.mean(top1)),
                "half_splits_std": float(np.std(top1)),
                "half_splits_top5": top5,
                "half_splits_top5_mean": float(np.mean(top5)),
                "half_splits_top5_std": float(np.std(top5)),
            }
        )
    return metrics


def evaluate_checkpoint(
    checkpoint: Path,
    splits: list[tuple[Path, Path]],
    *,
    clip_source: ClipSource,
    templates: list[str] | None = None,
    frames: int = 8,
    clips: int = 1,
    crops: int = 1,
    root: Path | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    workers: int = 0,
    predictions: Path | None = None,
    half_splits: int = 0,
) -> dict[str, Any]:
    """``t4v eval``: a Text4Vis-layout checkpoint on ``(list, labels)`` pairs, single or multi-view.
    One pair: its metrics. Several (the three Kinetics-600 zero-shot splits): each split's metrics
    under ``splits`` and the mean and std of top-1 and top-5 over them, as the paper reports.
    ``predictions``: also write one JSON line per video (file, label, top-5 with probabilities; the
    split's number with several); ``half_splits``: the zero-shot protocol's half-class splits too."""
    from text4vis.models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint
    from text4vis.models.classifiers import text_classifier
    from text4vis.models.clip_loader import load_clip
    from text4vis.models.prompts import DEFAULT_TEMPLATE, read_labels
    from text4vis.models.temporal import head_count
    from text4vis.models.text_encoder import TextEncoder
    from text4vis.models.training.data import VideoDataset, read_samples

    clip = load_clip(clip_source)
    head = apply_text4vis_checkpoint(
        clip.model.visual, read_text4vis_checkpoint(checkpoint), heads=head_count(clip.text_width)
    )
    text = TextEncoder(clip)
    results = []
    out = predictions.open("w") if predictions is not None else None
    try:
        for number, (list_file, labels_file) in enumerate(splits, 1):
            classes = read_labels(labels_file)
            weights = text_classifier(text, classes, templates or [DEFAULT_TEMPLATE])
            model = VideoClassifier(clip.model.visual, head, weights).to(device)
            samples = read_samples(list_file, classes, root)
            data = VideoDataset(
                samples, frames, clip.image_size, clip.mean, clip.std, train=False, clips=clips, crops=crops
            )
            probs: list[torch.Tensor] | None = [] if out is not None else None
            loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
            results.append(evaluate(model, loader, device, len(classes), probs, half_splits))
            if out is not None and probs is not None:
                for sample, p in zip(samples, torch.cat(probs), strict=True):
                    top = p.topk(min(5, len(classes)))
                    line: dict[str, Any] = {"file": str(sample.path), "label": classes[sample.label]}
                    if len(splits) > 1:
                        line["split"] = number
                    line["predictions"] = [
                        {"label": classes[i], "probability": float(v)}
                        for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                    ]
                    out.write(json.dumps(line) + "\n")
    finally:
        if out is not None:
            out.close()
    if len(results) == 1:
        return results[0]
    summary: dict[str, Any] = {"splits": results}
    for metric in ("top1", "top5"):
        values = [r[metric] for r in results]
        summary.update({f"{metric}_mean": float(np.mean(values)), f"{metric}_std": float(np.std(values))})
    return summary
