"""deploykit.serve.execute: what the served model answers for a request of a size the model cannot take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploykit.errors import InputError
from deploykit.io.metadata import ModelMetadata, write_metadata
from deploykit.serve.execute import BatchedRunner
from deploykit.types import IMAGENET


def _padded_unet_graph(path: Path) -> None:
    """A graph that runs on any size, whose metadata says padded U-Net (sides multiples of 16)."""
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "h", "w"])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g", [image], [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_metadata(model, ModelMetadata(model="unet", task="segmentation", num_classes=2, preprocessing=IMAGENET,
                                        input_size=(64, 64), input_names=("input",), output_names=("output",),
                                        options={"padded": True}))
    onnx.save(model, str(path))


def test_a_request_the_model_cannot_take_gets_the_rules_words(tmp_path: Path) -> None:
    """The graph would answer 65x64 (U-Net's crops any size); the served model refuses it by the zoo rule,
    naming sizes that work, and answers the request beside it in the same batch."""
    _padded_unet_graph(tmp_path / "m.onnx")
    served = BatchedRunner.open(str(tmp_path / "m.onnx"), batched=True, max_elements=10**6)
    try:
        odd, good = (np.zeros((1, 3, 65, 64), np.float32),), (np.zeros((1, 3, 64, 80), np.float32),)
        answers = served.run([{"input": odd[0]}, {"input": good[0]}])
    finally:
        served.close()
    assert isinstance(answers[0], InputError) and "65 is not, use 64 or 80" in str(answers[0]), answers[0]
    assert isinstance(answers[1], dict) and answers[1]["output"].shape == (1, 3, 64, 80)
