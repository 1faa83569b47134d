"""Checkpoints in the layout released with Text4Vis: import, layout, damage reports."""

import json
from pathlib import Path

import open_clip
import pytest
import torch

from tests.checkpoints import prefixed_state
from tests.conftest import shared_path
from text4vis.models.checkpoint import (
    apply_text4vis_checkpoint,
    read_text4vis_checkpoint,
    released_state,
    save_text4vis_checkpoint,
)
from text4vis.models.clip_loader import TINY_ARCH, LoadedClip
from text4vis.models.errors import CheckpointMismatchError, ModelLoadError
from text4vis.models.temporal import TransformerHead


@pytest.fixture
def tiny_text4vis(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(7)
    visual = open_clip.create_model(TINY_ARCH).visual
    head = TransformerHead(64)
    path = tmp_path / "t4v.pt"
    torch.save({"epoch": 29, "model_state_dict": prefixed_state(visual, head)}, path)
    return path, visual, head


def test_our_layout_is_the_released_layout() -> None:
    """ViT-B/16 visual + our transf head have exactly the released key names and shapes."""
    layout = json.loads(shared_path("text4vis_vitb16_transf_layout.json").read_text())["keys"]
    with torch.device("meta"):  # shapes only, no memory
        visual = open_clip.create_model("ViT-B-16", device="meta").visual
        head = TransformerHead(512)
    ours = {k: list(v.shape) for k, v in released_state(visual, head).items()}
    assert ours == layout


def test_reads_and_applies(tiny_text4vis: tuple[Path, torch.nn.Module, torch.nn.Module], tiny_clip: LoadedClip) -> None:
    path, visual, head = tiny_text4vis
    ckpt = read_text4vis_checkpoint(path)
    assert (ckpt.head_kind, ckpt.head_layers, ckpt.epoch) == ("transf", 6, 29)
    target = open_clip.create_model(TINY_ARCH).visual
    loaded_head = apply_text4vis_checkpoint(target, ckpt)
    for k, v in visual.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v, rtol=0, atol=0)
    for k, v in head.state_dict().items():
        torch.testing.assert_close(loaded_head.state_dict()[k], v, rtol=0, atol=0)
    assert apply_text4vis_checkpoint(target, ckpt, head_kind="mean").kind == "mean"


def test_round_trip_through_our_writer(tmp_path: Path) -> None:
    visual = open_clip.create_model(TINY_ARCH).visual
    head = TransformerHead(64)
    path = tmp_path / "ours.pt"
    save_text4vis_checkpoint(path, visual, head, epoch=3)
    ckpt = read_text4vis_checkpoint(path)
    assert ckpt.epoch == 3 and ckpt.head_kind == "transf"
    assert set(ckpt.visual) == set(visual.state_dict())


def _damage(path: Path, edit) -> Path:  # noqa: ANN001
    obj = torch.load(path, weights_only=True)
    edit(obj["model_state_dict"])
    out = path.with_name("damaged.pt")
    torch.save(obj, out)
    return out


def test_missing_key_is_named(tiny_text4vis: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    path = _damage(tiny_text4vis[0], lambda sd: sd.pop("module.visual.ln_post.weight"))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: ln_post\.weight"):
        apply_text4vis_checkpoint(open_clip.create_model(TINY_ARCH).visual, read_text4vis_checkpoint(path))


def test_shape_mismatch_is_named(tiny_text4vis: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    key = "module.fusion_model.transformer.resblocks.2.mlp.c_fc.bias"
    path = _damage(tiny_text4vis[0], lambda sd: sd.__setitem__(key, torch.zeros(7)))
    expected = r"transformer\.resblocks\.2\.mlp\.c_fc\.bias \(checkpoint \(7,\)"
    with pytest.raises(CheckpointMismatchError, match=expected):
        apply_text4vis_checkpoint(open_clip.create_model(TINY_ARCH).visual, read_text4vis_checkpoint(path))


def test_unknown_key_is_named(tiny_text4vis: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    path = _damage(tiny_text4vis[0], lambda sd: sd.__setitem__("module.prompt_learner.ctx", torch.zeros(3)))
    with pytest.raises(CheckpointMismatchError, match=r"prompt_learner\.ctx"):
        read_text4vis_checkpoint(path)


def test_wrong_architecture_is_named(tiny_text4vis: tuple[Path, torch.nn.Module, torch.nn.Module]) -> None:
    with torch.device("meta"):
        bigger = open_clip.create_model("ViT-B-32", device="meta").visual
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        apply_text4vis_checkpoint(bigger, read_text4vis_checkpoint(tiny_text4vis[0]))


def test_transf_requires_trained_head(tmp_path: Path) -> None:
    visual = open_clip.create_model(TINY_ARCH).visual
    path = tmp_path / "mean.pt"
    torch.save({"epoch": 1, "model_state_dict": {f"visual.{k}": v for k, v in visual.state_dict().items()}}, path)
    ckpt = read_text4vis_checkpoint(path)
    assert ckpt.head_kind == "mean"
    with pytest.raises(ModelLoadError, match="no trained transf head"):
        apply_text4vis_checkpoint(visual, ckpt, head_kind="transf")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_text4vis_checkpoint(bad)
