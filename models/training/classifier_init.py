"""The frozen classifier's initializations compared in the paper."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from text4vis.models.classifiers import random_normal_classifier, random_orthogonal_classifier, text_classifier
from text4vis.models.clip_loader import LoadedClip
from text4vis.models.prompts import clean_label
from text4vis.models.text_encoder import TextEncoder


def lda_classifier(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """LDA fitted on visual features (Ledoit-Wolf shrinkage); rows normalized. The least-squares
    solver, because K-shot features (few samples, many dimensions) leave the covariance singular."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    lda.fit(features.double().numpy(), labels.numpy())
    coef = torch.from_numpy(lda.coef_).float()
    if coef.shape[0] != num_classes:  # every class must have been seen
        raise ValueError(f"LDA saw {coef.shape[0]} of {num_classes} classes; give lda_shots videos of each")
    return F.normalize(coef, dim=-1)


def projected_text_classifier(
    encode: Callable[[list[str]], torch.Tensor], labels: Sequence[str], dim: int, seed: int = 0
) -> torch.Tensor:
    """Embeddings from another text encoder mapped to ``dim`` by a fixed random projection."""
    emb = F.normalize(encode([clean_label(x) for x in labels]).float(), dim=-1)
    g = torch.Generator().manual_seed(seed)
    projection = torch.randn(emb.shape[1], dim, generator=g) / emb.shape[1] ** 0.5
    return F.normalize(emb @ projection, dim=-1)


def sentence_transformer(name: str) -> Callable[[list[str]], torch.Tensor]:
    """A sentence-transformers encoder (hub name or local folder); a clear error without it."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RuntimeError("classifier=text-other needs `pip install sentence-transformers`") from None
    try:
        model = SentenceTransformer(name, device="cpu")
    except Exception as exc:  # noqa: BLE001 - the hub fails in many ways
        raise RuntimeError(f"cannot load text model {name!r} ({type(exc).__name__}); give a local folder") from None
    return lambda texts: torch.from_numpy(model.encode(texts, convert_to_numpy=True))


@torch.inference_mode()
def visual_features(
    visual: nn.Module, loader: torch.utils.data.DataLoader, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled frame embeddings and labels of a loader (for LDA)."""
    feats, labels = [], []
    for pixels, label in loader:
        b, v, t = pixels.shape[:3]
        emb = visual(pixels.flatten(0, 2).to(device)).float().view(b, v * t, -1).mean(1)
        feats.append(emb.cpu())
        labels.append(label)
    return torch.cat(feats), torch.cat(labels)


def build_classifier(
    kind: str,
    clip: LoadedClip,
    labels: Sequence[str],
    templates: Sequence[str],
    seed: int,
    lda_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    other_text_model: str | None = None,
) -> torch.Tensor:
    dim = clip.embed_dim
    if kind == "text":
        return text_classifier(TextEncoder(clip), labels, templates)
    if kind == "random":
        return random_normal_classifier(len(labels), dim, seed)
    if kind == "orthogonal":
        return random_orthogonal_classifier(len(labels), dim, seed)
    if kind == "lda":
        assert lda_data is not None
        return lda_classifier(*lda_data, num_classes=len(labels))
    if kind == "text-other":
        assert other_text_model is not None
        return projected_text_classifier(sentence_transformer(other_text_model), labels, dim, seed)
    raise ValueError(f"unknown classifier initialization {kind!r}")
