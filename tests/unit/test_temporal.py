"""T-Trans against an independent computation of the DESIGN.md formulas, on the same weights."""

import math

import pytest
import torch

from models.temporal import MeanHead, TransformerHead, build_temporal_head


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-12) * w + b


def reference_transf(sd: dict[str, torch.Tensor], x: torch.Tensor, layers: int) -> torch.Tensor:
    """x [B, T, d]: + position embedding, 6 residual attention blocks (QuickGELU, LN eps 1e-12),
    + input, mean over frames. Attention written out with matrices, heads = d // 64."""
    b, t, d = x.shape
    heads = d // 64
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


@pytest.mark.parametrize(("dim", "frames"), [(64, 8), (128, 16), (512, 8), (128, 32)])
def test_transf_matches_reference(dim: int, frames: int) -> None:
    torch.manual_seed(0)
    head = trained_like(TransformerHead(dim)).eval()
    x = torch.randn(3, frames, dim)
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    expected = reference_transf(sd, x, layers=6)
    with torch.no_grad():
        got = head(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, x.mean(1), atol=1e-3)  # the transformer did something


def test_transf_layout() -> None:
    head = TransformerHead(512)
    sd = head.state_dict()
    assert sd["frame_position_embeddings.weight"].shape == (77, 512)
    assert sd["transformer.resblocks.5.attn.in_proj_weight"].shape == (1536, 512)
    assert head.transformer.resblocks[0].attn.num_heads == 8
    assert "transformer.resblocks.6.ln_1.weight" not in sd
    assert head.transformer.resblocks[0].ln_1.eps == 1e-12


def test_mean_head() -> None:
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(MeanHead()(x), x.mean(1))
    with pytest.raises(ValueError):
        build_temporal_head("lstm", 16)


def test_transf_rejects_too_many_frames() -> None:
    with pytest.raises(ValueError, match="77"):
        TransformerHead(64)(torch.randn(1, 78, 64))
