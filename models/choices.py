"""Closed sets of values, each declared once: the model and serving options, the HTTP schemas, the
CLIs and the training config all take their choices from here. Imports nothing heavy (the decode
workers load it).

Members are strings (``StrEnum``): ``Sampling.FAST == "fast"``, and they print, compare and
serialize as their values. Views fuse one way only, as the reference fuses them (their embeddings
averaged), so there is no choice to declare for that. Devices are open (``cuda:N``) and stay a
checked string (``engine/options.py``).
"""

from __future__ import annotations

from enum import StrEnum


class Activation(StrEnum):
    """CLIP's MLP activation: ``auto`` takes the one the weights were trained with."""

    AUTO = "auto"
    GELU = "gelu"
    QUICKGELU = "quickgelu"


class Sampling(StrEnum):
    """Test-time frames: the method's (``exact``) or one cheap-to-decode frame per segment."""

    EXACT = "exact"
    FAST = "fast"


class Decoder(StrEnum):
    AUTO = "auto"
    PYAV = "pyav"
    NVDEC = "nvdec"
    DECORD = "decord"


class TemporalHead(StrEnum):
    MEAN = "mean"
    TRANSF = "transf"


class Preprocess(StrEnum):
    """``clip``: short side to the input size; ``text4vis``: 256 for 224-px models, else the size."""

    CLIP = "clip"
    TEXT4VIS = "text4vis"


class Precision(StrEnum):
    """The visual encoder's precision; ``auto`` resolves to one of the others where it runs."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Scaler(StrEnum):
    """Who resizes video frames: Pillow (the reference's pixels) or FFmpeg as PyAV decodes."""

    PILLOW = "pillow"
    FFMPEG = "ffmpeg"


class Backend(StrEnum):
    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


class Provider(StrEnum):
    """ONNX Runtime execution providers."""

    TENSORRT = "tensorrt"
    CUDA = "cuda"
    CPU = "cpu"


class ExportFormat(StrEnum):
    ONNX = "onnx"
    TENSORRT = "tensorrt"


class ClassifierInit(StrEnum):
    """How training initializes the (frozen) classifier: the paper's comparisons."""

    TEXT = "text"
    RANDOM = "random"
    ORTHOGONAL = "orthogonal"
    LDA = "lda"
    TEXT_OTHER = "text-other"
