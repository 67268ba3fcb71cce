"""deploykit.evaluate: what a session raises and prints when a node cannot run on a feed's shape."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.evaluate import RUN_FAILURES, node_failure, session_from_onnx


def _conv5() -> bytes:
    """A 5x5 valid convolution over dynamic sides: a 4x4 input is below its kernel."""
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "oh", "ow"])
    kernel = numpy_helper.from_array(np.ones((3, 3, 5, 5), np.float32), "kernel")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "kernel"], ["output"], name="conv")],
                              "conv5", [image], [out], [kernel])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_shape_below_the_kernel_is_a_run_failure_said_once(capfd: pytest.CaptureFixture[str]) -> None:
    """ONNX Runtime raises InvalidArgument (not Fail) for a map smaller than a Conv kernel, which the callers'
    RUN_FAILURES must hold; and its logger printed the same failure as a second, red line on stderr."""
    session = session_from_onnx(_conv5(), optimization="basic")
    with pytest.raises(RUN_FAILURES) as raised:
        session.run(None, {"input": np.zeros((1, 3, 4, 4), np.float32)})
    assert node_failure(raised.value) == "node conv (Conv): Invalid input shape: {4,4}"
    assert capfd.readouterr().err == ""
