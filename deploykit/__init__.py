"""deploykit: PyTorch dense-prediction models to fast, verified ONNX Runtime and TensorRT artifacts."""

__version__ = "0.1.0"
