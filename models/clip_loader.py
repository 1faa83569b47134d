"""Load a CLIP model through open_clip: a hub tag, a local checkpoint, or an explicit random init.

Weights are never random unless the caller asks for it by name (``random_init=True``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import build_model_from_openai_state_dict, convert_to_custom_text_state_dict
from torch import nn

from models.errors import CheckpointMismatchError, ModelLoadError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_ARCH = "t4v-tiny-vit"
DEFAULT_ARCH = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
HUB_HOST = "huggingface.co"

open_clip.add_model_config(CONFIG_DIR)

Tokenizer = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ClipSource:
    """Where a CLIP model comes from. Exactly one of pretrained, checkpoint, random_init is used.

    ``arch=None`` with a checkpoint infers the architecture from an OpenAI-layout state dict.
    """

    arch: str | None = None
    pretrained: str | None = None
    checkpoint: Path | None = None
    random_init: bool = False
    seed: int = 0

    def resolved(self) -> ClipSource:
        """Fill in defaults: ViT-B-16 with the OpenAI weights when nothing else is named."""
        if self.checkpoint is not None and self.pretrained is not None:
            raise ModelLoadError("give either a pretrained tag or a CLIP checkpoint file, not both")
        if self.random_init and (self.checkpoint is not None or self.pretrained is not None):
            raise ModelLoadError("random init cannot be combined with pretrained weights or a checkpoint")
        arch = self.arch
        pretrained = self.pretrained
        if self.checkpoint is None and not self.random_init:
            arch = arch or DEFAULT_ARCH
            pretrained = pretrained or DEFAULT_PRETRAINED
        if self.random_init:
            arch = arch or DEFAULT_ARCH
        return ClipSource(arch, pretrained, self.checkpoint, self.random_init, self.seed)


@dataclass
class LoadedClip:
    """A CLIP model in eval mode with what is needed to use it."""

    model: Any  # an open_clip CLIP; its towers are reached by attribute
    tokenizer: Tokenizer
    arch: str
    model_id: str  # identifies the weights; text-embedding caches key on it
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def text_width(self) -> int:
        """The width of the text transformer (the reference sizes the T-Trans heads from it)."""
        return int(self.model.transformer.width)


def file_digest(path: Path, length: int = 16) -> str:
    """Short sha256 of a file's bytes, used to name weights that come from a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, extras)`` from ``.pt``/``.pth``/``.bin``/``.safetensors`` or an OpenAI
    TorchScript archive. Unwraps ``state_dict`` / ``model_state_dict`` containers and a ``module.``
    prefix; ``extras`` holds the container's other plain entries (``epoch``, ...).
    """
    if not path.is_file():
        raise ModelLoadError(f"checkpoint file not found: {path}")
    obj: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a checkpoint we can read"
        try:  # OpenAI's released .pt files are TorchScript archives
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001
            raise ModelLoadError(f"cannot read {path} as a PyTorch checkpoint: {_one_line(exc)}") from None
    extras: dict[str, Any] = {}
    for container in ("state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(container), Mapping):
            extras = {k: v for k, v in obj.items() if isinstance(v, int | float | str)}
            obj = obj[container]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):  # TorchScript extras
        state.pop(key, None)
    return state, extras


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with one readable error naming every bad key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
            problems.append(f"{what}: {shown}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit the model; " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_clip(source: ClipSource, device: str | torch.device = "cpu") -> LoadedClip:
    """Build a CLIP model from ``source`` (see :class:`ClipSource`), in eval mode, fp32, on ``device``."""
    src = source.resolved()
    if src.arch is not None and src.arch not in open_clip.list_models():
        raise ModelLoadError(
            f"unknown architecture {src.arch!r}; known: {', '.join(open_clip.list_models()[:8])}, ... "
            f"(see open_clip.list_models())"
        )
    if src.random_init:
        assert src.arch is not None
        with torch.random.fork_rng(devices=[]), _quiet():
            torch.manual_seed(src.seed)
            model = open_clip.create_model(src.arch, pretrained=None)
        log.warning("CLIP %s runs RANDOM weights (seed %d): predictions are meaningless", src.arch, src.seed)
        model_id = f"{src.arch}/random-seed{src.seed}"
    elif src.checkpoint is not None:
        model, arch = _from_checkpoint(src.checkpoint, src.arch)
        src = ClipSource(arch, None, src.checkpoint)
        model_id = f"{arch}/sha256:{file_digest(source.checkpoint)}"  # type: ignore[arg-type]
    else:
        assert src.arch is not None and src.pretrained is not None
        model = _from_hub(src.arch, src.pretrained)
        model_id = f"{src.arch}/{src.pretrained}"
    assert src.arch is not None
    model = model.float().eval().to(device)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, list | tuple) else size
    return LoadedClip(
        model=model,
        tokenizer=_tokenizer(src.arch),
        arch=src.arch,
        model_id=model_id,
        image_size=int(size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
    )


def _from_hub(arch: str, tag: str) -> nn.Module:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise ModelLoadError(
            f"no pretrained weights {tag!r} for {arch}; known tags: {', '.join(tags) or 'none'}"
        )
    if not os.environ.get("HF_HUB_OFFLINE") and not _hub_reachable():
        raise ModelLoadError(
            f"cannot reach the hub ({HUB_HOST}) to fetch the pretrained weights {arch}/{tag}; "
            "pass a local file with --clip-checkpoint PATH (open_clip or OpenAI format), "
            "or set HF_HUB_OFFLINE=1 to use weights already in the local hub cache"
        )
    try:
        with _quiet("huggingface_hub"):
            return open_clip.create_model(arch, pretrained=tag)
    except Exception as exc:  # noqa: BLE001 - the hub fails in many ways; all mean "no weights"
        raise ModelLoadError(
            f"could not fetch the pretrained weights {arch}/{tag} from the hub ({_one_line(exc)}); "
            "without network, pass a local file: --clip-checkpoint PATH (open_clip or OpenAI format)"
        ) from None


def _from_checkpoint(path: Path, arch: str | None) -> tuple[nn.Module, str]:
    state = read_state_dict(path)
    if arch is None:
        if "visual.proj" not in state and "visual.attnpool.positional_embedding" not in state:
            raise ModelLoadError(
                f"cannot infer the architecture of {path}: it is not an OpenAI-layout CLIP state dict; "
                "name it with --model ARCH"
            )
        try:
            model = build_model_from_openai_state_dict(dict(state), cast_dtype=None)
            # open_clip casts the model to fp16 before loading; load again in fp32 to keep every bit
            model.float().load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointMismatchError(f"{path} is not a complete CLIP state dict: {_one_line(exc)}") from None
        return model, _openai_arch_name(state)
    with _quiet():  # open_clip warns "initialized randomly"; the checkpoint is loaded right after
        model = open_clip.create_model(arch, pretrained=None)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    load_strict(model, state, f"CLIP checkpoint {path}")
    return model, arch


def _openai_arch_name(state: Mapping[str, torch.Tensor]) -> str:
    """A readable name for an architecture inferred from OpenAI-layout shapes (ViT-B-16, ...)."""
    if "visual.proj" not in state:
        return f"openai-RN-w{state['visual.layer1.0.conv1.weight'].shape[0]}"
    width, patch = state["visual.conv1.weight"].shape[0], state["visual.conv1.weight"].shape[-1]
    size = {768: "B", 1024: "L", 1280: "H"}.get(width, f"w{width}")
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    suffix = "" if grid * patch == 224 else f"-{grid * patch}"
    return f"openai-ViT-{size}-{patch}{suffix}"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of a minute of retries."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence open_clip's (root logger) and the named loggers' warnings while they run."""
    targets = [logging.getLogger(), *(logging.getLogger(name) for name in loggers)]
    levels = [t.level for t in targets]
    for t in targets:
        t.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        for t, level in zip(targets, levels, strict=True):
            t.setLevel(level)


def _tokenizer(arch: str) -> Tokenizer:
    if arch in open_clip.list_models():
        return open_clip.get_tokenizer(arch)
    return open_clip.tokenizer.SimpleTokenizer()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    head = text[0] if text else ""
    return f"{type(exc).__name__}: {head[:200]}"
