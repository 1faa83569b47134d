"""Training configuration: one pydantic model; a YAML/TOML file, and every field also a flag."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # data
    train_list: Path = Field(description="'path label' lines (the reference format) or a folder per class.")
    val_list: Path | None = Field(None, description="Evaluation data, same formats.")
    labels: Path = Field(description="Class names: .csv (id,name) or .txt; label i is line i.")
    val_labels: Path | None = Field(None, description="Class names of val_list when they differ (zero-shot).")
    root: Path | None = Field(None, description="Prefix for relative paths in the list files.")
    frames: int = Field(8, ge=1, le=64)
    input_size: int = Field(224, ge=32)
    shots: int | None = Field(None, ge=1, description="Few-shot: K training videos per class, seeded.")
    workers: int = Field(2, ge=0, description="DataLoader workers.")

    # model
    arch: str | None = Field(
        None,
        description="open_clip architecture; default ViT-B-16, or the one a "
        "clip_checkpoint's weights show (OpenAI or open_clip format).",
    )
    pretrained: str | None = Field(
        None, description="open_clip pretrained tag (default openai without a clip_checkpoint)."
    )
    clip_checkpoint: Path | None = None
    random_init: bool = Field(False, description="Start from random CLIP weights (tests only).")
    temporal: Literal["mean", "transf"] = "transf"
    classifier: Literal["text", "random", "orthogonal", "lda", "text-other"] = "text"
    templates: list[str] = Field(default_factory=lambda: ["a video of a person {}."])
    lda_shots: int = Field(2, ge=1, description="Videos per class for the LDA initialization.")
    other_text_model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="For classifier=text-other.")
    unfreeze_classifier: bool = Field(False, description="Train the classifier too (the paper's ablation).")

    # optimization
    epochs: int = Field(30, ge=1)
    warmup_epochs: int = Field(5, ge=0)
    batch_size: int = Field(256, ge=1, description="Global batch (all processes, before accumulation).")
    accumulate: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(5e-5, gt=0, description="Learning rate of the new parts (head, classifier if trained).")
    lr_ratio: float = Field(0.1, gt=0, description="CLIP backbone learning rate = lr x ratio.")
    weight_decay: float = Field(0.2, description="AdamW weight decay, on every parameter (as the reference).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    clip_grad: float | None = Field(None, description="Max gradient norm; none (the reference) disables it.")
    amp: bool = Field(True, description="Mixed precision (CUDA only).")
    grayscale: float = Field(0.2, ge=0, le=1, description="Probability of a grayscale clip (augmentation).")
    rand_augment: bool = Field(False, description="RandAugment (the paper's; off in the reference code).")
    seed: int = 0

    # output
    output: Path = Path("runs/train")
    resume: Path | None = Field(None, description="A checkpoint (last.pt) to continue from exactly.")
    stop_after: int | None = Field(None, ge=1, description="Stop after this epoch (a planned interruption).")
    export_engine: bool = Field(False, description="Write an ONNX engine directory at the end (needs engine).")
    device: str = "auto"

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
        data: dict[str, Any] = {}
        if path is not None:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
        return cls(**{**data, **overrides})


def flag_parser() -> argparse.ArgumentParser:
    """``--config FILE`` plus one ``--field-name`` flag per config field."""
    parser = argparse.ArgumentParser(prog="t4v train", description="Fine-tune CLIP's visual encoder (Text4Vis).")
    parser.add_argument("--config", type=Path, default=None, help="YAML or TOML file of the fields below.")
    for name, field in TrainConfig.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        kind = field.annotation
        if get_origin(kind) in (Union, UnionType):  # X | None -> X
            kind = next(a for a in get_args(kind) if a is not type(None))
        if kind is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=field.description
            )
        elif get_origin(kind) is list:
            parser.add_argument(flag, dest=name, nargs="+", default=None, help=field.description)
        elif get_origin(kind) is Literal:
            parser.add_argument(flag, dest=name, choices=get_args(kind), default=None, help=field.description)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=field.description)  # type: ignore[arg-type]
    return parser


def parse_args(argv: list[str] | None) -> TrainConfig:
    args = vars(flag_parser().parse_args(argv))
    config = args.pop("config")
    return TrainConfig.load(config, {k: v for k, v in args.items() if v is not None})
