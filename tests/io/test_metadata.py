"""Model metadata survives the ONNX file and the sidecar record, and a graph without it reads as None."""

from __future__ import annotations

from dataclasses import replace

import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.errors import InputError
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


GARBLED = [("task", "onnxruntime"), ("num_classes", "L"), ("num_classes", "-1"), ("num_classes", "[0, 0]"),
           ("input_size", "null"), ("input_size", "[64]"), ("input_size", "[0, 64]"), ("input_names", ""),
           ("output_names", '"x"'), ("options", '["input", "x"]'), ("versions", "onnxruntime"),
           ("preprocessing", "null"), ("preprocessing", "[-1, 64]"), ("preprocessing", '{"mean": [0.5], "std": [0.5]}'),
           ("preprocessing", '{"mean": [0.5, 0.5, 0.5], "std": [1, 1, 1], "channel_order": "XYZ", '
                             '"input_range": [0, 1]}'),
           ("preprocessing", '{"mean": [0.5, 0.5, 0.5], "std": [0, 1, 1], "channel_order": "RGB", '
                             '"input_range": [0, 1]}')]


@pytest.mark.parametrize(("key", "value"), GARBLED, ids=[f"{k}={v}" for k, v in GARBLED])
def test_garbled_metadata_is_bad_input_naming_the_prop(key: str, value: str) -> None:
    """An edited deploykit.* prop was read field by field where a step needed it: int('L') or a KeyError deep in
    parity, bench or build-engine (exit 3). It is refused on reading, naming the file and the prop, and a sidecar
    record holding it reads as none (the artifact's own graph is read instead)."""
    model = _model()
    write_metadata(model, ModelMetadata(model="tiny", task="segmentation", num_classes=3, preprocessing=IMAGENET,
                                        input_size=(8, 8), input_names=("input",), output_names=("output",)))
    props = {p.key: p.value for p in model.metadata_props}
    props[f"deploykit.{key}"] = value
    onnx.helper.set_model_props(model, props)
    with pytest.raises(InputError, match=rf"m\.onnx: its metadata deploykit\.{key} .*export the model again"):
        read_metadata(model, "m.onnx")
    assert ModelMetadata.from_record({k.removeprefix("deploykit."): v for k, v in props.items()}) is None
