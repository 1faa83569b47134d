"""Training configuration: one pydantic model, a YAML/TOML file, and every field also a flag.

The weights' options (``model``, ``pretrained``, ``clip_checkpoint``, ``temporal``,
``activation``, ``random_init``) are :class:`~text4vis.models.options.WeightOptions`, the same
fields serving uses; the flags come from the one field-to-flag generator
(``models/cli_options.py``), for ``t4v train`` and ``torchrun -m text4vis.models.training.train`` alike.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ConfigDict, Field, model_validator

from text4vis.models.choices import ClassifierInit, TemporalHead
from text4vis.models.cli_options import with_options
from text4vis.models.options import DeviceOption, WeightOptions


class TrainConfig(DeviceOption, WeightOptions):
    """What a training run does; ``temporal`` unset trains the T-Trans head (the paper's)."""

    model_config = ConfigDict(extra="forbid")

    # data
    train_list: Path = Field(description="'path label' lines (the reference format) or a folder per class.")
    val_list: Path | None = Field(None, description="Evaluation data, same formats.")
    labels: Path = Field(description="Class names: .csv (id,name) or .txt; label i is line i.")
    val_labels: Path | None = Field(None, description="Class names of val_list when they differ (zero-shot).")
    root: Path | None = Field(None, description="Prefix for relative paths in the list files.")
    frames: int = Field(8, ge=1, le=64, description="Frames per clip (T).")
    input_size: int = Field(224, ge=32, description="The model's input size (C).")
    shots: int | None = Field(None, ge=1, description="Few-shot: K training videos per class, seeded.")
    workers: int = Field(2, ge=0, description="DataLoader workers.")

    # the classifier (the CLIP model and the head: WeightOptions)
    classifier: ClassifierInit = Field(ClassifierInit.TEXT, description="How the frozen classifier is initialized.")
    templates: list[str] = Field(default_factory=lambda: ["a video of a person {}."], description="Prompt templates.")
    lda_shots: int = Field(2, ge=1, description="Videos per class for the LDA initialization.")
    other_text_model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="For classifier=text-other.")
    unfreeze_classifier: bool = Field(False, description="Train the classifier too (the paper's ablation).")

    min_list_frames: int = Field(
        8,
        ge=0,
        description="A 3-column training list drops the videos it says have fewer frames than this (the "
        "reference's fixed 8, whatever the frames per clip).",
    )

    # optimization
    epochs: int = Field(30, ge=1, description="Epochs.")
    warmup_epochs: int = Field(5, ge=0, description="Linear warm-up epochs of the cosine schedule.")
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
    seed: int = Field(0, description="Seeds the data order, augmentations and initializations.")

    # output
    output: Path = Field(Path("runs/train"), description="Run directory: last.pt, metrics.jsonl, metrics.png.")
    resume: Path | None = Field(None, description="A checkpoint (last.pt) to continue from exactly.")
    stop_after: int | None = Field(None, ge=1, description="Stop after this epoch (a planned interruption).")
    export_engine: bool = Field(False, description="Write an ONNX engine directory at the end (OUTPUT/engine).")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})")
        return self

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
        """The file's fields, then ``overrides`` (the flags given) on top. A flag that names the
        weights (``--clip-checkpoint``, ``--pretrained``, ``--random-init``) replaces the file's
        other ways of naming them (a config's ``pretrained: openai`` gives way to a
        ``--clip-checkpoint``), and an empty flag (``--pretrained ""``) unsets the file's value."""
        data: dict[str, Any] = {}
        if path is not None:
            try:
                text = path.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read the config {path}: {exc.strerror or exc} (--config)") from None
            data = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
        for key, value in overrides.items():
            for other in WEIGHT_SOURCES.get(key, ()) if value not in ("", False) else ():
                data.pop(other, None)
        merged = {**data, **overrides}
        return cls(**{k: v for k, v in merged.items() if v != ""})

    def check_files(self) -> None:
        """Every file the run reads exists (``ValueError`` naming the first that does not) and the
        weights are named one way (``ModelLoadError``): said before a model is loaded, not after."""
        for name in ("train_list", "labels", "val_list", "val_labels", "clip_checkpoint", "resume"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise ValueError(f"{name} {path} does not exist (--{name.replace('_', '-')})")
        self.clip_source(seed=self.seed).resolved()  # weights named two ways: refused before anything loads


# a flag naming the weights one way replaces the config's other ways (they cannot be combined)
WEIGHT_SOURCES = {
    "clip_checkpoint": ("pretrained", "random_init"),
    "pretrained": ("clip_checkpoint", "random_init"),
    "random_init": ("pretrained", "clip_checkpoint"),
}


def head_kind(cfg: TrainConfig) -> TemporalHead:
    """The head a run trains: the config's, else T-Trans."""
    return cfg.temporal or TemporalHead.TRANSF


@with_options(TrainConfig)
def collect(
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML file of the fields; flags win.")] = None,
    options: dict[str, Any] | None = None,
) -> TrainConfig:
    """Fine-tune CLIP's visual encoder against a frozen text classifier (Text4Vis): --config FILE
    and any field as a flag."""
    return TrainConfig.load(config, options or {})


def parse_args(argv: list[str] | None) -> TrainConfig:
    """The config ``argv`` (``--config FILE --epochs 3 ...``) describes; ``--help`` prints the flags."""
    app = typer.Typer(add_completion=False, rich_markup_mode="rich")
    app.command()(collect)
    result = typer.main.get_command(app).main(argv, prog_name="t4v train", standalone_mode=False)
    if not isinstance(result, TrainConfig):  # --help answered
        raise SystemExit(0)
    return result
