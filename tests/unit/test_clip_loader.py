import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from models import clip_loader
from models.clip_loader import TINY_ARCH, ClipSource, LoadedClip, load_clip
from models.errors import CheckpointMismatchError, ModelLoadError


def test_local_open_clip_checkpoint(tiny_clip: LoadedClip, tiny_clip_path: Path) -> None:
    assert tiny_clip.arch == TINY_ARCH
    assert tiny_clip.model_id.startswith(f"{TINY_ARCH}/sha256:")
    saved = torch.load(tiny_clip_path, weights_only=True)
    for k, v in tiny_clip.model.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    assert not tiny_clip.model.training


def test_openai_state_dict_infers_architecture(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = open_clip.create_model(TINY_ARCH)
    path = tmp_path / "openai_layout.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_clip(ClipSource(checkpoint=path))
    assert loaded.arch.startswith("openai-ViT")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_image(x), model.eval().encode_image(x), rtol=0, atol=1e-6)


def test_checkpoint_that_does_not_fit(tiny_clip_path: Path) -> None:
    expected = r"does not fit the model; missing keys: .*shape mismatch: ln_final"
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_clip(ClipSource(arch="ViT-B-32", checkpoint=tiny_clip_path))


def test_unknown_architecture() -> None:
    with pytest.raises(ModelLoadError, match="unknown architecture 'ViT-Q-99'"):
        load_clip(ClipSource(arch="ViT-Q-99", pretrained="openai"))


def test_unknown_pretrained_tag() -> None:
    with pytest.raises(ModelLoadError, match="no pretrained weights 'nope' for ViT-B-32"):
        load_clip(ClipSource(arch="ViT-B-32", pretrained="nope"))


def test_hub_unreachable_fails_fast_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(clip_loader, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelLoadError, match="--clip-checkpoint"):
        load_clip(ClipSource(arch="ViT-B-32", pretrained="openai"))


def test_hub_offline_mode_reports_missing_cache(tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE=1 (read when huggingface_hub is imported, so in a fresh process) the real
    hub code runs against an empty cache and fails at once with a clear message."""
    code = (
        "from models.clip_loader import load_clip, ClipSource\n"
        "load_clip(ClipSource(arch='ViT-B-32', pretrained='openai'))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "could not fetch the pretrained weights ViT-B-32/openai" in proc.stderr


def test_random_init_only_when_asked() -> None:
    assert ClipSource().resolved().pretrained == "openai"
    a = load_clip(ClipSource(arch=TINY_ARCH, random_init=True, seed=5))
    b = load_clip(ClipSource(arch=TINY_ARCH, random_init=True, seed=5))
    assert a.model_id == f"{TINY_ARCH}/random-seed5"
    torch.testing.assert_close(a.model.visual.proj, b.model.visual.proj)
    with pytest.raises(ModelLoadError):
        ClipSource(arch=TINY_ARCH, random_init=True, pretrained="openai").resolved()
