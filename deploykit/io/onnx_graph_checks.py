"""What ONNX Runtime refuses when it loads a graph (Graph::Resolve), checked in Python before any command starts
its work, so that every command, `lint` too (which never opens a session), refuses the same files with one line
that says what is wrong, instead of a C++ function's name or a later failure. Held to ONNX Runtime by a property
test over generated graphs (tests/io/test_onnx_structure_property.py): read_onnx accepts a graph iff ONNX
Runtime's CPU provider creates a session for it.

Deliberately not here: kernel coverage per op and opset (ONNX Runtime's registry), ops of domains other than the
default one (ONNX Runtime's contrib ops, TensorRT plugins that `lint` reports on), and shape agreement between
declared and inferred shapes (ONNX Runtime merges disagreeing shapes leniently; a graph inconsistent in shapes
fails when it runs). An op's own shape inference failing (an axis beyond the rank) it refuses, and so do we.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import onnx
from onnx import TensorProto

OLDEST_OPSET = 7  # ONNX Runtime only guarantees models stamped with opset 7 or newer (its own warning says so)


def default_opset(model: onnx.ModelProto) -> int | None:
    """The opset of the default ONNX domain ("" or "ai.onnx") the model imports; None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


class GraphProblem(Exception):
    """What is wrong with the graph, and how to fix it (by default: export it again)."""

    def __init__(self, problem: str, fix: str = "export it again") -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def check_graph(model: onnx.ModelProto) -> None:
    """Raise GraphProblem for the first thing ONNX Runtime would refuse in `model` (external data not needed), or
    that no input could pass (an input of size 0)."""
    graph = model.graph
    _check_opsets(model)
    _check_values(graph)
    _check_single_definitions(graph)
    _check_initializers(graph.initializer)
    _check_tensor_data(graph)
    order = _topological_order(graph)  # first: a subgraph reading its own node's output is a cycle
    _check_nodes(model)
    _check_types(model, order)


def _check_opsets(model: onnx.ModelProto) -> None:
    imported = {o.domain or "ai.onnx" for o in model.opset_import}
    opset = default_opset(model)
    if opset is None and any(n.domain in ("", "ai.onnx") for n in model.graph.node):
        raise GraphProblem("it imports no opset of the default ONNX domain, which its nodes use")
    if opset is not None and opset < OLDEST_OPSET:
        raise GraphProblem(f"it is opset {opset}; ONNX Runtime supports opset {OLDEST_OPSET} and newer",
                           f"convert it with onnx.version_converter or export it at opset {OLDEST_OPSET} or newer")
    domain = next((n.domain for n in model.graph.node if (n.domain or "ai.onnx") not in imported), None)
    if domain is not None:
        raise GraphProblem(f"its nodes use domain {domain!r}, which it does not import (opset_import)")


def _check_values(graph: onnx.GraphProto) -> None:
    # ONNX Runtime loads a typed input named "" (once), as any other input; an output named "" it refuses
    if any(not v.name for v in graph.output):
        raise GraphProblem("a graph output has an empty name")
    for kind, values in (("input", graph.input), ("output", graph.output)):
        untyped = next((v.name for v in values if v.type.HasField("tensor_type")
                        and v.type.tensor_type.elem_type == TensorProto.UNDEFINED), None)
        if untyped is not None:
            raise GraphProblem(f"{kind} {untyped!r} is a tensor of undefined element type")
    seen: set[str] = set()
    for value in graph.input:
        if value.name in seen:
            raise GraphProblem(f"input {value.name!r} is listed twice")
        seen.add(value.name)
        if value.type.WhichOneof("value") is None:
            raise GraphProblem(f"input {value.name!r} has no type")
    # ONNX Runtime loads an input declared with size 0 and fails only when run ("Upsample invalid scales"); lint
    # and build passed it and wrote an artifact no data can go through
    stored = {t.name for t in graph.initializer}
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        empty = next((axis for axis, dim in enumerate(dims) if dim.HasField("dim_value") and dim.dim_value == 0),
                     None)
        if empty is not None and value.name not in stored:
            raise GraphProblem(f"input {value.name!r} declares size 0 at axis {empty}, so it can hold no data",
                               "export it again with the sizes it takes (or that axis dynamic)")


def _check_single_definitions(graph: onnx.GraphProto) -> None:
    """Each name is made once (SSA): by one node, or as a graph input and/or initializer (older exporters list
    initializers among the inputs; ONNX Runtime uses the last of repeated initializers)."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    named: set[str] = set()
    for node in graph.node:
        if node.name and node.name in named:  # ONNX Runtime refuses two nodes of one name (unnamed ones it names)
            raise GraphProblem(f"two nodes are named {node.name!r}", "give each node its own name, or export it again")
        named.add(node.name)
        for output in node.output:
            if output and output in defined:
                raise GraphProblem(f"{output!r} is made twice (node {node.name or node.op_type} and another node, "
                                   "input or initializer)")
            defined.add(output)


def _check_initializers(tensors: Iterable[TensorProto]) -> None:
    for tensor in tensors:
        if tensor.data_type == TensorProto.UNDEFINED or tensor.data_type not in TensorProto.DataType.values():
            raise GraphProblem(f"initializer {tensor.name!r} has no valid data type ({tensor.data_type})")
        if not tensor.name:
            raise GraphProblem("an initializer has an empty name")


# bits per element of the types stored packed, several to a byte (raw_data) or to an int32_data entry
PACKED_BITS = {getattr(TensorProto, name): bits for name, bits in (
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6))
    if hasattr(TensorProto, name)}


def _check_tensor_data(graph: onnx.GraphProto) -> None:
    """Every tensor held in the file (initializers, Constant values, in subgraphs too) stores as many values as
    its shape and type need, in raw_data or in its typed field (float_data, int32_data, ...): ONNX Runtime
    refuses any other count, a truncated or hand-edited file's usual defect. External data is checked against
    its file by deploykit.io.model_files."""
    for tensor in embedded_tensors(graph):
        what = f"tensor {tensor.name!r}" if tensor.name else "a constant tensor"
        if any(dim < 0 for dim in tensor.dims):
            raise GraphProblem(f"{what} has a negative dimension in its shape {list(tensor.dims)}")
        if tensor.data_location == TensorProto.EXTERNAL or tensor.data_type not in TensorProto.DataType.values():
            continue
        have, need, unit = stored_size(tensor)
        if have != need:
            raise GraphProblem(f"{what} holds {have} {unit}; its shape {list(tensor.dims)} and type "
                               f"{TensorProto.DataType.Name(tensor.data_type).lower()} need {need} (a truncated "
                               "or corrupt file)")


def stored_size(tensor: TensorProto) -> tuple[int, int, str]:
    """(what `tensor` holds, what its shape and type need, the unit: "bytes" of raw_data, or "values" of its
    typed field). Packed types (int4) hold several values a byte or an int32_data entry; complex ones two
    floats a value."""
    need = data_bytes(tensor)
    if tensor.data_type == TensorProto.STRING:
        return len(tensor.string_data), need, "values"
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data), need, "bytes"
    field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    if tensor.data_type in PACKED_BITS:
        return len(getattr(tensor, field)), need, "values"
    per_value = 2 if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1
    return len(getattr(tensor, field)), _count(tensor) * per_value, "values"


def data_bytes(tensor: TensorProto) -> int:
    """The bytes `tensor`'s shape and type take as raw data (in a file beside the model too); for a string
    tensor, its number of values."""
    if tensor.data_type in PACKED_BITS:
        return (_count(tensor) * PACKED_BITS[tensor.data_type] + 7) // 8
    if tensor.data_type == TensorProto.STRING:
        return _count(tensor)
    return _count(tensor) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _count(tensor: TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count


def embedded_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor a graph holds: initializers, and constant attributes of its nodes and their subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from embedded_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from embedded_tensors(subgraph)


def _check_nodes(model: onnx.ModelProto) -> None:
    """Each default-domain node against its op's schema at the model's opset: known op, inputs and attributes."""
    context = onnx.checker.C.CheckerContext()
    context.ir_version = max(model.ir_version, 4)
    context.opset_imports = {o.domain: o.version for o in model.opset_import}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue  # contrib ops and plugins: their runtime's to judge
        try:
            if _subgraphs(node):
                _check_scoped_node(node, context)
            else:
                onnx.checker.check_node(node, context)
        except onnx.checker.ValidationError as exc:
            raise GraphProblem(f"node {node.name or node.op_type}: {_first(exc)}") from None


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)]


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """The outer-scope tensors `node`'s subgraphs (If branches, Loop/Scan bodies, recursively) read: inputs of the
    node as much as its listed ones, so the node runs after their producers."""
    reads: set[str] = set()
    for sub in _subgraphs(node):
        local = {v.name for v in (*sub.input, *sub.initializer)} | {o for n in sub.node for o in n.output}
        for inner in sub.node:
            reads |= {i for i in (*inner.input, *outer_reads(inner)) if i and i not in local}
    return reads


def _check_scoped_node(node: onnx.NodeProto, context: onnx.checker.C.CheckerContext) -> None:
    """check_node on If/Loop/Scan sees no outer scope (its Python binding cannot fill one), so a branch reading
    an outer tensor, which the ONNX spec allows and ONNX Runtime runs, would fail as unsorted: check the node in
    a graph that declares its inputs and the outer names its subgraphs read (types are not checked here;
    _check_types infers them). Only those: a subgraph may make a name the outer graph makes too (ONNX Runtime
    loads it)."""
    names = sorted({i for i in node.input if i} | outer_reads(node))
    declared = [onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, []) for name in names]
    onnx.checker.check_graph(onnx.helper.make_graph([node], "scope", declared, []), context)


def _topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in an order that runs (ONNX Runtime sorts an unsorted graph itself); GraphProblem for a cycle.
    Kahn's algorithm: each node waits for the count of its inputs not yet made (linear in the graph's size)."""
    made = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    made |= {t.values.name for t in graph.sparse_initializer}
    needs = [{i for i in (*node.input, *outer_reads(node)) if i not in made} for node in graph.node]
    missing = [len(names) for names in needs]
    readers: dict[str, list[int]] = {}
    for position, names in enumerate(needs):
        for name in names:
            readers.setdefault(name, []).append(position)
    ready = [position for position, count in enumerate(missing) if count == 0]
    order: list[onnx.NodeProto] = []
    while ready:
        node = graph.node[ready.pop()]
        order.append(node)
        for name in node.output:
            if not name or name in made:
                continue
            made.add(name)
            for reader in readers.get(name, ()):
                missing[reader] -= 1
                if missing[reader] == 0:
                    ready.append(reader)
    if len(order) < len(graph.node):
        done = {id(n) for n in order}
        node = next(n for n in graph.node if id(n) not in done)
        raise GraphProblem(f"node {node.name or node.op_type} is part of a cycle (the graph is not acyclic)")
    return order


def _check_types(model: onnx.ModelProto, order: Sequence[onnx.NodeProto]) -> None:
    """ONNX type and shape inference over the sorted graph, declared shapes of outputs and value_info left out
    (ONNX Runtime merges disagreeing shapes), in strict mode: ONNX Runtime runs each op's inference at load and
    refuses the graph when it fails (ArgMax's axis beyond the rank, Expand given a 4-D float tensor as its
    shape), which lenient mode lets by; then each declared type of an output or value_info against the inferred
    one."""
    declared = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]
                if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    typed = _typing_copy(model, order)
    try:
        inferred = onnx.shape_inference.infer_shapes(typed, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise GraphProblem(f"ONNX type and shape inference fails on it: {_first(exc)}") from None
    except ValueError:  # a model over protobuf's 2 GB cannot be inferred in memory: ONNX Runtime will say
        return
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        want, got = declared.get(value.name), value.type.tensor_type.elem_type
        if want and got and want != got:
            raise GraphProblem(f"{value.name!r} is declared {TensorProto.DataType.Name(want).lower()} but its node "
                               f"makes {TensorProto.DataType.Name(got).lower()}")


SHAPE_VALUES = 1024  # initializers up to this size keep their values (a Reshape's shape); larger ones are weights


def _typing_copy(model: onnx.ModelProto, order: Sequence[onnx.NodeProto]) -> onnx.ModelProto:
    """What type inference needs of `model`: its nodes in `order`, outputs untyped, and weights as typed inputs
    instead of their data (copying a model's weights cost 0.2 s per 50 MB)."""
    graph = model.graph
    listed = {v.name for v in graph.input}
    small, weights = [], []
    for tensor in graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= dim
        if count <= SHAPE_VALUES:
            small.append(tensor)
        elif tensor.name not in listed:
            listed.add(tensor.name)
            weights.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    outputs = [onnx.ValueInfoProto(name=o.name) for o in graph.output]
    typed = onnx.helper.make_model(
        onnx.helper.make_graph(order, graph.name, [*graph.input, *weights], outputs, initializer=small,
                               sparse_initializer=graph.sparse_initializer),
        opset_imports=model.opset_import, functions=model.functions)
    typed.ir_version = max(model.ir_version, 4)  # below 4 inference ignores initializers not listed as inputs
    return typed


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
