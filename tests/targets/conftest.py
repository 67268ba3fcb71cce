"""The tiny exported model (tests/fakes/fixtures.py), shared with the backend tests."""

from __future__ import annotations

from tests.fakes.fixtures import tiny_onnx

__all__ = ["tiny_onnx"]
