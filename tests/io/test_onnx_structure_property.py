"""read_onnx accepts a graph iff ONNX Runtime's CPU provider creates a session for it (property over generated
small graphs with the defects files in the wild have), and a refused file is one line and exit status 2 from
the CLI (`deploykit lint`, which opens no session of its own). Two refusals are deploykit's own: a graph without
inputs or outputs (ONNX Runtime loads one; deploykit runs models that take an image and give a result), and
opsets below 7 (ONNX Runtime only guarantees opset 7 and newer; whether it loads an older graph depends on each
op's kernels)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from deploykit.cli import cli
from deploykit.errors import InputError
from deploykit.io.model_files import read_onnx
from deploykit.io.onnx_graph_checks import OLDEST_OPSET
from tests.graph.graphs import CONTROL_FLOW, if_model

UNARY = ("Relu", "Sigmoid", "Identity", "Neg", "Abs")
BINARY = ("Add", "Mul", "Sub")


@st.composite
def graphs(draw: st.DrawFn) -> onnx.ModelProto:
    """x (1,C,4,4) -> a chain of 1-4 nodes (unary ops, a 1x1 Conv, a binary op with an earlier tensor) -> y."""
    channels = draw(st.integers(1, 3))
    tensors, nodes, inits = ["x"], [], []
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("unary", "conv", "binary")))
        out = f"t{index}"
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [tensors[-1]], [out], name=f"n{index}"))
        elif kind == "conv":
            weight = numpy_helper.from_array(np.ones((channels, channels, 1, 1), np.float32), f"w{index}")
            inits.append(weight)
            nodes.append(helper.make_node("Conv", [tensors[-1], weight.name], [out], name=f"n{index}"))
        else:
            other = draw(st.sampled_from(tensors))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [tensors[-1], other], [out], name=f"n{index}"))
        tensors.append(out)
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 4, 4])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", draw(st.integers(7, 21)))])
    model.ir_version = draw(st.integers(3, onnx.IR_VERSION))
    return model


def _pick(draw: st.DrawFn, items: list) -> int:  # type: ignore[type-arg]
    return draw(st.integers(0, len(items) - 1))


def _mutation(draw: st.DrawFn, model: onnx.ModelProto) -> None:
    """One defect, as truncation, hand edits and broken converters leave them."""
    graph = model.graph
    nodes = graph.node
    kind = draw(st.sampled_from((
        "drop_input", "drop_output", "dangling_input", "opset", "ir", "initializer_dtype", "duplicate_output",
        "empty_name", "unknown_op", "extra_input", "unknown_attribute", "declared_type", "reorder", "cycle",
        "truncated_data", "typed_data", "duplicate_node_name",
        "duplicate_graph_input", "no_opset", "writes_input", "output_is_input")))
    node = nodes[_pick(draw, list(nodes))]
    if kind == "drop_input":
        del graph.input[:]
    elif kind == "drop_output":
        del graph.output[:]
    elif kind == "dangling_input":
        node.input[0] = "nowhere"
    elif kind == "opset":
        version = draw(st.integers(1, onnx.defs.onnx_opset_version() + 2))
        for opset in model.opset_import[:1]:  # none left after a no_opset mutation
            opset.version = version
    elif kind == "ir":
        model.ir_version = draw(st.integers(0, onnx.IR_VERSION + 2))
    elif kind == "initializer_dtype" and graph.initializer:
        tensor = graph.initializer[_pick(draw, list(graph.initializer))]
        dtype = draw(st.sampled_from((np.int64, np.float16, np.int32, np.float64)))
        tensor.CopyFrom(numpy_helper.from_array(np.ones(tuple(tensor.dims), dtype), tensor.name))
    elif kind == "duplicate_output":
        node.output[0] = nodes[_pick(draw, list(nodes))].output[0]
    elif kind == "empty_name":
        target = draw(st.sampled_from(("node_input", "node_output", "graph_input", "graph_output")))
        if target == "node_input":
            node.input[0] = ""
        elif target == "node_output":
            node.output[0] = ""
        else:
            for value in (graph.input if target == "graph_input" else graph.output)[:1]:
                value.name = ""
    elif kind == "unknown_op":
        node.op_type = draw(st.sampled_from(("Foo", "relu", "Conv2d")))
    elif kind == "extra_input":
        node.input.append("x")
    elif kind == "unknown_attribute":
        node.attribute.append(helper.make_attribute("alpha", 1.0))
    elif kind == "declared_type":
        elem_type = draw(st.sampled_from((TensorProto.INT64, TensorProto.UNDEFINED, TensorProto.FLOAT16,
                                          TensorProto.FLOAT)))
        for value in draw(st.sampled_from((graph.input, graph.output)))[:1]:
            value.type.tensor_type.elem_type = elem_type
    elif kind == "reorder":
        order = draw(st.permutations(list(nodes)))
        copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
        del nodes[:]
        nodes.extend(copies)
    elif kind == "cycle":
        node.input[0] = "y"
    elif kind == "truncated_data" and graph.initializer:
        tensor = graph.initializer[0]
        tensor.raw_data = tensor.raw_data[: draw(st.integers(0, max(len(tensor.raw_data) - 1, 0)))]
    elif kind == "typed_data" and graph.initializer:  # float_data of any length, as hand-made tensors hold it
        tensor = graph.initializer[_pick(draw, list(graph.initializer))]
        try:
            values = numpy_helper.to_array(tensor).ravel().tolist()
        except ValueError:  # an earlier mutation cut its data short
            values = [0.0] * math.prod(tensor.dims)
        tensor.ClearField("raw_data")
        tensor.float_data.extend((values * 2)[: draw(st.integers(0, len(values) + 2))])
    elif kind == "duplicate_node_name":
        node.name = draw(st.sampled_from([n.name for n in nodes] + [""]))
    elif kind == "duplicate_graph_input" and graph.input:
        graph.input.append(graph.input[0])
    elif kind == "no_opset":
        del model.opset_import[:]
    elif kind == "writes_input":
        node.output[0] = "x"
    elif kind == "output_is_input":
        for value in graph.output[:1]:
            value.name = "x"


@st.composite
def mutated_graphs(draw: st.DrawFn) -> onnx.ModelProto:
    model = draw(graphs())
    for _ in range(draw(st.integers(0, 2))):
        _mutation(draw, model)
    return model


def _outcome(check: Callable[[], object]) -> bool:
    try:
        check()
    except (InputError, ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidArgument, ort.capi.onnxruntime_pybind11_state.NotImplemented,
            ort.capi.onnxruntime_pybind11_state.RuntimeException):
        return False
    return True


def _opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=mutated_graphs())
def test_read_onnx_accepts_exactly_what_onnx_runtime_loads(model: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    options = ort.SessionOptions()
    options.log_severity_level = 4
    loads = _outcome(lambda: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    accepted = _outcome(lambda: read_onnx(path))
    opset = _opset(model)
    if (opset is not None and opset < OLDEST_OPSET) or not model.graph.input or not model.graph.output:
        assert not accepted
    else:
        assert accepted == loads, (accepted, loads, onnx.printer.to_text(model), model.opset_import,
                                   model.ir_version)
    if not accepted:
        result = CliRunner().invoke(cli, ["lint", str(path)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output


def _expand_by_itself(model: onnx.ModelProto) -> None:
    """y = Expand(t, t): a 4-D float tensor as the shape (lenient inference gives up on the rank silently)."""
    model.graph.node[1].op_type = "Expand"
    model.graph.node[1].input.append("t")


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.graph.node.append(helper.make_node("Relu", ["t"], ["x"])), "'x' is made twice"),
    (lambda m: m.graph.node[0].input.__setitem__(0, "y"), "cycle"),
    (lambda m: setattr(m.opset_import[0], "version", 5), "opset 5; ONNX Runtime supports opset 7"),
    (lambda m: setattr(m.graph.output[0].type.tensor_type, "elem_type", TensorProto.INT64),
     "'y' is declared int64 but its node makes float"),
    # ONNX Runtime runs each op's inference and its type check at load; ONNX's lenient inference let these by
    (lambda m: (setattr(m.graph.node[1], "op_type", "Softmax"),
                m.graph.node[1].attribute.append(helper.make_attribute("axis", 4))), "'axis' must be in"),
    (_expand_by_itself, "shape input must be 1D tensor"),
])
def test_each_refusal_names_what_is_wrong(tmp_path: Path, edit: Callable[[onnx.ModelProto], None],
                                          words: str) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    edit(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match="ONNX Runtime refuses") as refused:
        read_onnx(path)
    assert words in str(refused.value)
    assert not _outcome(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))


@pytest.mark.parametrize("inputs, outputs", [
    (["", "x"], ["y"]),  # an unused typed input named "": ONNX Runtime loads it (hypothesis found it in CI)
    (["x", "", ""], ["y"]),  # named "" twice
    (["x"], ["y", ""]),  # an output named ""
])
def test_empty_names_are_read_as_onnx_runtime_reads_them(tmp_path: Path, inputs: list[str],
                                                          outputs: list[str]) -> None:
    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 4, 4])

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [value(n) for n in inputs],
                              [value(n) for n in outputs])
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    options = ort.SessionOptions()
    options.log_severity_level = 4
    loads = _outcome(lambda: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    assert _outcome(lambda: read_onnx(path)) == loads


@pytest.mark.parametrize("name", sorted(CONTROL_FLOW))
def test_control_flow_reading_the_outer_scope_is_accepted(tmp_path: Path, name: str) -> None:
    """If branches and Loop/Scan bodies read outer tensors (the ONNX spec allows it; ONNX Runtime runs it): the
    If node then depends on `h` though its inputs do not name it, and onnx's check_node sees no outer scope."""
    path = tmp_path / "model.onnx"
    path.write_bytes(CONTROL_FLOW[name]().SerializeToString())
    assert _outcome(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    read_onnx(path)


def test_a_branch_reading_a_name_nothing_makes_is_refused_by_name(tmp_path: Path) -> None:
    model = if_model()
    model.graph.node[-1].attribute[0].g.node[0].input[0] = "nowhere"
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    assert not _outcome(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    with pytest.raises(InputError, match="reads 'nowhere', which no node"):
        read_onnx(path)


@pytest.mark.parametrize("edit, loads", [
    # a branch making a name the outer graph makes too: ONNX Runtime loads it (the inner one shadows)
    (lambda m: m.graph.node.insert(1, helper.make_node("Relu", ["h"], ["t_c"], name="outer_tc")), True),
    # a branch reading its own If's output: a cycle
    (lambda m: _then(m).node[0].input.__setitem__(0, "y"), False),
])
def test_subgraph_scopes_are_read_as_onnx_runtime_reads_them(tmp_path: Path, edit: Callable[[onnx.ModelProto], None],
                                                              loads: bool) -> None:
    model = if_model()
    edit(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    assert _outcome(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])) == loads
    assert _outcome(lambda: read_onnx(path)) == loads


def _then(model: onnx.ModelProto) -> onnx.GraphProto:
    return next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")


def _untyped_output(path: Path) -> Path:
    """x (1,3,8,8) -> Conv -> y, with y declared without a type (ONNX Runtime runs it)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([conv], "untyped", [x], [helper.make_value_info("y", onnx.TypeProto())], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # the oracle loads it
    return path


def test_an_output_declared_without_a_type_gets_its_inferred_type_and_builds(tmp_path: Path) -> None:
    """Such a graph was read as it was, and its FP16 graph failed the ONNX checker: exit 2 calling it a bug."""
    path = _untyped_output(tmp_path / "untyped.onnx")
    assert read_onnx(path).graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    out = tmp_path / "untyped.fp16.ort.onnx"
    result = CliRunner().invoke(cli, ["build-engine", str(path), "--fp16", "--backend", "onnxruntime", "-o", str(out)])
    assert result.exit_code == 0 and out.is_file(), result.output


@pytest.mark.parametrize("data_type, stored, loads", [
    # int4 packs two values a byte: 4 values in 2 bytes load, in 4 bytes not (a 1-byte item size refused the first)
    (TensorProto.INT4, {"raw_data": b"\x11\x22"}, True),
    (TensorProto.INT4, {"raw_data": b"\x11\x22\x33\x44"}, False),
    (TensorProto.INT4, {"int32_data": [0x11, 0x22]}, True),
    (TensorProto.INT8, {"int32_data": [1, 2, 3, 4]}, True),
    (TensorProto.INT8, {"int32_data": [1, 2, 3]}, False),
    (TensorProto.INT8, {}, False),  # no values at all
])
def test_tensor_data_is_counted_as_onnx_runtime_counts_it(tmp_path: Path, data_type: int, stored: dict,  # type: ignore[type-arg]
                                                          loads: bool) -> None:
    """x + DequantizeLinear(q): q's four values stored in raw_data or int32_data, packed for int4."""
    quantized = onnx.TensorProto(name="q", data_type=data_type, dims=[4])
    for field, value in stored.items():
        if field == "raw_data":
            quantized.raw_data = value
        else:
            getattr(quantized, field).extend(value)
    scale = numpy_helper.from_array(np.array(1.0, np.float32), "s")
    graph = helper.make_graph([helper.make_node("DequantizeLinear", ["q", "s"], ["d"]),
                               helper.make_node("Add", ["x", "d"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [quantized, scale])
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString())
    options = ort.SessionOptions()
    options.log_severity_level = 4
    assert _outcome(lambda: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])) == loads
    assert _outcome(lambda: read_onnx(path)) == loads


def test_a_constant_holding_too_few_values_is_refused_by_name(tmp_path: Path) -> None:
    """Constant nodes keep tensors too: ONNX Runtime refuses one whose float_data is short."""
    value = onnx.TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[2, 2])
    value.float_data.extend([1.0, 2.0])
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=value),
                               helper.make_node("Add", ["x", "c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert not _outcome(lambda: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    with pytest.raises(InputError, match="tensor 'c' holds 2 values; its shape \\[2, 2\\] and type float need 4"):
        read_onnx(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keep=st.integers(0, 80), offset=st.sampled_from(("", "0", "4", "-1", "x")),
       length=st.sampled_from(("", "64", "32", "68", "0")), lazy=st.booleans())
def test_external_data_is_checked_as_onnx_runtime_reads_it(keep: int, offset: str, length: str, lazy: bool,
                                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """A weight of 64 bytes kept in model.onnx.data, the file cut to `keep` bytes and its offset and length
    edited: read_onnx accepts it iff ONNX Runtime loads it, also where it loads no external data itself
    (`lazy`: bench, parity and package leave that to ONNX Runtime, whose message names C++ functions)."""
    folder = tmp_path_factory.mktemp("external")
    weight = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    data = folder / "model.onnx.data"
    data.write_bytes((data.read_bytes() * 2)[:keep])
    saved = onnx.load(str(path), load_external_data=False)
    entries = {"location": "model.onnx.data", "offset": offset, "length": length}
    del saved.graph.initializer[0].external_data[:]
    for key, value in entries.items():
        if value:
            saved.graph.initializer[0].external_data.add(key=key, value=value)
    onnx.save(saved, str(path))
    options = ort.SessionOptions()
    options.log_severity_level = 4
    loads = _outcome(lambda: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    assert _outcome(lambda: read_onnx(path, external_data=not lazy)) == loads, (keep, offset, length)
