"""FP32 -> FP16 as an ONNX graph transform: weights and activations in float16, shapes and scales untouched.

Written as its own pass instead of onnxconverter-common / onnxruntime.transformers.float16 because those
convert every float tensor and then patch known exceptions, which is how Resize broke repeatedly
(onnxconverter-common #207, #272, #306; ONNX Runtime #8327: `scales` turned float16, empty optional inputs
replaced by named empty constants, Casts inserted after their consumers). This pass works the other way round:
- Only ops listed in FP16_OPS are converted, and only the inputs listed there (the ones typed T by the ONNX
  spec) change type. Resize's roi/scales/sizes, Reshape's shape, Pad's pads, Slice's starts/ends, Expand's
  shape and every other shape- or scale-carrying input are never touched; empty optional inputs stay empty.
- Float tensors computed from shapes (Shape -> Cast -> Mul -> Cast, as exporters emit for interpolate) are not
  activations and stay float32, so size arithmetic is never rounded to float16.
- Every other op, nodes named with `keep`, and nodes whose inputs or outputs exceed `overflow_limit` on the
  calibration data (or whose weights do) stay float32, with a Cast at each boundary, inserted in topological
  order right before the node that needs it.
- Constants are range-checked like activations (ModelOpt AutoCast's InitializerRangeRule): an initializer or
  Constant node beyond 65504 keeps its consumer in float32; nonzero values below float16's smallest subnormal
  (2**-24) become that subnormal instead of zero, as AutoCast converts them, so `x / (x * x + 1e-9)` stays 0 at
  x = 0 instead of turning into 0/0 = NaN.
- Reductions are checked on what they accumulate, not only their inputs and outputs (AutoCast's
  DepthOfReductionRule has the same concern): ReduceMean and GlobalAveragePool sum up to max|input| * extent
  (the running sum is bounded by the inputs' range; the result's, a mean, can be near zero while the partial sums
  are not), Softmax/LogSoftmax sum up to `extent` exponentials; beyond the limit the node stays float32.
- The overflow limit: a calibration maximum may reach half of float16's range (32752, for 2x headroom on
  inputs beyond the calibration set); constants may reach 65504 (AutoCast's init_max). AutoCast's data_max
  defaults to 512, far stricter: it keeps any node whose I/O exceeds 512 in FP32, a precision heuristic (the
  float16 step there is 0.5) rather than an overflow guard; deploykit leaves precision to --accuracy-budget.
- `qdq=True` (the FP16 remainder of an INT8 graph, --int8-float fp16): DequantizeLinear nodes read only by
  float16 nodes and QuantizeLinear nodes of float16 tensors take float16 scales (opset 19), as ModelOpt's
  high_precision_dtype=fp16 graphs do, so no Cast sits between a Q/DQ and its convolution.
Graph inputs and outputs stay float32 unless `fp16_io`.
- If branches and Loop/Scan bodies are converted by the same rules, each as a graph of its own with float32
  inputs and outputs (see _convert_bodies), so the If/Loop/Scan node's interface stays float32; tensors inside
  them have no calibration maxima, so only constants are range-checked there. Model-local functions are inlined
  before the pass (deploykit.graph.tensors.inline_functions, called by deploykit.build).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.graph.tensors import (
    GraphIndex,
    activations,
    all_names,
    constant_value,
    ensure_node_names,
    index_graph,
    is_depthwise,
    match_nodes,
    remove_unused_initializers,
    subgraphs,
    unique_name,
)
from deploykit.io.onnx_graph_checks import outer_reads

FP16_MAX = 65504.0
FP16_TINY = 2.0 ** -24  # smallest positive float16 subnormal
QDQ_T = {"QuantizeLinear": (0, 1), "DequantizeLinear": (1,)}  # inputs typed T (x, scale) in opset 19
# Reductions: what their accumulator sums, for an extent of n reduced elements ("mean": n inputs; "count": n
# exponentials, each at most 1 after the max is subtracted).
# (ReduceSum's accumulator is its result, which the activation check already covers; norms have no FP16 rule.)
ACCUMULATES = {"ReduceMean": "mean", "GlobalAveragePool": "mean", "Softmax": "count", "LogSoftmax": "count"}
# Share of float16's range a calibration maximum may reach before the node stays float32: inputs beyond the
# calibration set get 2x headroom.
DEFAULT_OVERFLOW_FRACTION = 0.5
ALL = None  # every input is of type T

# op type -> positions of the inputs that share the op's float type T (ALL = every input). Other inputs keep
# their type: they are shapes, sizes, scales, axes or indices.
FP16_OPS: dict[str, tuple[int, ...] | None] = {
    **{op: (0,) for op in (
        "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Gelu",
        "Erf", "Abs", "Neg", "Sqrt", "Reciprocal", "Exp", "Log", "Floor", "Ceil", "Identity", "Dropout",
        "Softmax", "LogSoftmax", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
        "Flatten", "Transpose", "DepthToSpace", "SpaceToDepth", "Reshape", "Squeeze", "Unsqueeze", "Expand",
        "Tile", "Slice", "Split", "Gather", "GatherElements", "Resize", "Upsample", "ReduceMean", "ReduceMax",
        "ReduceMin", "ReduceSum", "ArgMax", "ArgMin", "MaxUnpool", "TopK", "Sign", "LRN", "Mish",
    )},
    **{op: ALL for op in (
        "Add", "Sub", "Mul", "Div", "Min", "Max", "Sum", "Mean", "Concat", "Conv", "ConvTranspose", "Gemm",
        "MatMul", "PRelu", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Clip",
        "InstanceNormalization", "BatchNormalization",
    )},
    "Where": (1, 2),
    "Pad": (0, 2),  # constant_value has the data's type; pads (1) and axes (3) are int64
    "ScatterND": (0, 2),
    "ScatterElements": (0, 2),
}


@dataclass(frozen=True)
class KeptNode:
    name: str
    op_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op_type": self.op_type, "reason": self.reason}


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    converted: int  # nodes computing in float16
    kept: list[KeptNode] = field(default_factory=list)
    half_nodes: list[str] = field(default_factory=list)  # their names, in graph order
    overflow_limit: float = FP16_MAX * DEFAULT_OVERFLOW_FRACTION

    def report(self) -> dict[str, object]:
        return {"converted_nodes": self.converted, "kept_fp32": [k.to_dict() for k in self.kept],
                "overflow_limit": self.overflow_limit}


def _data_inputs(node: onnx.NodeProto) -> list[int]:
    positions = FP16_OPS[node.op_type]
    return list(range(len(node.input))) if positions is None else [p for p in positions if p < len(node.input)]



def _extent(node: onnx.NodeProto, index: GraphIndex, shapes: Mapping[str, list[int]]) -> int | None:
    """How many elements each output element of a reduction accumulates, when shapes are static."""
    dims = shapes.get(node.input[0])
    if not dims or any(d <= 0 for d in dims):
        return None
    if node.op_type == "GlobalAveragePool":
        return int(np.prod(dims[2:]))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in ("Softmax", "LogSoftmax"):
        return dims[int(attrs.get("axis", -1))]
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constant_value(index, node.input[1])
        axes = None if value is None else [int(a) for a in value.reshape(-1)]
    axes = axes if axes else list(range(len(dims)))
    return int(np.prod([dims[a] for a in axes]))


def _reduction_reason(node: onnx.NodeProto, index: GraphIndex, absmax: Mapping[str, float], limit: float,
                      shapes: Mapping[str, list[int]]) -> str:
    kind = ACCUMULATES.get(node.op_type)
    extent = _extent(node, index, shapes) if kind else None
    if kind is None or extent is None:
        return ""
    total = absmax.get(node.input[0], 0.0) * extent if kind == "mean" else float(extent)
    if total > limit:
        return (f"{node.op_type} over {extent} elements accumulates up to {total:.4g} in float16 "
                f"(> {limit:.4g})")
    return ""


def _keep_reason(node: onnx.NodeProto, index: GraphIndex, absmax: Mapping[str, float], limit: float,
                 shapes: Mapping[str, list[int]] | None = None) -> str:
    """Why a float16-capable node must stay float32 on numeric grounds, or '' when it need not."""
    for name in (*[node.input[p] for p in _data_inputs(node)], *node.output):
        if not name or not index.is_float(name):
            continue
        value = constant_value(index, name)
        if value is not None:
            peak = float(np.abs(value.astype(np.float64)).max(initial=0.0))
            if peak > FP16_MAX:
                return f"constant {name} reaches {peak:.4g} > float16 max {FP16_MAX:g}"
        elif absmax.get(name, 0.0) > limit:
            return f"{name} reaches |x| = {absmax[name]:.4g} on the calibration data (> {limit:.4g})"
    return _reduction_reason(node, index, absmax, limit, shapes or {})


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # shapes only sharpen the reduction check
        return {}
    shapes: dict[str, list[int]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 0
                                  for d in value.type.tensor_type.shape.dim]
    return shapes


def _plan(model: onnx.ModelProto, index: GraphIndex, keep: set[str], absmax: Mapping[str, float],
          limit: float, *, qdq: bool = False) -> tuple[set[str], list[KeptNode]]:
    """Names of the nodes to compute in float16, and the activation nodes kept in float32 with reasons."""
    live = activations(model, index)
    shapes = _static_shapes(model) if any(n.op_type in ACCUMULATES for n in model.graph.node) else {}
    half: set[str] = set()
    kept: list[KeptNode] = []
    for node in model.graph.node:
        float_outputs = [o for o in node.output if o and o in live]
        if not float_outputs or (qdq and node.op_type in QDQ_T):
            continue  # shape arithmetic, constants, integer outputs: nothing to convert; Q/DQ: at rewrite
        if subgraphs(node):
            continue  # If/Loop/Scan: float32 at their boundary, their bodies converted inside (_convert_bodies)
        if node.name in keep:
            kept.append(KeptNode(node.name, node.op_type, "kept by --keep-fp32"))
        elif node.op_type not in FP16_OPS or node.domain not in ("", "ai.onnx"):
            kept.append(KeptNode(node.name, node.op_type, f"no float16 rule for {node.op_type}"))
        elif any(node.input[p] and not index.is_float(node.input[p]) for p in _data_inputs(node)):
            kept.append(KeptNode(node.name, node.op_type, "a typed input is not float"))
        elif reason := _keep_reason(node, index, absmax, limit, shapes):
            kept.append(KeptNode(node.name, node.op_type, reason))
        else:
            half.add(node.name)
    return half, kept


class _Rewriter:
    """Builds the new node list, converting initializers/constants once and sharing boundary Casts."""

    def __init__(self, model: onnx.ModelProto, index: GraphIndex, taken: set[str]) -> None:
        self.model = model
        self.index = index
        self.taken = taken
        self.half: set[str] = set()  # tensors that hold float16 values in the new graph
        self.to_half: dict[str, str] = {}
        self.to_float: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.new_initializers: list[onnx.TensorProto] = []

    def _cast(self, source: str, target: str, to: int) -> None:
        self.nodes.append(helper.make_node("Cast", [source], [target], to=to,
                                           name=unique_name(f"{target}_cast", self.taken)))

    def as_half(self, name: str) -> str:
        if name in self.half:
            return name
        if name in self.to_half:
            return self.to_half[name]
        new = unique_name(f"{name}_fp16", self.taken)
        value = constant_value(self.index, name)
        if value is not None and value.dtype == np.float32:
            # Values beyond float16's range were caught by the plan; nonzero values below its smallest
            # subnormal become that subnormal, not zero (module docstring).
            tiny = (value != 0) & (np.abs(value) < FP16_TINY)
            value = np.where(tiny, np.copysign(FP16_TINY, value), value)
            half = np.clip(value, -FP16_MAX, FP16_MAX).astype(np.float16)
            self.new_initializers.append(numpy_helper.from_array(half, new))
        else:
            self._cast(name, new, TensorProto.FLOAT16)
        self.to_half[name] = new
        return new

    def as_float(self, name: str) -> str:
        if name not in self.half:
            return name
        if name not in self.to_float:
            new = unique_name(f"{name}_fp32", self.taken)
            self._cast(name, new, TensorProto.FLOAT)
            self.to_float[name] = new
        return self.to_float[name]

    def convert(self, node: onnx.NodeProto) -> None:
        positions = set(QDQ_T[node.op_type] if node.op_type in QDQ_T else _data_inputs(node))
        for position, name in enumerate(node.input):
            if name and position in positions and self.index.is_float(name):
                node.input[position] = self.as_half(name)
            elif name:
                node.input[position] = self.as_float(name)
        self.nodes.append(node)
        self.half.update(o for o in node.output if o and self.index.is_float(o))

    def keep(self, node: onnx.NodeProto) -> None:
        for position, name in enumerate(node.input):
            if name:
                node.input[position] = self.as_float(name)
        self.nodes.append(node)


def _qdq_to_half(node: onnx.NodeProto, index: GraphIndex, half_nodes: set[str], rewriter: _Rewriter) -> bool:
    """A Q of a float16 tensor, or a DQ read only by float16 nodes, computes in float16 (qdq mode)."""
    if node.op_type == "QuantizeLinear":
        return node.input[0] in rewriter.half
    if node.op_type == "DequantizeLinear":
        readers = index.consumers.get(node.output[0], [])
        return bool(readers) and all(r.name in half_nodes for r, _ in readers)
    return False


def _fix_outputs(graph: onnx.GraphProto, rewriter: _Rewriter, fp16_io: bool) -> None:
    """Graph outputs computed in float16: declare them float16 (fp16_io) or cast them back under their name."""
    for output in graph.output:
        if output.name not in rewriter.half:
            continue
        if fp16_io:
            output.type.tensor_type.elem_type = TensorProto.FLOAT16
            continue
        inner = unique_name(f"{output.name}_fp16out", rewriter.taken)
        for node in rewriter.nodes:
            for position, name in enumerate(node.input):
                if name == output.name:
                    node.input[position] = inner
            for position, name in enumerate(node.output):
                if name == output.name:
                    node.output[position] = inner
        rewriter.nodes.append(helper.make_node("Cast", [inner], [output.name], to=TensorProto.FLOAT,
                                               name=unique_name(f"{output.name}_cast", rewriter.taken)))


def fp16_from_onnx(
    model: onnx.ModelProto,
    *,
    keep: Iterable[str] = (),
    fp16_io: bool = False,
    activation_absmax: Mapping[str, float] | None = None,
    overflow_fraction: float = DEFAULT_OVERFLOW_FRACTION,
    qdq: bool = False,
) -> Fp16Result:
    """A float16 copy of `model` (the input is not modified).

    keep: node names or op types (or "DepthwiseConv") to leave in float32.
    activation_absmax: max |x| per tensor measured on calibration data; tensors above
    `overflow_fraction * 65504` keep their producer and consumers in float32.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    ensure_node_names(graph)
    index = index_graph(model)
    keep_names = match_nodes(graph, keep, index, option="--keep-fp32")
    limit = FP16_MAX * overflow_fraction
    scope = _Scope(frozenset(keep), activation_absmax or {}, limit, qdq, all_names(model))
    return _convert(model, index, keep_names, scope, fp16_io=fp16_io)


@dataclass(frozen=True)
class _Scope:
    """What every graph of one conversion shares: the --keep-fp32 patterns, calibration maxima, the overflow
    limit, the Q/DQ mode, and the names taken in every scope (new names stay unique across subgraphs)."""

    patterns: frozenset[str]
    absmax: Mapping[str, float]
    limit: float
    qdq: bool
    taken: set[str]


def _convert(model: onnx.ModelProto, index: GraphIndex, keep_names: set[str], scope: _Scope, *,
             fp16_io: bool, half_inputs: Iterable[str] = ()) -> Fp16Result:
    graph = model.graph
    qdq = scope.qdq
    half_nodes, kept = _plan(model, index, keep_names, scope.absmax, scope.limit, qdq=qdq)
    rewriter = _Rewriter(model, index, scope.taken)
    rewriter.half.update(half_inputs)  # a body's outer reads that are float16 outside it
    if fp16_io:
        for value in graph.input:
            if value.name not in index.initializers and value.type.tensor_type.elem_type == TensorProto.FLOAT:
                value.type.tensor_type.elem_type = TensorProto.FLOAT16
                rewriter.half.add(value.name)
    converted = len(half_nodes)
    for node in list(graph.node):
        if subgraphs(node):
            inner, inner_kept = _convert_bodies(node, index, scope, model.opset_import, rewriter)
            converted, kept = converted + inner, kept + inner_kept
        (rewriter.convert if node.name in half_nodes or (qdq and _qdq_to_half(node, index, half_nodes, rewriter))
         else rewriter.keep)(node)
    _fix_outputs(graph, rewriter, fp16_io)
    del graph.node[:]
    graph.node.extend(rewriter.nodes)
    graph.initializer.extend(rewriter.new_initializers)
    del graph.value_info[:]  # stale float32 annotations; ONNX Runtime and the checker re-infer them
    remove_unused_initializers(model)
    order = [n.name for n in graph.node if n.name in half_nodes]
    return Fp16Result(model=model, converted=converted, kept=kept, overflow_limit=scope.limit, half_nodes=order)


def _float_reads(node: onnx.NodeProto, rewriter: _Rewriter) -> None:
    """Outer tensors a subgraph reads that are float16 here (graph inputs with fp16_io): the subgraph reads a
    float32 Cast of them, made before the node, as every other consumer outside FP16 does."""
    for name in sorted(outer_reads(node) & rewriter.half):
        _rename_reads(node, name, rewriter.as_float(name))


def _rename_reads(node: onnx.NodeProto, old: str, new: str) -> None:
    for _, body in subgraphs(node):
        for inner in body.node:
            inner.input[:] = [new if i == old else i for i in inner.input]
            _rename_reads(inner, old, new)


def _convert_bodies(node: onnx.NodeProto, index: GraphIndex, scope: _Scope,
                    opsets: Iterable[onnx.OperatorSetIdProto], rewriter: _Rewriter) -> tuple[int, list[KeptNode]]:
    """Convert the bodies of an If/Loop/Scan node in place, each as a graph of its own whose inputs are its formal
    inputs plus the outer tensors it reads (float16 ones as float16, constants copied in as its initializers) and
    whose outputs are cast back to float32 under their names: the node's interface stays float32, so the graph
    around it is unchanged, and the Conv/MatMul inside compute in float16 as the user asked. Tensors inside a body
    have no calibration maxima (ONNX Runtime cannot output them), so only constants are range-checked there. A
    body reading an outer tensor of unknown type is left as it is, reading float32 Casts of float16 tensors."""
    bodies = [(attr, body, _outer_reads(body)) for attr, body in subgraphs(node)]
    unknown = [(attr, name) for attr, _, reads in bodies for name in reads
               if name not in index.types and constant_value(index, name) is None]
    if unknown:
        _float_reads(node, rewriter)
        attr, name = unknown[0]
        return 0, [KeptNode(node.name, node.op_type, f"its {attr} reads {name!r} of unknown type: the nodes inside "
                            "stay float32")]
    converted, kept = 0, list[KeptNode]()
    for attr, body, reads in bodies:
        copied = {name: constant_value(index, name) for name in reads}
        half = [name for name, value in copied.items() if value is None and name in rewriter.half]
        inputs = [*body.input, *(helper.make_tensor_value_info(
            name, TensorProto.FLOAT16 if name in half else index.types[name], None)
            for name, value in copied.items() if value is None)]
        constants = [numpy_helper.from_array(value, name) for name, value in copied.items() if value is not None]
        inner = helper.make_model(helper.make_graph(list(body.node), body.name or attr, inputs, list(body.output),
                                                    initializer=[*body.initializer, *constants]),
                                  opset_imports=list(opsets))
        for position, child in enumerate(inner.graph.node):
            child.name = child.name or unique_name(f"{node.name}/{attr}/{child.op_type}_{position}", scope.taken)
        inner_index = index_graph(inner)
        keep = {n.name for n in inner.graph.node if n.name in scope.patterns or n.op_type in scope.patterns
                or ("DepthwiseConv" in scope.patterns and is_depthwise(n, inner_index))}
        result = _convert(inner, inner_index, keep, scope, fp16_io=False, half_inputs=half)
        del body.node[:], body.initializer[:], body.value_info[:]
        body.node.extend(result.model.graph.node)
        body.initializer.extend(i for i in result.model.graph.initializer if i.name not in copied)
        converted, kept = converted + result.converted, kept + result.kept
    return converted, kept


def _outer_reads(body: onnx.GraphProto) -> list[str]:
    local = {v.name for v in (*body.input, *body.initializer)} | {o for n in body.node for o in n.output}
    return sorted({i for n in body.node for i in (*n.input, *outer_reads(n)) if i and i not in local})
