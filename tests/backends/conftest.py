"""Fixtures for the TensorRT tests: the tensorrt double (tests/fakes) and a tiny exported model."""

from __future__ import annotations

from tests.fakes.fixtures import tiny_onnx, trt_double, trt_double_no_gpu

__all__ = ["tiny_onnx", "trt_double", "trt_double_no_gpu"]
