"""Classifier matrices ``W [classes, dim]`` with L2-normalized rows. Pure functions.

The text classifier is the Text4Vis default; the random ones are the paper's baselines.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from text4vis.models.prompts import DEFAULT_TEMPLATE, format_prompts
from text4vis.models.text_encoder import TextEncoder


def text_classifier(
    encoder: TextEncoder, labels: Sequence[str], templates: Sequence[str] = (DEFAULT_TEMPLATE,), clean: bool = False
) -> torch.Tensor:
    """``W[c] = normalize(mean_t normalize(text(template_t.format(label_c))))``.

    With one template (the reference's, and the default) this is the normalized embedding of the
    one prompt; several templates average (CLIP's prompt ensemble, our extension). ``clean``:
    labels cleaned up first (opt-in; the reference uses them as written).
    """
    if not labels:
        raise ValueError("no labels")
    if not templates:
        raise ValueError("no templates")
    prompts = [p for label in labels for p in format_prompts(label, templates, clean)]
    return ensemble(encoder.encode(prompts).view(len(labels), len(templates), -1))


def ensemble(prompt_emb: torch.Tensor) -> torch.Tensor:
    """``[C, K, D]`` embeddings of K prompts per class -> ``[C, D]``: normalize each, average, normalize."""
    return F.normalize(F.normalize(prompt_emb.float(), dim=-1).mean(dim=1), dim=-1)


def random_normal_classifier(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Rows drawn from N(0, I), normalized."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)


def random_orthogonal_classifier(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Orthonormal rows from the QR decomposition of a Gaussian matrix (needs classes <= dim)."""
    if num_classes > dim:
        raise ValueError(f"cannot make {num_classes} orthogonal rows in {dim} dimensions")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=g, dtype=torch.float64))
    return q.T.contiguous().float()
