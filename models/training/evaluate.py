"""Top-1, top-5 and mean class accuracy of a VideoClassifier on a loader (views fused).

Evaluation sees exactly the pixels the server answers from (``models/video_input.py``), so its
per-video probabilities (``t4v eval --predictions FILE``) are the server's for the same clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from models.video_classifier import VideoClassifier


@torch.inference_mode()
def evaluate(model: VideoClassifier, loader: torch.utils.data.DataLoader, device: str,
             num_classes: int, probabilities: list[torch.Tensor] | None = None) -> dict[str, float]:
    """The metrics; ``probabilities`` (when given) receives each batch's ``[B, C]`` softmax, in order."""
    model.eval()
    correct1 = torch.zeros(num_classes, dtype=torch.float64)
    correct5 = torch.zeros(num_classes, dtype=torch.float64)
    seen = torch.zeros(num_classes, dtype=torch.float64)
    for pixels, labels in loader:
        logits = model.test_logits(pixels.to(device)).float().cpu()  # [B, C]
        if probabilities is not None:
            probabilities.append(logits.double().softmax(dim=-1))
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
    return {
        "top1": float(correct1.sum() / total),
        "top5": float(correct5.sum() / total),
        "mean_class_acc": float((correct1[present] / seen[present]).mean()) if present.any() else 0.0,
        "videos": int(seen.sum()),
    }


def evaluate_checkpoint(
    checkpoint: Path, list_file: Path, labels_file: Path, *, arch: str | None, pretrained: str | None = None,
    clip_checkpoint: Path | None = None, random_init: bool = False, templates: list[str] | None = None,
    frames: int = 8, clips: int = 1, crops: int = 1, root: Path | None = None, batch_size: int = 8,
    device: str = "cpu", workers: int = 0, predictions: Path | None = None,
) -> dict[str, float]:
    """``t4v eval``: a Text4Vis-layout checkpoint on a list of videos, single or multi-view.
    ``predictions``: also write one JSON line per video (file, label, top-5 with probabilities)."""
    from models.checkpoint import apply_text4vis_checkpoint, read_text4vis_checkpoint
    from models.classifiers import text_classifier
    from models.clip_loader import ClipSource, load_clip
    from models.prompts import DEFAULT_TEMPLATE, read_labels
    from models.temporal import head_count
    from models.text_encoder import TextEncoder
    from models.training.data import VideoDataset, read_samples

    classes = read_labels(labels_file)
    clip = load_clip(ClipSource(arch, pretrained, clip_checkpoint, random_init))
    head = apply_text4vis_checkpoint(clip.model.visual, read_text4vis_checkpoint(checkpoint),
                                     heads=head_count(clip.text_width))
    weights = text_classifier(TextEncoder(clip), classes, templates or [DEFAULT_TEMPLATE])
    model = VideoClassifier(clip.model.visual, head, weights).to(device)
    samples = read_samples(list_file, classes, root)
    data = VideoDataset(samples, frames, clip.image_size, clip.mean, clip.std, train=False, clips=clips, crops=crops)
    probs: list[torch.Tensor] | None = [] if predictions is not None else None
    metrics = evaluate(model, torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers), device,
                       len(classes), probs)
    if predictions is not None and probs is not None:
        with predictions.open("w") as out:
            for sample, p in zip(samples, torch.cat(probs), strict=True):
                top = p.topk(min(5, len(classes)))
                out.write(json.dumps({
                    "file": str(sample.path), "label": classes[sample.label],
                    "predictions": [{"label": classes[i], "probability": float(v)}
                                    for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
                }) + "\n")
    return metrics
