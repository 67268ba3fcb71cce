"""Helpers shared by the parity tests: the tiny zoo model, and corrupting one Conv of an exported model."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import numpy_helper

from deploykit.runner import Target
from deploykit.targets.resolve import open_target
from deploykit.zoo import get_model_spec
from tests.fixtures.tiny import TINY

ZOO_MODEL = "deeplabv3plus_mobilenetv2"
USER_MODEL = "tests.fixtures.user_models:tiny_segmenter"


def zoo_target() -> Target:
    spec = get_model_spec(ZOO_MODEL)
    return open_target(ZOO_MODEL, options=dict(TINY[spec.name].options))
def middle_conv(model: onnx.ModelProto) -> onnx.NodeProto:
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return convs[len(convs) // 2]


def scale_initializer(model: onnx.ModelProto, name: str, factor: float) -> None:
    """Multiply one initializer in place (a deliberately corrupted weight or quantisation scale)."""
    init = next(i for i in model.graph.initializer if i.name == name)
    array = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((array * factor).astype(array.dtype), name))


def corrupted_copy(source: Path, out: Path, factor: float = 4.0) -> tuple[Path, str]:
    """A copy of `source` with its middle Conv's weights scaled; returns the path and that node's name."""
    model = onnx.load(str(source))
    conv = middle_conv(model)
    scale_initializer(model, conv.input[1], factor)
    onnx.save(model, str(out))
    return out, conv.name
