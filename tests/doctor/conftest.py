"""The doctor's self-tests run TensorRT through the test double (tests/fakes)."""

from __future__ import annotations

from tests.fakes.fixtures import trt_double, trt_double_no_gpu

__all__ = ["trt_double", "trt_double_no_gpu"]
