"""`deploykit lint --target tensorrt`: what TensorRT's ONNX parser will reject or mishandle, found without a GPU.

The rules follow onnx-tensorrt's docs/operators.md for TensorRT 10.15 (opsets 9-24): the operators it does
not support, their documented restrictions (MaxPool's Indices output, Resize modes and coordinate
transforms, pooling dilations, Q/DQ zero points ...), plus what deploykit knows costs accuracy or speed
(INT8 around Resize, depthwise convolutions in INT8). Each finding names the node, says why, and says which
fix deploykit offers. Severity: "error" (parsing or building fails), "warning" (builds, but may be wrong or
lossy), "info" (builds and runs; a performance note).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploykit.errors import InputError
from deploykit.graph import trt_support as support
from deploykit.graph.qdq_lint import has_qdq, qdq_findings
from deploykit.graph.tensors import GraphIndex, constant_array, index_graph
from deploykit.graph.unpool import find_unsupported_unpooling, rewrite_unpooling
from deploykit.io.model_files import read_onnx
from deploykit.io.onnx_graph_checks import default_opset

Severity = Literal["error", "warning", "info"]
TARGETS = ("tensorrt",)
_DEFAULT_DOMAINS = ("", "ai.onnx")
_INT32 = np.iinfo(np.int32)
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


@dataclass
class LintReport:
    target: str
    source: str
    opset: int
    nodes: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        infos = len(self.findings) - len(self.errors) - len(self.warnings)
        verdict = "TensorRT should parse it" if self.ok else "TensorRT will not build it as it is"
        return (f"{self.source}: {len(self.errors)} error(s), {len(self.warnings)} warning(s), {infos} note(s) "
                f"for {self.target} ({self.nodes} nodes, opset {self.opset}); {verdict}")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "source": self.source, "opset": self.opset, "nodes": self.nodes,
                "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [f.to_dict() for f in self.findings]}


def label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type} -> {node.output[0] if node.output else '?'}"


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _walk(nodes: Any) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _walk(sub.node)


class _Context:
    """The main graph's index plus constant values (initializers and Constant nodes) by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.index: GraphIndex = index_graph(model)

    def constant(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        init = self.index.initializers.get(name)
        if init is not None:
            return onnx.numpy_helper.to_array(init)
        node = self.index.producer.get(name)
        return constant_array(node) if node is not None and node.op_type == "Constant" else None

    def producer_op(self, name: str) -> str:
        node = self.index.producer.get(name)
        return node.op_type if node is not None else ""


Rule = Callable[[onnx.NodeProto, _Context], list[Finding]]


def _finding(node: onnx.NodeProto, rule: str, severity: Severity, why: str, fix: str) -> Finding:
    return Finding(rule, severity, label(node), node.op_type, why, fix)


def _opset_findings(model: onnx.ModelProto) -> list[Finding]:
    lo, hi = support.OPSET_RANGE
    found = []
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS and not lo <= entry.version <= hi:
            found.append(Finding(
                "opset", "error", "(model)", "", f"ONNX opset {entry.version}: TensorRT 10 parses opsets {lo}-{hi}",
                "re-export with a supported opset: `deploykit export MODEL --opset 18 -o model.onnx`"))
    return found


def _domain_and_op(node: onnx.NodeProto) -> list[Finding]:
    if node.domain not in _DEFAULT_DOMAINS:
        fix = support.CUSTOM_DOMAIN_FIXES.get(node.domain, support.PLUGIN_FIX)
        return [_finding(node, "custom-domain", "error",
                         f"{node.domain}::{node.op_type} is not a standard ONNX operator; TensorRT's parser "
                         "needs a plugin for it", fix)]
    if node.op_type in support.UNPOOLING_OPS:
        return []  # reported by the unpooling rule, which knows what deploykit can rewrite
    if node.op_type in support.UNSUPPORTED:
        return [_finding(node, "unsupported-op", "error",
                         f"TensorRT's ONNX parser does not support {node.op_type}",
                         support.UNSUPPORTED_FIXES.get(node.op_type, support.REPLACE_FIX))]
    if node.op_type not in support.SUPPORTED:
        return [_finding(node, "unknown-op", "warning",
                         f"{node.op_type} is not in TensorRT 10.15's operator table (newer than the parser?)",
                         "check the installed TensorRT's operators.md; else replace the layer in PyTorch")]
    return []


def _pool_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    attrs = _attrs(node)
    found = []
    if len(attrs.get("kernel_shape", [0, 0])) not in (2, 3):
        found.append(_finding(node, "pool-rank", "error", "TensorRT pools 2-D or 3-D inputs only",
                              "use a 2-D pool in PyTorch (a 1-D signal as height 1)"))
    if any(d != 1 for d in attrs.get("dilations", [])):
        found.append(_finding(node, "pool-dilation", "error",
                              f"{node.op_type} with dilations {list(attrs['dilations'])}: TensorRT needs them "
                              "empty or all ones", "use dilation=1 pooling in the PyTorch model"))
    return found


def _resize_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    attrs = _attrs(node)
    found = []
    mode = attrs.get("mode", "nearest")
    if mode not in support.RESIZE_MODES:
        found.append(_finding(node, "resize-mode", "error", f"Resize mode {mode!r}: TensorRT supports "
                              f"{', '.join(support.RESIZE_MODES)}",
                              "use mode='bilinear' (or 'nearest') in F.interpolate and re-export"))
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    if transform not in support.RESIZE_TRANSFORMS:
        found.append(_finding(node, "resize-coordinates", "error",
                              f"coordinate_transformation_mode {transform!r}: TensorRT supports "
                              f"{', '.join(support.RESIZE_TRANSFORMS)}",
                              "use F.interpolate with align_corners=False (half_pixel) or True (align_corners)"))
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest not in support.RESIZE_NEAREST_MODES:
        found.append(_finding(node, "resize-nearest-mode", "error", f"nearest_mode {nearest!r} is unsupported",
                              f"use one of {', '.join(support.RESIZE_NEAREST_MODES)}"))
    # The parser's Resize importer never reads antialias or keep_aspect_ratio_policy (onnx-tensorrt
    # onnxOpImporters.cpp, DEFINE_BUILTIN_OP_IMPORTER(Resize)): the engine builds and resizes without them.
    if attrs.get("antialias", 0):
        found.append(_finding(node, "resize-antialias", "warning", "TensorRT's Resize has no antialiasing: the "
                              "parser ignores it, so the engine's output differs from PyTorch's",
                              "use F.interpolate(..., antialias=False) and re-export"))
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        found.append(_finding(node, "resize-aspect", "warning", f"keep_aspect_ratio_policy {policy!r}: TensorRT "
                              "supports 'stretch' only and the parser ignores the policy, so the engine stretches",
                              "resize to an explicit size in the PyTorch model"))
    if ctx.producer_op(node.input[0]) == "DequantizeLinear":
        found.append(_finding(node, "int8-resize", "info",
                              "TensorRT has no INT8 Resize: this one runs in float between Q/DQ reformats "
                              "(NVIDIA/TensorRT#2976)",
                              "keep the Resize out of INT8 quantization (the precision pass can exclude it by "
                              "name or op type)"))
    return found


def _qdq_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    """onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.12+): DequantizeLinear of UINT8 data is refused
    (checkNotInvalidType(inputs.at(0), {"UINT8"})), as are nonzero zero points and a constant scale that is not all
    positive ("Scale coefficients must all be positive", kINVALID_NODE). A UINT8 QuantizeLinear (a UINT8 zero
    point, or none: the ONNX default) parses with a warning and becomes INT8 ("Defaulting to INT8 instead")."""
    found = []
    uint8_fix = "quantize with deploykit's calibration (`build-engine --int8`: symmetric INT8 Q/DQ)"
    zero = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    data = ctx.constant(node.input[0])
    unsigned_q = node.op_type == "QuantizeLinear" and "output_dtype" not in _attrs(node) and (
        zero is None or zero.dtype == np.uint8)
    # A QuantizeLinear's output is INT8 in TensorRT's network whatever ONNX declares; any other UINT8 data is refused.
    uint8_data = (data is not None and data.dtype == np.uint8) or (
        ctx.index.types.get(node.input[0]) == TensorProto.UINT8 and ctx.producer_op(node.input[0]) != "QuantizeLinear")
    if node.op_type == "DequantizeLinear" and uint8_data:
        found.append(_finding(node, "qdq-uint8", "error",
                              "DequantizeLinear of UINT8 data (ONNX Runtime's QUInt8): TensorRT's parser refuses it",
                              uint8_fix))
    elif zero is not None and np.any(zero != 0):
        found.append(_finding(node, "qdq-zero-point", "error",
                              "asymmetric quantization (nonzero zero point): TensorRT requires zero points of 0",
                              "recalibrate with deploykit (`build-engine --int8`), which writes symmetric Q/DQ"))
    elif unsigned_q:
        found.append(_finding(node, "qdq-uint8", "warning",
                              "UINT8 quantization: TensorRT quantizes to INT8 instead, so it keeps negatives and "
                              "saturates at 127 where ONNX Runtime clamps at 0 and 255", uint8_fix))
    scale = ctx.constant(node.input[1]) if len(node.input) > 1 else None
    # NvInfer.h IQuantizeLayer (release/10.16 l.5558): "Activations cannot be quantized per-channel."
    if node.op_type == "QuantizeLinear" and scale is not None and scale.size > 1 and data is None:
        found.append(_finding(node, "qdq-activation-per-channel", "error",
                              f"per-channel quantization ({scale.size} scales) of an activation: TensorRT quantizes "
                              "per channel only weights", "quantize activations per tensor (one scale); "
                              "deploykit's `build-engine --int8` does"))
    if scale is not None and scale.dtype.kind == "f" and not np.all(scale > 0):
        found.append(_finding(node, "qdq-scale", "error",
                              "a scale that is zero or negative: TensorRT's parser needs all scales positive",
                              "recalibrate with deploykit (`build-engine --int8`), which floors every scale"))
    axis = int(_attrs(node).get("axis", 1))
    weights_of = {c.op_type for c, pos in ctx.index.consumers.get(node.output[0], [])
                  if c.op_type in ("Conv", "ConvTranspose") and pos == 1}
    if node.op_type == "DequantizeLinear" and weights_of and scale is not None and scale.size > 1 and axis != 0:
        what = ("convolution weights per output channel (axis 0)" if "Conv" in weights_of else
                "ConvTranspose weights per input channel (axis 0 of (C_in, C_out/groups, kH, kW)); axis 1 is "
                "unsupported (NVIDIA/TensorRT#2380, wrong results in #1694)")
        found.append(_finding(node, "qdq-weight-axis", "error",
                              f"per-channel weight scales on axis {axis}: TensorRT quantizes {what}",
                              "recalibrate with deploykit (`build-engine --int8`), which quantizes weights on axis 0"))
    return found


def _conv_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    group = int(_attrs(node).get("group", 1))
    weight = node.input[1] if len(node.input) > 1 else ""
    if group > 1 and ctx.producer_op(weight) == "DequantizeLinear":
        return [_finding(node, "int8-grouped-conv", "info",
                         f"a grouped convolution (group {group}) in INT8: TensorRT often runs depthwise/grouped "
                         "convolutions slower in INT8 than in FP16 (TensorRT issues #1310, #4529)",
                         "measure it; keep it in FP16 by excluding it (name or op type DepthwiseConv) from INT8")]
    return []


def _topk_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    found = []
    if int(_attrs(node).get("sorted", 1)) != 1:
        found.append(_finding(node, "topk-sorted", "error", "TopK with sorted=0: TensorRT needs sorted=1",
                              "use torch.topk(..., sorted=True)"))
    k = ctx.constant(node.input[1]) if len(node.input) > 1 else None
    if k is not None and k.size == 1 and int(k.reshape(-1)[0]) >= support.TOPK_MAX_K:
        found.append(_finding(node, "topk-k", "error",
                              f"TopK with K={int(k.reshape(-1)[0])}: TensorRT needs K < {support.TOPK_MAX_K}",
                              "reduce K, or sort in PyTorch after the engine"))
    return found


def _argmax_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    """The TensorRT ONNX parser imports ArgMax/ArgMin as a TopK layer with k=1 over `axis`, rejecting UINT8 data,
    and casts the indices to INT64 as ONNX declares them (onnx-tensorrt importerUtils.cpp argMinMaxHelper)."""
    if ctx.index.types.get(node.input[0]) == onnx.TensorProto.UINT8:
        return [_finding(node, "argmax-uint8", "error", f"{node.op_type} of UINT8 data: the TensorRT parser rejects "
                         "it", "take the arg-max of the float scores (before any cast to uint8)")]
    readers = [c for c, _ in ctx.index.consumers.get(node.output[0], [])]
    to_bytes = [c for c in readers if c.op_type == "Cast" and _attrs(c).get("to") == TensorProto.UINT8]
    fix = ("fix the Cast after it (see the cast-uint8 error)" if to_bytes else
           "nothing to change here; a uint8 class map must pass through a Cast to float first (`deploykit export "
           "--head argmax` writes ArgMax -> Cast(float) -> Cast(uint8))")
    return [_finding(node, "argmax-topk", "info", f"{node.op_type} becomes a TensorRT TopK layer (k=1) with integer "
                     "indices (INT64, as ONNX declares them); TensorRT converts to UINT8 only from FLOAT or HALF", fix)]


def _cast_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    """NVIDIA/TensorRT include/NvInferRuntimeBase.h, DataType::kUINT8: "kUINT8 conversions are only supported for
    {kFLOAT, kHALF}" (and "not supported for {kINT8, kINT32, kBOOL}"); INT64 indices are refused alike. The rule
    holds both ways: UINT8 converts "to {kFLOAT, kHALF}" only."""
    source = ctx.index.types.get(node.input[0]) if node.input else None
    to = _attrs(node).get("to")
    if source == TensorProto.UINT8 and to not in _UINT8_SOURCES:
        return [_finding(node, "cast-uint8", "error", f"Cast from UINT8 to {TensorProto.DataType.Name(to)}: "
                         "TensorRT converts UINT8 only to FLOAT or HALF (NvInferRuntimeBase.h, kUINT8)",
                         "cast the uint8 tensor to float first (Cast(to=FLOAT)), then to the type needed")]
    if to != TensorProto.UINT8 or source in (None, 0, *_UINT8_SOURCES):
        return []
    kind = TensorProto.DataType.Name(source)
    return [_finding(node, "cast-uint8", "error", f"Cast from {kind} to UINT8: TensorRT converts to UINT8 only "
                     "from FLOAT or HALF (NvInferRuntimeBase.h, kUINT8)",
                     "cast to float first (Cast(to=FLOAT) then Cast(to=UINT8)), or keep the int32 output; "
                     "`deploykit export --head argmax` writes the float route")]


def _misc_rule(node: onnx.NodeProto, ctx: _Context) -> list[Finding]:
    attrs = _attrs(node)
    if node.op_type == "ScatterND" and attrs.get("reduction", "none") != "none":
        return [_finding(node, "scatternd-reduction", "error",
                         f"ScatterND reduction {attrs['reduction']!r}: TensorRT supports 'none' only",
                         "scatter without reduction in the PyTorch model")]
    if node.op_type == "LayerNormalization" and any(o for o in node.output[1:]):
        return [_finding(node, "layernorm-outputs", "error", "LayerNormalization's Mean/InvStdDev outputs are "
                         "unsupported", "use only the normalized output")]
    if node.op_type == "CumSum" and ctx.constant(node.input[1]) is None:
        return [_finding(node, "cumsum-axis", "error", "CumSum's axis must be a build-time constant",
                         "pass a Python int as dim to torch.cumsum")]
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        mode = ctx.constant(node.input[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            return [_finding(node, "dropout-training", "error", "Dropout's training_mode must be a constant False",
                             "export with model.eval()")]
    if node.op_type == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings")
                                          for a in node.attribute):
        return [_finding(node, "constant-kind", "error", "sparse or string Constant values are unsupported",
                         "make it a dense numeric constant")]
    return []


NODE_RULES: dict[str, Rule] = {
    "MaxPool": _pool_rule, "AveragePool": _pool_rule, "LpPool": _pool_rule,
    "Resize": _resize_rule,
    "QuantizeLinear": _qdq_rule, "DequantizeLinear": _qdq_rule,
    "Conv": _conv_rule,
    "TopK": _topk_rule,
    "ArgMax": _argmax_rule, "ArgMin": _argmax_rule,
    "Cast": _cast_rule,
    "ScatterND": _misc_rule, "LayerNormalization": _misc_rule, "CumSum": _misc_rule, "Dropout": _misc_rule,
    "Constant": _misc_rule,
}


def _qdq_placement_findings(model: onnx.ModelProto, ctx: _Context) -> list[Finding]:
    """Q/DQ placements TensorRT will not fuse (deploykit.graph.qdq_lint), for graphs with Q/DQ nodes."""
    if not has_qdq(model):
        return []
    return [_finding(node, rule, severity, why, fix)
            for rule, severity, node, why, fix in qdq_findings(model, ctx.index)]


WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_NOT_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Constant", "Cast", "Shape", "Identity"}


@dataclass(frozen=True)
class FloatRemainder:
    """How the ops of a Q/DQ graph outside its INT8 ones compute: a strongly typed TensorRT network (the only
    kind deploykit builds, and the only kind 11.x has) runs every op in the type its ONNX inputs have: "Every
    tensor in the network has a data type defined in the network following only type inference rules and the
    inputs/operator annotations" (NVIDIA/TensorRT include/NvInfer.h, NetworkDefinitionCreationFlag::kSTRONGLY_TYPED)."""

    fp32: int
    fp16: int
    int8: int  # weighted ops whose data and weights are both dequantized (TensorRT fuses them into INT8)

    @property
    def half(self) -> bool:
        """Every float op outside the INT8 ones computes in float16 (--int8-float fp16)."""
        return bool(self.fp16) and not self.fp32

    @property
    def kind(self) -> str:
        return "fp16" if self.half else "fp32" if not self.fp16 else "mixed"

    def describe(self) -> str:
        runs = {"fp32": f"all {self.fp32} in FP32", "fp16": f"all {self.fp16} in FP16",
                "mixed": f"{self.fp32} in FP32 and {self.fp16} in FP16"}[self.kind]
        return (f"INT8 graph: {self.int8} weighted ops in INT8; the float ops around them run {runs} (a strongly "
                "typed network runs what the ONNX says)")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "fp32_ops": self.fp32, "fp16_ops": self.fp16, "int8_ops": self.int8}


def float_remainder(model: onnx.ModelProto, index: GraphIndex | None = None) -> FloatRemainder | None:
    """The FloatRemainder of a graph with Q/DQ nodes; None for a graph without them."""
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return None
    index = index or index_graph(model)

    def dequantized(name: str) -> bool:
        node = index.producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    counts: dict[int, int] = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    int8 = 0
    for node in model.graph.node:
        if node.op_type in _NOT_COMPUTE or not node.output:
            continue
        if node.op_type in WEIGHTED and len(node.input) > 1 and dequantized(node.input[0]) \
                and dequantized(node.input[1]):
            int8 += 1
            continue
        kind = index.types.get(node.output[0])
        if kind in counts:
            counts[kind] += 1
    return FloatRemainder(counts[TensorProto.FLOAT], counts[TensorProto.FLOAT16], int8)


def _remainder_findings(model: onnx.ModelProto, ctx: _Context) -> list[Finding]:
    remainder = float_remainder(model, ctx.index)
    if remainder is None or not (remainder.fp32 or remainder.fp16):
        return []
    if remainder.half:
        fix = "nothing to do: this is --int8-float fp16"
    else:
        fix = ("this is --int8-float fp32 (deploykit's default; most accurate): `--int8-float fp16` runs them in "
               "FP16, as NVIDIA ModelOpt's default high_precision_dtype does (faster, less accurate), and "
               "`--int8-float auto` with --accuracy-budget picks by measured accuracy")
    return [Finding("int8-float-remainder", "info", "(model)", "", remainder.describe(), fix)]


def _unpooling_findings(model: onnx.ModelProto) -> list[Finding]:
    """MaxUnpool and MaxPool Indices, split into what deploykit's rewrite fixes and what it cannot."""
    found = find_unsupported_unpooling(model)
    if not found:
        return []
    try:
        remaining = {n.name for n in find_unsupported_unpooling(rewrite_unpooling(model))}
    except Exception:  # the rewrite refuses some models (e.g. opset < 13): then nothing is fixable
        remaining = {n.name for n in found}
    findings = []
    for node in found:
        if node.name in remaining:
            findings.append(Finding("unpooling", "error", node.name, node.op_type, node.reason,
                                    "use non-overlapping, unpadded 2-D pools (kernel == stride) so deploykit can "
                                    "rewrite the unpooling, or mask-based unpooling in PyTorch (DeconvNet: "
                                    "--set unpool=mask)"))
        else:
            findings.append(Finding("unpooling", "warning", node.name, node.op_type, node.reason,
                                    "build-engine rewrites it from supported operators (deploykit.graph.unpool); "
                                    "exporting DeconvNet with --set unpool=mask avoids it altogether"))
    return findings


def _tensor_type_findings(ctx: _Context) -> list[Finding]:
    graph = ctx.model.graph
    found = []
    for value in (*graph.input, *graph.output):
        elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
        if elem == TensorProto.DOUBLE:
            found.append(Finding("double", "warning", value.name, "(graph io)", "DOUBLE input/output: TensorRT "
                                 "casts DOUBLE to FLOAT, clamping to +-FLT_MAX", "export the model in float32"))
        elif elem and elem not in support.TENSOR_TYPES:
            found.append(Finding("tensor-type", "error", value.name, "(graph io)",
                                 f"{TensorProto.DataType.Name(elem)} tensors are unsupported by TensorRT",
                                 "use float, int32/int64, int8, uint8 or bool I/O"))
    for init in graph.initializer:
        if init.data_type == TensorProto.INT64 and init.name in ctx.index.consumers:
            found.extend(_int64_range(init, ctx))
    return found


def _int64_range(init: onnx.TensorProto, ctx: _Context) -> list[Finding]:
    values = onnx.numpy_helper.to_array(init)
    if values.size == 0 or (values.min() >= _INT32.min and values.max() <= _INT32.max):
        return []
    users = ctx.index.consumers[init.name]
    if all(node.op_type == "Slice" and pos in (1, 2, 4) for node, pos in users):
        return []  # INT64_MAX "to the end" sentinels: the parser clamps them harmlessly
    names = ", ".join(label(node) for node, _ in users[:3])
    return [Finding("int64-range", "warning", names, users[0][0].op_type,
                    f"INT64 initializer {init.name!r} holds values beyond the int32 range "
                    f"({int(values.min())}..{int(values.max())}); TensorRT before 10 casts INT64 weights to "
                    "INT32 and clamps them, and such values are usually an overflow",
                    "constant-fold the model (deploykit export simplifies with onnxslim) or clamp the value in "
                    "PyTorch")]


def lint_model(model: onnx.ModelProto, *, target: str | None = None, source: str = "model") -> LintReport:
    """Check `model` against `target`'s ONNX support (default: TensorRT); see the module docstring."""
    target = target or TARGETS[0]
    if target not in TARGETS:
        raise InputError(f"unknown lint target {target!r}; choose one of {', '.join(TARGETS)}")
    ctx = _Context(model)
    opset = default_opset(model) or 0
    report = LintReport(target, source, opset, len(model.graph.node))
    report.findings += _opset_findings(model)
    all_nodes = list(_walk(model.graph.node)) + [n for fn in model.functions for n in _walk(fn.node)]
    for node in all_nodes:
        report.findings += _domain_and_op(node)
    for node in model.graph.node:
        rule = NODE_RULES.get(node.op_type)
        if rule is not None and node.domain in _DEFAULT_DOMAINS:
            report.findings += rule(node, ctx)
    report.findings += _qdq_placement_findings(model, ctx)
    report.findings += _remainder_findings(model, ctx)
    report.findings += _unpooling_findings(model)
    report.findings += _tensor_type_findings(ctx)
    order = {"error": 0, "warning": 1, "info": 2}
    report.findings.sort(key=lambda f: order[f.severity])
    return report


def lint_onnx(path: str | os.PathLike[str], *, target: str | None = None) -> LintReport:
    """Load the ONNX file at `path` (external data included) and lint it."""
    return lint_model(read_onnx(path), target=target, source=str(path))
