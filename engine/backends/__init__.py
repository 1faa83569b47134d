"""Frame encoders: "frames in, embeddings out". Later backends implement the same contract."""

from engine.backends.base import FrameEncoder, Precision
from engine.backends.torch_backend import TorchFrameEncoder

__all__ = ["FrameEncoder", "Precision", "TorchFrameEncoder"]
