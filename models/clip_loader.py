"""Load a CLIP model through open_clip: a hub tag, a local checkpoint, or an explicit random init.

Weights are never random unless the caller asks for it by name (``random_init=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
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

from text4vis.models.choices import Activation
from text4vis.models.clip_source import DEFAULT_ARCH as DEFAULT_ARCH
from text4vis.models.clip_source import DEFAULT_PRETRAINED as DEFAULT_PRETRAINED
from text4vis.models.clip_source import ClipSource as ClipSource
from text4vis.models.errors import CheckpointMismatchError, ModelLoadError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_ARCH = "t4v-tiny-vit"
HUB_HOST = "huggingface.co"

open_clip.add_model_config(CONFIG_DIR)

Tokenizer = Callable[..., torch.Tensor]
QUICKGELU_SUFFIX = "-quickgelu"
GELU_SUFFIX = "-gelu"  # an OpenAI-layout file's inferred architecture run with GELU (not what OpenAI trained)
OPENAI_ARCHIVE = "openai_torchscript"  # extras key set by read_checkpoint for OpenAI's TorchScript files


@dataclass
class LoadedClip:
    """A CLIP model in eval mode with what is needed to use it."""

    model: Any  # an open_clip CLIP; its towers are reached by attribute
    tokenizer: Tokenizer
    arch: str
    model_id: str  # identifies the weights and the activation; text-embedding caches key on it
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    quick_gelu: bool = False  # the MLP activation the model runs: QuickGELU (OpenAI's) or GELU

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def activation(self) -> str:
        """``quickgelu`` or ``gelu``: what its MLPs run (part of an archive's fingerprint)."""
        return "quickgelu" if self.quick_gelu else "gelu"

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
    prefix; ``extras`` holds the container's other plain entries (``epoch``, ...), and
    ``OPENAI_ARCHIVE: True`` for a TorchScript archive (OpenAI's release format: QuickGELU weights).
    """
    if not path.is_file():
        raise ModelLoadError(f"checkpoint file not found: {path}")
    obj: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            with warnings.catch_warnings():  # a TorchScript archive is read below
                warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a checkpoint we can read"
        try:  # OpenAI's released .pt files are TorchScript archives
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
            archive = True
        except Exception:  # noqa: BLE001
            raise ModelLoadError(f"cannot read {path} as a PyTorch checkpoint: {_one_line(exc)}") from None
    else:
        archive = False
    extras: dict[str, Any] = {OPENAI_ARCHIVE: True} if archive else {}
    for container in ("state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(container), Mapping):
            extras = {k: v for k, v in obj.items() if isinstance(v, int | float | str)}
            obj = obj[container]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):  # TorchScript extras, derived
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
    """Build a CLIP model from ``source`` (see :class:`ClipSource`), in eval mode, fp32, on ``device``.

    The activation follows the weights: QuickGELU for weights trained with it (a hub tag whose
    config says ``quick_gelu``, as OpenAI's do; an OpenAI TorchScript archive; an OpenAI-layout
    state dict read without ``--model``), the architecture's own otherwise. open_clip only warns
    when the two disagree; here a disagreement is fixed (QuickGELU forced) or refused, never run.
    The model id spells the activation (``ViT-B-16-quickgelu/openai``), so that embeddings made
    with the other one are never taken for these.
    """
    src = source.resolved()
    if src.arch is not None and src.arch not in open_clip.list_models():
        raise ModelLoadError(
            f"unknown architecture {src.arch!r}; known: {', '.join(open_clip.list_models()[:8])}, ... "
            f"(see open_clip.list_models())"
        )
    if src.random_init:
        assert src.arch is not None
        quick = _choose_activation(src.arch, src.activation, None, "random weights")
        with torch.random.fork_rng(devices=[]), _quiet():
            torch.manual_seed(src.seed)
            model = _create(src.arch, None, quick)
        log.warning("CLIP %s runs RANDOM weights (seed %d): predictions are meaningless", src.arch, src.seed)
        model_id = f"{_spelled(src.arch, quick)}/random-seed{src.seed}"
    elif src.checkpoint is not None:
        model, arch, quick = _from_checkpoint(src.checkpoint, src.arch, src.activation)
        src = ClipSource(arch, None, src.checkpoint)
        model_id = f"{_spelled(arch, quick)}/sha256:{file_digest(src.checkpoint)}"  # type: ignore[arg-type]
    else:
        assert src.arch is not None and src.pretrained is not None
        model, quick = _from_hub(src.arch, src.pretrained, src.activation)
        model_id = f"{_spelled(src.arch, quick)}/{src.pretrained}"
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
        quick_gelu=quick,
    )


TEXT_FILE = "text.pt"


def save_text_tower(clip: LoadedClip, path: Path) -> None:
    """CLIP's text tower (every weight outside ``visual``) with what rebuilds it: enough to encode
    vocabularies beside an exported visual engine, without the hub or the base checkpoint."""
    whole = clip.model.state_dict()
    text = {k: v.detach().cpu() for k, v in whole.items() if not k.startswith("visual.")}
    name = clip.arch.removeprefix("openai-")
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "arch": clip.arch,
            # what builds the architecture, whatever open_clip knows by name: an OpenAI-layout
            # file's architecture is read from its shapes and has no open_clip config of its own
            "model_cfg": open_clip.get_model_config(name) or _openai_model_cfg(whole),
            "quick_gelu": clip.quick_gelu,
            "model_id": clip.model_id,
            "image_size": clip.image_size,
            "mean": list(clip.mean),
            "std": list(clip.std),
            "state_dict": text,
        },
        tmp,
    )
    tmp.replace(path)


def load_text_tower(path: Path) -> LoadedClip:
    """A CLIP whose text tower is :func:`save_text_tower`'s and whose visual tower holds no weights
    (the meta device: the visual encoder runs from the engine); its model id is the one exported."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        arch, quick, state = str(saved["arch"]), bool(saved["quick_gelu"]), saved["state_dict"]
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise ModelLoadError(f"cannot read the text encoder {path}: {_one_line(exc)}") from None
    name = arch.removeprefix("openai-")  # an OpenAI file's inferred name: open_clip's config of that name
    if name not in open_clip.list_models():
        if not isinstance(saved.get("model_cfg"), dict):  # written before the config was stored with it
            raise ModelLoadError(
                f"{path}: open_clip has no architecture {name!r} to rebuild the text encoder; "
                "export the engine again (it now stores the architecture)"
            )
        _register(name, saved["model_cfg"])
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="QuickGELU mismatch")
        model = open_clip.create_model(name, pretrained=None, device="meta", force_quick_gelu=quick)
    own = {k for k in model.state_dict() if not k.startswith("visual.")}
    try:
        if set(state) != own:
            raise ValueError("other keys")
        model.load_state_dict(state, strict=False, assign=True)
    except (ValueError, RuntimeError):
        raise CheckpointMismatchError(f"{path} does not fit {name}'s text tower: export the engine again") from None
    _causal_masks(model)
    model.eval()
    return LoadedClip(
        model=model,
        tokenizer=_tokenizer(arch),
        arch=arch,
        model_id=str(saved["model_id"]),
        image_size=int(saved["image_size"]),
        mean=(float(saved["mean"][0]), float(saved["mean"][1]), float(saved["mean"][2])),
        std=(float(saved["std"][0]), float(saved["std"][1]), float(saved["std"][2])),
        quick_gelu=quick,
    )


def _openai_model_cfg(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The open_clip model config of an OpenAI-layout CLIP, read from its shapes as open_clip's
    ``build_model_from_openai_state_dict`` reads them."""
    if "visual.proj" in state:
        patch = int(state["visual.conv1.weight"].shape[-1])
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision: dict[str, Any] = {
            "layers": len([k for k in state if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")]),
            "width": int(state["visual.conv1.weight"].shape[0]),
            "patch_size": patch,
            "image_size": patch * grid,
        }
    else:
        blocks = [len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{b}")}) for b in (1, 2, 3, 4)]
        side = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {
            "layers": blocks,
            "width": int(state["visual.layer1.0.conv1.weight"].shape[0]),
            "image_size": side * 32,
        }
    width = int(state["ln_final.weight"].shape[0])
    return {
        "embed_dim": int(state["text_projection"].shape[1]),
        "vision_cfg": vision,
        "text_cfg": {
            "context_length": int(state["positional_embedding"].shape[0]),
            "vocab_size": int(state["token_embedding.weight"].shape[0]),
            "width": width,
            "heads": width // 64,
            "layers": len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks")}),
        },
    }


def _register(name: str, cfg: dict[str, Any]) -> None:
    """Make ``cfg`` open_clip's architecture ``name`` (its public way: a JSON file of that name)."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / f"{name}.json"
        config.write_text(json.dumps(cfg))
        open_clip.add_model_config(config)


def _causal_masks(model: nn.Module) -> None:
    """The text tower's causal attention masks (buffers no state dict holds) built on the CPU: a
    model created on the meta device has them as shapes only."""
    for name, buffer in list(model.named_buffers()):
        if name.startswith("visual.") or not buffer.is_meta:
            continue
        if not name.endswith("attn_mask") or buffer.ndim != 2 or buffer.shape[0] != buffer.shape[1]:
            raise ModelLoadError(f"cannot rebuild the text encoder's buffer {name}")
        mask = torch.full(tuple(buffer.shape), float("-inf")).triu_(1)
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        owner.register_buffer(name.rpartition(".")[2], mask, persistent=False)


def arch_quick_gelu(arch: str) -> bool:
    """Whether open_clip's config of ``arch`` builds QuickGELU (the ``-quickgelu`` spellings do)."""
    cfg = open_clip.get_model_config(arch) or {}
    return bool(cfg.get("quick_gelu", False))


def _spelled(arch: str, quick: bool) -> str:
    """``arch`` named by the activation it runs, so that a model id says it: ``ViT-B-16`` forced to
    QuickGELU is ``ViT-B-16-quickgelu``, as open_clip spells that architecture; an architecture read
    from an OpenAI-layout file (``openai-*``, QuickGELU as OpenAI trained it) run with GELU is
    ``openai-...-gelu``."""
    if arch.startswith("openai-"):
        return arch if quick else arch + GELU_SUFFIX
    if quick and not arch_quick_gelu(arch):
        return arch + QUICKGELU_SUFFIX
    return arch


def _choose_activation(arch: str, asked: Activation, trained_quick: bool | None, weights: str) -> bool:
    """QuickGELU or not for ``arch`` holding ``weights``; ``trained_quick``: what the weights were
    trained with when known (None: unknown). An explicit choice against what is known is refused."""
    own = arch_quick_gelu(arch)
    if asked != "auto":
        wanted = asked == "quickgelu"
        if trained_quick is not None and wanted != trained_quick:
            raise ModelLoadError(
                f"{weights} were trained with {'QuickGELU' if trained_quick else 'GELU'}; "
                f"--activation {asked} would run them with the wrong activation"
            )
    else:
        wanted = own if trained_quick is None else trained_quick
    if own and not wanted:
        raise ModelLoadError(
            f"{arch} is built with QuickGELU but {weights} need GELU: name the architecture without {QUICKGELU_SUFFIX}"
        )
    if wanted and not own:
        log.info("building %s with QuickGELU, the activation %s were trained with", arch, weights)
    return wanted


def _create(arch: str, pretrained: str | None, quick: bool) -> Any:  # an open_clip CLIP
    with warnings.catch_warnings():
        # the activation was chosen above; open_clip's "QuickGELU mismatch" warning cannot apply
        warnings.filterwarnings("ignore", message="QuickGELU mismatch")
        return open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick)


def _from_hub(arch: str, tag: str, activation: Activation) -> tuple[Any, bool]:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise ModelLoadError(f"no pretrained weights {tag!r} for {arch}; known tags: {', '.join(tags) or 'none'}")
    trained_quick = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    quick = _choose_activation(arch, activation, trained_quick, f"the weights {arch}/{tag}")
    if not os.environ.get("HF_HUB_OFFLINE") and not _hub_reachable():
        raise ModelLoadError(
            f"cannot reach the hub ({HUB_HOST}) to fetch the pretrained weights {arch}/{tag}; "
            "pass a local file with --clip-checkpoint PATH (open_clip or OpenAI format), "
            "or set HF_HUB_OFFLINE=1 to use weights already in the local hub cache; to try it without weights: "
            "--model ViT-B-32 --random-init (random weights, answers of no meaning)"
        )
    try:
        with _quiet("huggingface_hub"):
            return _create(arch, tag, quick), quick
    except Exception as exc:  # noqa: BLE001 - the hub fails in many ways; all mean "no weights"
        raise ModelLoadError(
            f"could not fetch the pretrained weights {arch}/{tag} from the hub ({_one_line(exc)}); "
            "without network, pass a local file: --clip-checkpoint PATH (open_clip or OpenAI format)"
        ) from None


def _from_checkpoint(path: Path, arch: str | None, activation: Activation) -> tuple[Any, str, bool]:
    """The model, its architecture's name and whether it runs QuickGELU. OpenAI's own files
    (TorchScript archives) and OpenAI-layout state dicts read without an architecture are
    QuickGELU; a plain state dict under ``--model ARCH`` runs ARCH's activation unless told."""
    state, extras = read_checkpoint(path)
    openai_archive = extras.get(OPENAI_ARCHIVE) is True
    if arch is None:
        if "visual.proj" not in state and "visual.attnpool.positional_embedding" not in state:
            raise ModelLoadError(
                f"cannot infer the architecture of {path}: it is not an OpenAI-layout CLIP state dict; "
                "name it with --model ARCH"
            )
        quick = activation != "gelu"
        if openai_archive and not quick:
            raise ModelLoadError(f"{path} is OpenAI's release, trained with QuickGELU; drop --activation gelu")
        try:
            model = build_model_from_openai_state_dict(dict(state), quick_gelu=quick, cast_dtype=None)
            # open_clip casts the model to fp16 before loading; load again in fp32 to keep every bit
            model.float().load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointMismatchError(f"{path} is not a complete CLIP state dict: {_one_line(exc)}") from None
        return model, _openai_arch_name(state), quick
    trained_quick = True if openai_archive else None
    quick = _choose_activation(arch, activation, trained_quick, f"the weights in {path}")
    if trained_quick is None and activation == "auto":
        log.info(
            "CLIP checkpoint %s runs %s with %s, the architecture's activation (OpenAI-trained weights "
            "need QuickGELU: --activation quickgelu)",
            path,
            arch,
            "QuickGELU" if quick else "GELU",
        )
    with _quiet():  # open_clip warns "initialized randomly"; the checkpoint is loaded right after
        model = _create(arch, None, quick)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    load_strict(model, state, f"CLIP checkpoint {path}")
    return model, arch, quick


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
