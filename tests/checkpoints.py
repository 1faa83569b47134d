"""Test support: Text4Vis checkpoints as released, trained-looking heads, and the T-Trans head
written out as matrices (the independent computation the tests compare against)."""

from __future__ import annotations

import math

import torch

from text4vis.models.checkpoint import released_state as _released_state


def prefixed_state(visual: torch.nn.Module, head: torch.nn.Module, prefix: str = "module.") -> dict:
    """A released checkpoint's ``model_state_dict``, under the DDP ``module.`` prefix they often carry."""
    return {f"{prefix}{k}": v.clone() for k, v in _released_state(visual, head).items()}


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-12) * w + b


def reference_transf(
    sd: dict[str, torch.Tensor], x: torch.Tensor, layers: int, heads: int | None = None
) -> torch.Tensor:
    """x [B, T, d]: + position embedding, 6 residual attention blocks (QuickGELU, LN eps 1e-12),
    + input, mean over frames. Attention written out with matrices; ``heads``: the CLIP text
    width // 64 (DESIGN.md), d // 64 when not given (ViT models, where the two agree)."""
    b, t, d = x.shape
    heads = heads or d // 64
    hd = d // heads
    y = x + sd["frame_position_embeddings.weight"][:t]
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = _layer_norm(y, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = (z.view(b, t, heads, hd).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, t, d)
        y = y + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = _layer_norm(y, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        y = y + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return (y + x).mean(dim=1)


def trained_like(head: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial weights everywhere (the default init zeroes biases and keeps LayerNorm identity)."""
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return head
