"""What to run: each model and backend option declared once, with its type, default and help.
The weights' own options (architecture, tag, files, head, activation) are ``models/options.py``'s,
shared with training.

``t4v classify``, ``t4v export`` and ``t4v serve`` derive their command-line options from these
fields (``models/cli_options.py``), and ``server/settings.py`` derives the ``T4V_*`` variables
from them: adding an option is one edit here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from text4vis.models.choices import Backend, Decoder, Precision, Preprocess, Provider, Scaler
from text4vis.models.errors import InputError
from text4vis.models.options import DeviceOption, WeightOptions, existing_file


class ModelOptions(DeviceOption, WeightOptions):
    """The model, its weights, and how its visual encoder runs. Defaults: ViT-B-16 with OpenAI
    weights, the checkpoint's head (mean without one), the preprocessing that suits the weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text4vis_checkpoint: Path | None = Field(
        None, description="Checkpoint released with Text4Vis (visual encoder + temporal head)."
    )
    preprocess: Preprocess | None = Field(
        None, description="Preprocessing: clip | text4vis (default text4vis with a Text4Vis checkpoint)."
    )
    precision: Precision = Field(
        Precision.AUTO,
        description="Visual encoder precision: auto (fp16 on CUDA, fp32 on the CPU) | fp32 | fp16 | bf16.",
    )
    decoder: Decoder = Field(
        Decoder.AUTO,
        description="Video decoder: auto (nvdec when the model runs on a GPU whose NVDEC works, else pyav) | "
        "pyav (CPU) | nvdec (the GPU's video decoder through FFmpeg) | decord (CPU).",
    )
    scaler: Scaler = Field(
        Scaler.PILLOW,
        description="Who resizes video frames: pillow (the reference's pixels) | ffmpeg (FFmpeg's bicubic "
        "scaler as PyAV decodes: cheaper, not pixel-exact; see the README's decode figures).",
    )
    engine_dir: Path | None = Field(
        None,
        description="Engine directory written by t4v export (ONNX/TensorRT).",
        json_schema_extra={"flag": "--engine"},
    )
    backend: Backend = Field(
        Backend.AUTO,
        description="Encoder backend: auto | torch | onnxruntime | tensorrt; auto: the engine's TensorRT "
        "plan for this GPU, else ONNX Runtime for an engine, else torch.",
    )
    providers: tuple[Provider, ...] = Field(
        (Provider.TENSORRT, Provider.CUDA, Provider.CPU),
        description="ONNX Runtime execution providers, in order of preference.",
        json_schema_extra={"flag": "--provider"},
    )
    threads: int = Field(0, ge=0, le=256, description="ONNX Runtime intra-op threads (0: the cores).")
    compile: bool = Field(False, description="torch.compile the torch backend (needs a C compiler).")

    @field_validator("text4vis_checkpoint")
    @classmethod
    def _text4vis_file_exists(cls, path: Path | None) -> Path | None:
        return existing_file(path)

    @field_validator("engine_dir")
    @classmethod
    def _engine_dir(cls, path: Path | None) -> Path | None:
        if path is not None and not (path / "manifest.json").is_file():
            raise InputError(f"{path} is not an engine directory (no manifest.json): see t4v export")
        return path


def model_options_of(values: BaseModel) -> ModelOptions:
    """The :class:`ModelOptions` part of a larger options object (the server's settings)."""
    return ModelOptions(**{name: getattr(values, name) for name in ModelOptions.model_fields})
