"""T-Trans against an independent computation of the DESIGN.md formulas, on the same weights."""

import pytest
import torch

from tests.checkpoints import reference_transf, trained_like
from text4vis.models.temporal import MeanHead, TransformerHead, build_temporal_head


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


def test_heads_follow_the_clip_text_width_as_the_reference() -> None:
    """RN50: embedding 1024, text width 512 -> 8 heads (not 1024 // 64 = 16); ViT-B-16: 512/512 -> 8."""
    import open_clip

    from text4vis.models.temporal import head_count

    for arch, heads in (("RN50", 8), ("ViT-B-16", 8), ("ViT-L-14", 12)):
        cfg = open_clip.get_model_config(arch)
        head = build_temporal_head("transf", cfg["embed_dim"], heads=head_count(cfg["text_cfg"]["width"]))
        assert head.transformer.resblocks[0].attn.num_heads == heads, arch
    torch.manual_seed(0)
    head = trained_like(TransformerHead(1024, heads=8)).eval()
    x = torch.randn(2, 8, 1024)
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(head(x), reference_transf(sd, x, layers=6, heads=8), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="do not divide"):
        TransformerHead(100, heads=8)
