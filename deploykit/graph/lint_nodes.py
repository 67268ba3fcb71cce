"""The per-node rules of `deploykit lint` (deploykit.graph.lint): for each operator with documented TensorRT
restrictions (onnx-tensorrt docs/operators.md, TensorRT 10.15, and the importer's code where the table is
silent), what a node of it must not do, as Findings that name the node, say why, and say the fix."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploykit.graph import trt_support as support
from deploykit.graph.tensors import GraphIndex, constant_array, index_graph

Severity = Literal["error", "warning", "info"]


_UINT8_SOURCES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8)


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    node: str  # node name (or "<op> -> <first output>"), or "(model)"
    op: str
    why: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type} -> {node.output[0] if node.output else '?'}"


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


class Context:
    """The main graph's index plus constant values (initializers and Constant nodes) by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.index: GraphIndex = index_graph(model)
        # Constants of If branches, Loop/Scan bodies and function bodies, whose nodes the rules check too
        self.inner: dict[str, onnx.TensorProto] = {}
        bodies = [fn.node for fn in model.functions]
        graphs = list(_inner_graphs([*model.graph.node, *(n for body in bodies for n in body)]))
        for graph in graphs:
            self.inner.update((t.name, t) for t in graph.initializer)
        for nodes in [*bodies, *(g.node for g in graphs)]:
            self.inner.update((n.output[0], a.t) for n in nodes if n.op_type == "Constant" and n.output
                              for a in n.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR)

    def constant(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        init = self.index.initializers.get(name) or self.inner.get(name)
        if init is not None:
            return onnx.numpy_helper.to_array(init)
        node = self.index.producer.get(name)
        return constant_array(node) if node is not None and node.op_type == "Constant" else None

    def producer_op(self, name: str) -> str:
        node = self.index.producer.get(name)
        return node.op_type if node is not None else ""


def _inner_graphs(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.GraphProto]:
    for node in nodes:
        for attr in node.attribute:
            for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                yield graph
                yield from _inner_graphs(graph.node)


Rule = Callable[[onnx.NodeProto, Context], list[Finding]]


def finding(node: onnx.NodeProto, rule: str, severity: Severity, why: str, fix: str) -> Finding:
    return Finding(rule, severity, label(node), node.op_type, why, fix)


def _pool_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """onnx-tensorrt 10.1-GA (commit 96e7811) importerUtils.cpp poolingHelper l.1382-1401 (unchanged in 10.x since):
    MaxPool/AveragePool of a 3-D input (kernel_shape of 1) is unsqueezed to 2-D and pooled, 2-D and 3-D pool as
    they are, anything else fails ("The attribute kernel_shape misaligns", kUNSUPPORTED_NODE); LpPool (onnxOpImporters
    .cpp l.3329-3382) calls addPoolingNd without that expansion: 2-D or 3-D only. Dilations are never read: both call
    getKernelParams with dilations=nullptr (importerUtils.cpp l.770, l.1418), so the engine pools undilated
    (operators.md 10.1-GA l.31/110/114: "`dilations` must be empty or all ones")."""
    attrs = node_attrs(node)
    found = []
    ranks = (2, 3) if node.op_type == "LpPool" else (1, 2, 3)
    if len(attrs.get("kernel_shape", [0, 0])) not in ranks:
        found.append(finding(node, "pool-rank", "error",
                              f"TensorRT pools {'2-D or 3-D' if node.op_type == 'LpPool' else '1-D, 2-D or 3-D'} "
                              "inputs only", "use a 2-D pool in PyTorch (a 1-D signal as height 1)"))
    if any(d != 1 for d in attrs.get("dilations", [])):
        found.append(finding(node, "pool-dilation", "warning",
                              f"{node.op_type} with dilations {list(attrs['dilations'])}: TensorRT's parser ignores "
                              "pooling dilations, so the engine pools undilated and its output differs from PyTorch's",
                              "use dilation=1 pooling in the PyTorch model"))
    return found


def _resize_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    attrs = node_attrs(node)
    found = []
    mode = attrs.get("mode", "nearest")
    if mode not in support.RESIZE_MODES:
        found.append(finding(node, "resize-mode", "error", f"Resize mode {mode!r}: TensorRT supports "
                              f"{', '.join(support.RESIZE_MODES)}",
                              "use mode='bilinear' (or 'nearest') in F.interpolate and re-export"))
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    if transform not in support.RESIZE_TRANSFORMS:
        found.append(finding(node, "resize-coordinates", "error",
                              f"coordinate_transformation_mode {transform!r}: TensorRT supports "
                              f"{', '.join(support.RESIZE_TRANSFORMS)}",
                              "use F.interpolate with align_corners=False (half_pixel) or True (align_corners)"))
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest not in support.RESIZE_NEAREST_MODES:
        found.append(finding(node, "resize-nearest-mode", "error", f"nearest_mode {nearest!r} is unsupported",
                              f"use one of {', '.join(support.RESIZE_NEAREST_MODES)}"))
    # The parser's Resize importer never reads antialias or keep_aspect_ratio_policy (onnx-tensorrt
    # onnxOpImporters.cpp, DEFINE_BUILTIN_OP_IMPORTER(Resize)): the engine builds and resizes without them.
    if attrs.get("antialias", 0):
        found.append(finding(node, "resize-antialias", "warning", "TensorRT's Resize has no antialiasing: the "
                              "parser ignores it, so the engine's output differs from PyTorch's",
                              "use F.interpolate(..., antialias=False) and re-export"))
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        found.append(finding(node, "resize-aspect", "warning", f"keep_aspect_ratio_policy {policy!r}: TensorRT "
                              "supports 'stretch' only and the parser ignores the policy, so the engine stretches",
                              "resize to an explicit size in the PyTorch model"))
    found += _resize_scaled_axes(node, ctx, mode)
    if ctx.producer_op(node.input[0]) == "DequantizeLinear":
        found.append(finding(node, "int8-resize", "info",
                              "TensorRT has no INT8 Resize: this one runs in float between Q/DQ reformats "
                              "(NVIDIA/TensorRT#2976)",
                              "keep the Resize out of INT8 quantization (the precision pass can exclude it by "
                              "name or op type)"))
    return found


def _resize_scaled_axes(node: onnx.NodeProto, ctx: Context, mode: str) -> list[Finding]:
    """onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.4612-4622 (10.12+ alike) with importerUtils.cpp canUseNDResize
    l.265-279: constant scales may differ from 1 only on the last 3 axes for linear, the last 2 for cubic ("This
    version of TensorRT only supports linear/cubic resizing on the outermost 3/2 dimensions", kUNSUPPORTED_NODE).
    Scales with an `axes` attribute are left to the parser."""
    opset = next((e.version for e in ctx.model.opset_import if e.domain in ("", "ai.onnx")), 0)
    position = 2 if opset >= 11 else 1
    scales = ctx.constant(node.input[position]) if len(node.input) > position else None
    kept = {"linear": 3, "cubic": 2}.get(mode)
    if kept is None or scales is None or scales.ndim != 1 or "axes" in node_attrs(node) \
            or np.all(scales[:max(scales.size - kept, 0)] == 1):
        return []
    return [finding(node, "resize-scaled-axes", "error",
                    f"{mode} Resize with scales {scales.tolist()}: TensorRT resizes {mode} only the last {kept} axes",
                    "resize only the spatial axes (F.interpolate on an N x C x H x W tensor), or use mode nearest")]


def _conv_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    group = int(node_attrs(node).get("group", 1))
    weight = node.input[1] if len(node.input) > 1 else ""
    if group > 1 and ctx.producer_op(weight) == "DequantizeLinear":
        return [finding(node, "int8-grouped-conv", "info",
                         f"a grouped convolution (group {group}) in INT8: TensorRT often runs depthwise/grouped "
                         "convolutions slower in INT8 than in FP16 (TensorRT issues #1310, #4529)",
                         "measure it; keep it in FP16 by excluding it (name or op type DepthwiseConv) from INT8")]
    return []


def _topk_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.5724-5770 (and 10.x since) never reads `sorted`: the TopK layer
    returns sorted results, which sorted=0 ("order unspecified") allows, so that is a note only (operators.md
    10.1-GA l.207 lists "`sorted` must be 1"). K: NVIDIA/TensorRT include/NvInfer.h (v11.1, 82d1dca, l.3448 and
    l.8595; v10.16 alike): "Currently only values of K up to 3840 are supported" (3840 itself included)."""
    found = []
    if int(node_attrs(node).get("sorted", 1)) != 1:
        found.append(finding(node, "topk-sorted", "info", "TopK with sorted=0: TensorRT ignores it and returns the "
                              "top K sorted (a valid order for sorted=0)", "nothing to change"))
    k = ctx.constant(node.input[1]) if len(node.input) > 1 else None
    if k is not None and k.size == 1 and int(k.reshape(-1)[0]) > support.TOPK_MAX_K:
        found.append(finding(node, "topk-k", "error",
                              f"TopK with K={int(k.reshape(-1)[0])}: TensorRT supports K up to {support.TOPK_MAX_K}",
                              "reduce K, or sort in PyTorch after the engine"))
    return found


def _argmax_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """The TensorRT ONNX parser imports ArgMax/ArgMin as a TopK layer with k=1 over `axis`, rejecting UINT8 data,
    and casts the indices to INT64 as ONNX declares them (onnx-tensorrt importerUtils.cpp argMinMaxHelper)."""
    if ctx.index.types.get(node.input[0]) == onnx.TensorProto.UINT8:
        return [finding(node, "argmax-uint8", "error", f"{node.op_type} of UINT8 data: the TensorRT parser rejects "
                         "it", "take the arg-max of the float scores (before any cast to uint8)")]
    readers = [c for c, _ in ctx.index.consumers.get(node.output[0], [])]
    to_bytes = [c for c in readers if c.op_type == "Cast" and node_attrs(c).get("to") == TensorProto.UINT8]
    fix = ("fix the Cast after it (see the cast-uint8 error)" if to_bytes else
           "nothing to change here; a uint8 class map must pass through a Cast to float first (`deploykit export "
           "--head argmax` writes ArgMax -> Cast(float) -> Cast(uint8))")
    return [finding(node, "argmax-topk", "info", f"{node.op_type} becomes a TensorRT TopK layer (k=1) with integer "
                     "indices (INT64, as ONNX declares them); TensorRT converts to UINT8 only from FLOAT or HALF", fix)]


def _cast_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """NVIDIA/TensorRT include/NvInferRuntimeBase.h, DataType::kUINT8: "kUINT8 conversions are only supported for
    {kFLOAT, kHALF}" (and "not supported for {kINT8, kINT32, kBOOL}"); INT64 indices are refused alike. The rule
    holds both ways: UINT8 converts "to {kFLOAT, kHALF}" only."""
    source = ctx.index.types.get(node.input[0]) if node.input else None
    to = node_attrs(node).get("to")
    # onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.394 (10.12+ alike), Cast: ASSERT_NODE(convertDtype(onnxType, ...),
    # "Unsupported cast!", kINVALID_NODE): a type TensorRT has no DataType for (INT16, UINT16, UINT32 ...).
    if to is not None and to not in support.TENSOR_TYPES:
        return [finding(node, "cast-type", "error", f"Cast to {TensorProto.DataType.Name(to)}: TensorRT has no such "
                         "type (\"Unsupported cast!\")", "cast to float, int32 or int64 in the PyTorch model")]
    if source == TensorProto.UINT8 and to not in _UINT8_SOURCES:
        return [finding(node, "cast-uint8", "error", f"Cast from UINT8 to {TensorProto.DataType.Name(to)}: "
                         "TensorRT converts UINT8 only to FLOAT or HALF (NvInferRuntimeBase.h, kUINT8)",
                         "cast the uint8 tensor to float first (Cast(to=FLOAT)), then to the type needed")]
    if to != TensorProto.UINT8 or source in (None, 0, *_UINT8_SOURCES):
        return []
    kind = TensorProto.DataType.Name(source)
    return [finding(node, "cast-uint8", "error", f"Cast from {kind} to UINT8: TensorRT converts to UINT8 only "
                     "from FLOAT or HALF (NvInferRuntimeBase.h, kUINT8)",
                     "cast to float first (Cast(to=FLOAT) then Cast(to=UINT8)), or keep the int32 output; "
                     "`deploykit export --head argmax` writes the float route")]


def _grid_sample_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.5085-5146 (the same in 10.x since): BOOL/UINT8 inputs refused
    (l.5087-5088), input and grid of one rank (l.5098, kINVALID_NODE), which IGridSampleLayer needs to be 4
    (NVIDIA/TensorRT include/NvInfer.h v11.1 l.6075, v10.16 l.6239: "The input and grid tensors must be shape tensors
    of rank 4"; operators.md 10.1-GA l.85: "Input must be 4D input"). align_corners 0 and 1 and the three
    padding modes are all mapped (l.5108-5142). Modes: only "nearest", "bilinear" and "bicubic" are recognized
    (l.5123-5137); any other name, such as opset 20's "linear" and "cubic", leaves kNEAREST."""
    found = []
    ranks = [ctx.index.ranks.get(name) for name in node.input[:2]]
    if any(rank is not None and rank != 4 for rank in ranks):
        found.append(finding(node, "gridsample-rank", "error", f"GridSample of rank {ranks[0]} (grid rank "
                              f"{ranks[1]}): TensorRT samples 4-D inputs (N, C, H, W) with a 4-D grid only",
                              "use 2-D grid_sample (4-D input) in the PyTorch model"))
    kinds = {ctx.index.types.get(name) for name in node.input[:2]}
    if kinds & {TensorProto.BOOL, TensorProto.UINT8}:
        found.append(finding(node, "gridsample-type", "error", "GridSample of BOOL or UINT8 data: TensorRT's parser "
                              "refuses it", "sample a float tensor (cast it to float first)"))
    mode = node_attrs(node).get("mode", "bilinear")
    if mode not in ("nearest", "bilinear", "bicubic"):
        found.append(finding(node, "gridsample-mode", "warning", f"GridSample mode {mode!r}: TensorRT's parser knows "
                              "only 'nearest', 'bilinear' and 'bicubic' (opset 16 names) and imports any other mode "
                              "as nearest, so the engine's output differs from PyTorch's",
                              "export GridSample at opset 16-19 (`deploykit export --opset 18`), whose mode names "
                              "the parser reads"))
    return found


def _misc_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    attrs = node_attrs(node)
    if node.op_type == "ScatterND" and attrs.get("reduction", "none") != "none":
        return [finding(node, "scatternd-reduction", "error",
                         f"ScatterND reduction {attrs['reduction']!r}: TensorRT supports 'none' only",
                         "scatter without reduction in the PyTorch model")]
    if node.op_type == "LayerNormalization" and any(o for o in node.output[1:]):
        return [finding(node, "layernorm-outputs", "error", "LayerNormalization's Mean/InvStdDev outputs are "
                         "unsupported", "use only the normalized output")]
    if node.op_type == "CumSum" and ctx.constant(node.input[1]) is None:
        return [finding(node, "cumsum-axis", "error", "CumSum's axis must be a build-time constant",
                         "pass a Python int as dim to torch.cumsum")]
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        mode = ctx.constant(node.input[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            return [finding(node, "dropout-training", "error", "Dropout's training_mode must be a constant False",
                             "export with model.eval()")]
    if node.op_type == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings")
                                          for a in node.attribute):
        return [finding(node, "constant-kind", "error", "sparse or string Constant values are unsupported",
                         "make it a dense numeric constant")]
    return []


def _mod_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.3583-3589 (10.12+ alike), Mod: with fmod=0 (the default) "inputs
    can only be integers": ASSERT_NODE(INT32 or INT64, "The fmod attribute is set to 0. Inputs cannot be of floating
    point types", kUNSUPPORTED_NODE_DATATYPE). Integer Mod floors (fmod=0) or truncates (fmod=1) as ONNX does, and
    fmod=1 on floats is imported (l.3604-3631): both fine."""
    source = ctx.index.types.get(node.input[0]) if node.input else None
    if int(node_attrs(node).get("fmod", 0)) != 0 or source in (None, 0, TensorProto.INT32, TensorProto.INT64):
        return []
    return [finding(node, "mod-fmod", "error", f"Mod with fmod=0 of {TensorProto.DataType.Name(source)} data: "
                     "TensorRT's parser takes fmod=0 (Python's %) only for INT32/INT64",
                     "use torch.fmod (fmod=1) for floats, or compute x - y * floor(x / y) in the PyTorch model")]


_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSum", "ReduceSumSquare")


def _constant_axes_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """Axes TensorRT needs at build time: onnx-tensorrt 10.1-GA importerUtils.cpp reduceTensor l.1471-1474 ("Axis
    input must be an initializer!", kUNSUPPORTED_NODE; the same in 10.12+) for the Reduce ops' `axes` input (opset
    18), onnxOpImporters.cpp Pad l.3851-3870 ("TensorRT does not support dynamic axes for pad!") for Pad's."""
    position = 3 if node.op_type == "Pad" else 1
    name = node.input[position] if len(node.input) > position else ""
    if not name or ctx.constant(name) is not None:
        return []
    return [finding(node, "dynamic-axes", "error", f"{node.op_type}'s axes input {name!r} is computed in the graph: "
                     "TensorRT needs it as a build-time constant", "pass the axes as Python ints in PyTorch (dim=...)")]


def _if_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """onnx-tensorrt docs/operators.md (10.1-GA, commit 96e7811, l.94), If: "Output tensors of the two conditional
    branches must have the same rank and must have different names". Both branches are imported into one name
    table (onnxOpImporters.cpp l.2629-2630, importSubgraph of then and else) unless the condition is a build-time
    constant, when only the chosen branch is parsed (l.2595-2596: "For constant conditions, parse only the
    selected subgraph")."""
    if ctx.constant(node.input[0]) is not None:
        return []
    branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    then, other = branches.get("then_branch"), branches.get("else_branch")
    if then is None or other is None:
        return []
    shared = sorted({o.name for o in then.output} & {o.name for o in other.output})
    if not shared:
        return []
    return [finding(node, "if-output-names", "error",
                     f"both branches of this If name their output {', '.join(map(repr, shared))}; TensorRT needs "
                     "the two branches' outputs named differently (docs/operators.md, If)",
                     "rename one branch's output tensor (e.g. with onnx-graphsurgeon), or make the condition a "
                     "build-time constant so only one branch is parsed")]


NODE_RULES: dict[str, Rule] = {
    "If": _if_rule,
    "MaxPool": _pool_rule, "AveragePool": _pool_rule, "LpPool": _pool_rule,
    "Resize": _resize_rule,
    "GridSample": _grid_sample_rule,
    "Conv": _conv_rule,
    "TopK": _topk_rule,
    "ArgMax": _argmax_rule, "ArgMin": _argmax_rule,
    "Cast": _cast_rule,
    "ScatterND": _misc_rule, "LayerNormalization": _misc_rule, "CumSum": _misc_rule, "Dropout": _misc_rule,
    "Constant": _misc_rule,
    "Mod": _mod_rule,
    "Pad": _constant_axes_rule, **{op: _constant_axes_rule for op in _REDUCE_OPS},
}
