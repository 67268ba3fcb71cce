"""Model metadata survives the ONNX file and the sidecar record, and a graph without it reads as None."""

from __future__ import annotations

from dataclasses import replace

import onnx
from onnx import TensorProto, helper

from deploykit.io.metadata import ModelMetadata, read_metadata, write_metadata
from deploykit.types import IMAGENET


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])
    return helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g", [x], [y]))


def test_metadata_round_trips_through_the_graph_and_the_record() -> None:
    meta = ModelMetadata(model="tiny", task="segmentation", num_classes=3, preprocessing=IMAGENET,
                         input_size=(8, 8), input_names=("input",), output_names=("output",),
                         options={"width": 2}, precision="fp16")
    model = _model()
    assert read_metadata(model) is None
    write_metadata(model, meta)
    back = read_metadata(onnx.ModelProto.FromString(model.SerializeToString()))
    assert back is not None and back.model == "tiny" and back.precision == "fp16"
    assert back.input_size == (8, 8) and back.preprocessing == IMAGENET and back.num_classes == 3
    record = ModelMetadata.from_record(replace(meta, precision="int8").to_record())
    assert record is not None and record.precision == "int8" and record.output_names == ("output",)
