"""Frame encoders: "frames in, embeddings out". Later backends implement the same contract."""

from text4vis.engine.runtime.backends.base import FrameEncoder, Precision
from text4vis.engine.runtime.backends.torch_backend import TorchFrameEncoder

__all__ = ["FrameEncoder", "Precision", "TorchFrameEncoder"]
