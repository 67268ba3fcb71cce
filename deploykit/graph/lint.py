"""`deploykit lint --target tensorrt`: what TensorRT's ONNX parser will reject or mishandle, found without a GPU.

The rules follow onnx-tensorrt's docs/operators.md for TensorRT 10.15 (opsets 9-24): the operators it does
not support, their documented restrictions (MaxPool's Indices output, Resize modes and coordinate
transforms, pooling dilations, Q/DQ zero points ...), plus what deploykit knows costs accuracy or speed
(INT8 around Resize, depthwise convolutions in INT8). Each finding names the node, says why, and says which
fix deploykit offers. Severity: "error" (parsing or building fails), "warning" (builds, but may be wrong or
lossy), "info" (builds and runs; a performance note). The per-operator rules are in deploykit.graph.lint_nodes
and lint_qdq (QuantizeLinear/DequantizeLinear); this module holds the graph-wide ones (opsets, domains, Q/DQ
placement, unpooling, tensor types) and runs them all.
Operator and per-node rules apply inside If branches, Loop/Scan bodies and model-local functions too (TensorRT
imports them node by node); a call of a local function is not a custom op.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from deploykit.errors import InputError
from deploykit.graph import trt_support as support
from deploykit.graph.lint_nodes import NODE_RULES, Context, Finding, finding, label
from deploykit.graph.lint_qdq import QDQ_RULES
from deploykit.graph.qdq_fusion import has_qdq, low_precision, qdq_findings
from deploykit.graph.tensors import GraphIndex, conv_channels, index_graph
from deploykit.graph.unpool import find_unsupported_unpooling, rewrite_unpooling
from deploykit.io.model_files import read_onnx
from deploykit.io.onnx_graph_checks import default_opset

TARGETS = ("tensorrt",)
_INT32 = np.iinfo(np.int32)
_DEFAULT_DOMAINS = ("", "ai.onnx")




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






def _walk(nodes: Any, ctx: Context) -> Iterator[onnx.NodeProto]:
    """Every node TensorRT's parser imports, including those inside If/Loop/Scan bodies: of an If whose condition
    is a build-time constant only the branch it selects (onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.2595-2599:
    "For constant conditions, parse only the selected subgraph")."""
    for node in nodes:
        yield node
        condition = ctx.constant(node.input[0]) if node.op_type == "If" and node.input else None
        taken = None if condition is None or condition.size != 1 else \
            ("then_branch" if bool(condition.reshape(-1)[0]) else "else_branch")
        for attr in node.attribute:
            if taken is not None and attr.name != taken:
                continue
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _walk(sub.node, ctx)








def _opset_findings(model: onnx.ModelProto) -> list[Finding]:
    lo, hi = support.OPSET_RANGE
    found = []
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS and not lo <= entry.version <= hi:
            found.append(Finding(
                "opset", "error", "(model)", "", f"ONNX opset {entry.version}: TensorRT 10 parses opsets {lo}-{hi}",
                "re-export with a supported opset: `deploykit export MODEL --opset 18 -o model.onnx`"))
    return found


# onnx-tensorrt 10.1-GA (commit 96e7811) ModelImporter.cpp l.153-168, parseNode: a node is dispatched on its op_type
# alone, "if (opImporters.count(nodeType))" first, "else if (ctx->localFunctions().count(nodeType))" second
# (functions registered by name, without their domain: importLocalFunctions l.433-439), else the plugin fallback.
def _function_call(node: onnx.NodeProto, functions: dict[str, onnx.FunctionProto]) -> list[Finding]:
    function = functions[node.op_type]
    if node.op_type in support.SUPPORTED or node.op_type in support.UNSUPPORTED:
        return [finding(node, "function-name", "error",
                         f"model-local function {node.domain}::{node.op_type} is named like the standard operator "
                         f"{node.op_type}: TensorRT's parser looks functions up by name after its own operators, "
                         "so it would import the standard operator instead of the function's body",
                         "rename the function (the module class in PyTorch), or inline it: "
                         "onnx.inliner.inline_local_functions")]
    # onnx-tensorrt 10.1-GA onnxOpImporters.cpp l.6461-6464, LocalFunctionImporter: ASSERT_NODE(node.input().size()
    # == function.input().size(), "LocalFunction has an unexpected number of inputs!", ..., kINVALID_NODE).
    if len(node.input) != len(function.input):
        return [finding(node, "function-inputs", "error",
                         f"the call passes {len(node.input)} inputs to function {node.op_type}, which declares "
                         f"{len(function.input)}; TensorRT's parser requires exactly as many (optional ones too)",
                         "inline the function (onnx.inliner.inline_local_functions) or pass every input")]
    return []


def _domain_and_op(node: onnx.NodeProto, functions: dict[str, onnx.FunctionProto]) -> list[Finding]:
    if node.op_type in functions and node.domain == functions[node.op_type].domain:
        return _function_call(node, functions)
    if node.domain not in _DEFAULT_DOMAINS:
        fix = support.CUSTOM_DOMAIN_FIXES.get(node.domain, support.PLUGIN_FIX)
        return [finding(node, "custom-domain", "error",
                         f"{node.domain}::{node.op_type} is not a standard ONNX operator; TensorRT's parser "
                         "needs a plugin for it", fix)]
    if node.op_type in support.UNPOOLING_OPS:
        return []  # reported by the unpooling rule, which knows what deploykit can rewrite
    if node.op_type in support.UNSUPPORTED:
        return [finding(node, "unsupported-op", "error",
                         f"TensorRT's ONNX parser does not support {node.op_type}",
                         support.UNSUPPORTED_FIXES.get(node.op_type, support.REPLACE_FIX))]
    if node.op_type not in support.SUPPORTED:
        return [finding(node, "unknown-op", "warning",
                         f"{node.op_type} is not in TensorRT 10.15's operator table (newer than the parser?)",
                         "check the installed TensorRT's operators.md; else replace the layer in PyTorch")]
    return []




















def _qdq_placement_findings(model: onnx.ModelProto, ctx: Context) -> list[Finding]:
    """Q/DQ placements TensorRT will not fuse (deploykit.graph.qdq_fusion), for graphs with Q/DQ nodes."""
    if not has_qdq(model):
        return []
    return [finding(node, rule, severity, why, fix)
            for rule, severity, node, why, fix in qdq_findings(model, ctx.index)]


_NOT_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Constant", "Cast", "Shape", "Identity"}


@dataclass(frozen=True)
class FloatRemainder:
    """How the ops of a Q/DQ graph outside its INT8 ones compute: a strongly typed TensorRT network (the only
    kind deploykit builds, and the only kind 11.x has) runs every op in the type its ONNX inputs have: "Every
    tensor in the network has a data type defined in the network following only type inference rules and the
    inputs/operator annotations" (NVIDIA/TensorRT include/NvInfer.h, NetworkDefinitionCreationFlag::kSTRONGLY_TYPED)."""

    fp32: int
    fp16: int
    # weighted ops with dequantized weights, by how they compute (qdq_fusion.low_precision: "INT8", "INT4
    # weights only" ...): a graph quantized weight-only to INT4 read "INT8 graph: 0 weighted ops in INT8"
    quantized: dict[str, int] = field(default_factory=dict)

    @property
    def int8(self) -> int:
        """Weighted ops whose data and weights are both dequantized from INT8 (TensorRT fuses them into INT8)."""
        return self.quantized.get("INT8", 0)

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
        quantized = "; ".join(_quantized_ops(kind, count) for kind, count in sorted(self.quantized.items()))
        return (f"Q/DQ graph: weighted ops quantized: {quantized or 'none'}; the float ops around them run {runs} "
                "(a strongly typed network runs what the ONNX says)")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "fp32_ops": self.fp32, "fp16_ops": self.fp16, "int8_ops": self.int8,
                "quantized_ops": dict(self.quantized)}


def _quantized_ops(kind: str, count: int) -> str:
    """'3 in INT8', '2 with INT4 weights only (computing in float)', '1 with INT8 data, INT4 weights'."""
    if " " not in kind:
        return f"{count} in {kind}"
    return f"{count} with {kind}" + (" (computing in float)" if kind.endswith(" only") else "")


def float_remainder(model: onnx.ModelProto, index: GraphIndex | None = None) -> FloatRemainder | None:
    """The FloatRemainder of a graph with Q/DQ nodes; None for a graph without them."""
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return None
    index = index or index_graph(model)
    counts: dict[int, int] = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    quantized: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in _NOT_COMPUTE or not node.output:
            continue
        low = low_precision(index, node)
        if low is not None:
            quantized[low] += 1
            if " only" not in low:
                continue  # computes in its quantized type; a weight-only op computes in float: counted below too
        kind = index.types.get(node.output[0])
        if kind in counts:
            counts[kind] += 1
    return FloatRemainder(counts[TensorProto.FLOAT], counts[TensorProto.FLOAT16], dict(quantized))


def _remainder_findings(model: onnx.ModelProto, ctx: Context) -> list[Finding]:
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


def _channel_findings(model: onnx.ModelProto) -> list[Finding]:
    """An input whose channel axis the ONNX leaves dynamic, read by a convolution: NVIDIA/TensorRT include/NvInfer.h
    addConvolutionNd (v10.16 l.8913, v11.1 l.9050): "It is an error to specify a wildcard value for the 'C' dimension
    of the input tensor", whatever the profile. build-engine fixes the axis (shapes.pin_channels): a warning."""
    found = []
    channels = conv_channels(model)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in channels and len(dims) > 1 and not dims[1].dim_value:
            count, conv = channels[value.name]
            found.append(Finding("dynamic-channels", "warning", value.name, "(graph io)",
                                 f"input {value.name!r} leaves its channel axis dynamic: TensorRT refuses a "
                                 f"convolution over a dynamic channel count (its first, {conv}, reads {count})",
                                 f"build-engine fixes the axis to {count}; for other TensorRT tools, export with a "
                                 "fixed channel axis (`deploykit export` does)"))
    return found


def _tensor_type_findings(ctx: Context) -> list[Finding]:
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
    return found + _uint8_inside(ctx)


# Readers of a UINT8 tensor that other rules judge: Cast (cast-uint8), DequantizeLinear (qdq-uint8), ArgMax/ArgMin
# (argmax-uint8), GridSample (gridsample-type).
_UINT8_JUDGED = {"Cast", "DequantizeLinear", "ArgMax", "ArgMin", "GridSample"}


def _uint8_inside(ctx: Context) -> list[Finding]:
    """UINT8 only at the network's edges: NVIDIA/TensorRT include/NvInferRuntimeBase.h, DataType::kUINT8 (v10.16
    l.164-167, v11.1 l.167-170): "Use the IdentityLayer to convert kUINT8 network-level inputs to {kFLOAT, kHALF}
    prior to use with other TensorRT layers, or to convert intermediate output before kUINT8 network-level outputs
    from {kFLOAT, kHALF} to kUINT8"; onnx-tensorrt docs/operators.md (10.1-GA l.13): "UINT8 is only supported as
    network input or output tensor types". A UINT8 tensor may feed a Cast (to float) and nothing else; a
    QuantizeLinear's UINT8 output is INT8 in TensorRT's network, and Q/DQ zero points are weights."""
    index = ctx.index
    found = []
    for name, kind in index.types.items():
        if kind != TensorProto.UINT8 or ctx.producer_op(name) == "QuantizeLinear":
            continue
        readers = {label(node): node for node, position in index.consumers.get(name, [])
                   if node.op_type not in _UINT8_JUDGED and not (node.op_type == "QuantizeLinear" and position == 2)}
        for node in readers.values():
            found.append(finding(node, "uint8-inside", "error",
                                 f"{node.op_type} reads the UINT8 tensor {name!r}: TensorRT takes UINT8 only as a "
                                 "network input or output, converted to or from float by a Cast",
                                 "cast the uint8 tensor to float first (Cast(to=FLOAT)), or compute in float and cast "
                                 "to uint8 last"))
    return found


def _int64_range(init: onnx.TensorProto, ctx: Context) -> list[Finding]:
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
    ctx = Context(model)
    opset = default_opset(model) or 0
    report = LintReport(target, source, opset, len(model.graph.node))
    report.findings += _opset_findings(model)
    # TensorRT's parser imports If branches, Loop/Scan bodies (parseGraph) and local functions' bodies node by node
    # as it does the main graph, so every rule applies inside them too.
    all_nodes = list(_walk(model.graph.node, ctx)) + [n for fn in model.functions for n in _walk(fn.node, ctx)]
    functions = {fn.name: fn for fn in model.functions}
    for node in all_nodes:
        report.findings += _domain_and_op(node, functions)
    for node in all_nodes:
        rule = NODE_RULES.get(node.op_type) or QDQ_RULES.get(node.op_type)
        if rule is not None and node.domain in _DEFAULT_DOMAINS:
            report.findings += rule(node, ctx)
    report.findings += _qdq_placement_findings(model, ctx)
    report.findings += _remainder_findings(model, ctx)
    report.findings += _unpooling_findings(model)
    report.findings += _tensor_type_findings(ctx)
    report.findings += _channel_findings(model)
    order = {"error": 0, "warning": 1, "info": 2}
    report.findings.sort(key=lambda f: order[f.severity])
    return report


def lint_onnx(path: str | os.PathLike[str], *, target: str | None = None) -> LintReport:
    """Load the ONNX file at `path` (external data included) and lint it."""
    return lint_model(read_onnx(path), target=target, source=str(path))
