"""FP16 pass on graphs with control flow: the Conv/Relu/Add inside If branches, Loop and Scan bodies (nested too)
compute in float16, the node's interface stays float32, ONNX Runtime runs the result, and it agrees with FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from deploykit.errors import ConfigConflict
from deploykit.evaluate import session_from_onnx
from deploykit.graph.fp16 import fp16_from_onnx
from deploykit.graph.tensors import inline_functions, inner_nodes, subgraphs
from tests.graph.graphs import CONTROL_FLOW


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(model.SerializeToString())
    return np.asarray(session.run(None, {"x": x})[0], dtype=np.float32)


@pytest.mark.parametrize("name", ["if", "loop", "loop_if", "scan"])
@pytest.mark.parametrize("fp16_io", [False, True])
def test_bodies_compute_in_float16(name: str, fp16_io: bool) -> None:
    model = CONTROL_FLOW[name]()
    result = fp16_from_onnx(model, fp16_io=fp16_io)
    onnx.checker.check_model(result.model, full_check=True)
    inner = inner_nodes(result.model.graph)
    convs = [n for n in inner if n.op_type == "Conv"]
    weights = {i.name: i.data_type for n in [*result.model.graph.node, *inner] for _, body in subgraphs(n)
               for i in body.initializer}
    assert convs and all(weights.get(c.input[1]) == TensorProto.FLOAT16 for c in convs), name
    assert result.kept == [], result.kept  # the stem too: the bodies read its float16 output as it is
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = _run(result.model, x.astype(np.float16) if fp16_io else x)
    want = _run(model, x)
    assert np.allclose(got, want, rtol=1e-2, atol=5e-2 * float(np.abs(want).max()))


def test_local_functions_are_converted_once_inlined() -> None:
    model = inline_functions(CONTROL_FLOW["function"]())
    assert not model.functions
    result = fp16_from_onnx(model)
    assert result.kept == [] and result.converted == 4
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    assert np.allclose(_run(result.model, x), _run(CONTROL_FLOW["function"](), x), atol=5e-2)


def test_new_names_never_shadow_a_name_inside_a_subgraph() -> None:
    """A name a pass makes (x_fp16) is unique across every scope, not only the main graph's."""
    model = CONTROL_FLOW["if"]()
    then = next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")
    for node in then.node:
        node.input[:] = ["x_fp16" if i == "t_c" else i for i in node.input]
        node.output[:] = ["x_fp16" if o == "t_c" else o for o in node.output]
    result = fp16_from_onnx(model)
    outer = {o for n in result.model.graph.node for o in n.output}
    assert "x_fp16" not in outer and "x_fp16_1" in outer
    onnx.checker.check_model(result.model, full_check=True)


def test_keep_names_a_node_inside_a_branch() -> None:
    """The kept list names nodes inside subgraphs, so --keep-fp32 accepts those names (and still refuses typos)."""
    result = fp16_from_onnx(CONTROL_FLOW["if"](), keep=["t_conv"])
    assert {k.name: k.reason for k in result.kept}["t_conv"] == "kept by --keep-fp32"
    conv = next(n for n in inner_nodes(result.model.graph) if n.name == "t_conv")
    assert conv.input[1] == "w1"  # the float32 weight, not a float16 copy
    with pytest.raises(ConfigConflict, match="'t_cnv' matches no node"):
        fp16_from_onnx(CONTROL_FLOW["if"](), keep=["t_cnv"])
