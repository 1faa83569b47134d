"""What runs the visual encoder: weights to modules (``loading.py``), the backends (torch, ONNX
Runtime, TensorRT), exported engine directories (``export.py``), and their assembly (``build.py``)."""
