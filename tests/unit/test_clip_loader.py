import os
import subprocess
import sys
import warnings
from pathlib import Path

import open_clip
import pytest
import torch

from tests.conftest import GELU_ARCH, QUICK_TAG
from text4vis.models import clip_loader
from text4vis.models.clip_loader import TINY_ARCH, ClipSource, LoadedClip, load_clip
from text4vis.models.errors import CheckpointMismatchError, ModelLoadError


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


# --- the activation follows the weights (QuickGELU for OpenAI's) ---


def _activation_of(model: torch.nn.Module) -> str:
    return type(model.visual.transformer.resblocks[0].mlp.gelu).__name__


def _encodings(loaded: LoadedClip) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 224, 224, generator=g)
    text = loaded.tokenizer(["a video of a person surfing.", "a video of a person skiing."])
    with torch.no_grad():
        return loaded.model.encode_image(images), loaded.model.encode_text(text)


def test_tag_trained_with_quickgelu_builds_quickgelu(quick_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The architecture's config says GELU, the tag says QuickGELU: the model runs QuickGELU, says so
    in its id, and agrees with the same weights read as an OpenAI file (built with QuickGELU)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # open_clip's "QuickGELU mismatch" must not be raised
        hub = load_clip(ClipSource(arch=GELU_ARCH, pretrained=QUICK_TAG))
    assert _activation_of(hub.model) == "QuickGELU" and hub.quick_gelu
    assert hub.model_id == f"{GELU_ARCH}-quickgelu/{QUICK_TAG}"
    openai_file = load_clip(ClipSource(checkpoint=quick_weights))
    assert _activation_of(openai_file.model) == "QuickGELU"
    for a, b in zip(_encodings(hub), _encodings(openai_file), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_activation_against_the_tag_is_refused(quick_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="trained with QuickGELU; --activation gelu would run them"):
        load_clip(ClipSource(arch=GELU_ARCH, pretrained=QUICK_TAG, activation="gelu"))


def test_plain_state_dict_under_an_architecture(quick_weights: Path) -> None:
    """A plain state dict cannot say what it was trained with: the architecture's activation runs
    unless --activation names it; the two give different model ids (no shared embedding cache)."""
    plain = load_clip(ClipSource(arch=GELU_ARCH, checkpoint=quick_weights))
    told = load_clip(ClipSource(arch=GELU_ARCH, checkpoint=quick_weights, activation="quickgelu"))
    assert _activation_of(plain.model) == "GELU" and _activation_of(told.model) == "QuickGELU"
    assert plain.model_id != told.model_id and told.model_id.startswith(f"{GELU_ARCH}-quickgelu/sha256:")
    for a, b in zip(_encodings(told), _encodings(load_clip(ClipSource(checkpoint=quick_weights))), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_openai_torchscript_archive_is_quickgelu_under_any_architecture(quick_weights: Path, tmp_path: Path) -> None:
    """OpenAI's release format (a TorchScript archive) marks OpenAI's weights: QuickGELU even under
    ``--model`` of a GELU architecture."""
    model = open_clip.create_model(TINY_ARCH).eval()
    model.load_state_dict(torch.load(quick_weights, weights_only=True))
    archive = tmp_path / "ViT-tiny.pt"
    example = (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(archive))
    loaded = load_clip(ClipSource(arch=GELU_ARCH, checkpoint=archive))
    assert _activation_of(loaded.model) == "QuickGELU"
    reference = load_clip(ClipSource(checkpoint=quick_weights))
    for a, b in zip(_encodings(loaded), _encodings(reference), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_quickgelu_spelling_is_the_same_model(quick_weights: Path) -> None:
    """``ARCH-quickgelu`` and ``ARCH --activation quickgelu`` are one model with one id."""
    a = load_clip(ClipSource(arch="ViT-B-32-quickgelu", random_init=True))
    b = load_clip(ClipSource(arch="ViT-B-32", random_init=True, activation="quickgelu"))
    assert a.model_id == b.model_id == "ViT-B-32-quickgelu/random-seed0"
    with pytest.raises(ModelLoadError, match="without -quickgelu"):
        load_clip(ClipSource(arch="ViT-B-32-quickgelu", random_init=True, activation="gelu"))
