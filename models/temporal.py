"""Temporal heads: frame embeddings ``[B, T, D]`` -> video embedding ``[B, D]`` (not normalized).

``mean`` is Text4Vis' TAP; ``transf`` is its T-Trans ``video_header`` with the same
parameter names, so released checkpoints load into it unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from text4vis.models.choices import TemporalHead

HeadKind = TemporalHead  # the name this module's callers know
HEAD_KINDS: tuple[TemporalHead, ...] = tuple(TemporalHead)
POSITIONS = 77  # nn.Embedding(context_length, d) in the reference


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-norm block over time; LayerNorm eps 1e-12 as in the reference head."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-12)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [T, B, D]
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class MeanHead(nn.Module):
    """TAP: the mean over frames."""

    kind: HeadKind = TemporalHead.MEAN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class TransformerHead(nn.Module):
    """T-Trans: position embedding, a transformer over time, residual, mean over frames."""

    kind: HeadKind = TemporalHead.TRANSF

    def __init__(self, embed_dim: int, layers: int = 6, heads: int | None = None) -> None:
        """``heads``: the reference's CLIP TEXT width // 64 (:func:`head_count`); equal to
        ``embed_dim // 64`` for ViT models, not for RN50 (embedding 1024, text 512: 8 heads)."""
        super().__init__()
        heads = heads or max(1, embed_dim // 64)
        if embed_dim % heads:
            raise ValueError(f"{heads} attention heads do not divide the embedding width {embed_dim}")
        self.heads = heads
        self.frame_position_embeddings = nn.Embedding(POSITIONS, embed_dim)
        self.transformer = TemporalTransformer(embed_dim, layers, heads)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        if t > POSITIONS:
            raise ValueError(f"the transf head takes at most {POSITIONS} frames, got {t}")
        positions = torch.arange(t, device=x.device)
        y = x + self.frame_position_embeddings(positions).to(x.dtype).unsqueeze(0)
        y = self.transformer(y.permute(1, 0, 2)).permute(1, 0, 2)  # time-major inside, as CLIP
        return (y.to(x.dtype) + x).mean(dim=1)


def head_count(text_width: int) -> int:
    """T-Trans attention heads as the reference sets them: the CLIP text transformer's width // 64."""
    return max(1, text_width // 64)


def build_temporal_head(kind: str, embed_dim: int, layers: int = 6, heads: int | None = None) -> nn.Module:
    """A fresh head of ``kind`` ('mean' or 'transf') for embeddings of size ``embed_dim``."""
    if kind == "mean":
        return MeanHead()
    if kind == "transf":
        return TransformerHead(embed_dim, layers, heads)
    raise ValueError(f"unknown temporal head {kind!r}; choose from {', '.join(HEAD_KINDS)}")


def _init_weights(module: nn.Module) -> None:
    # the reference initializes Linear and Embedding weights N(0, 0.02), LayerNorm to identity
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
