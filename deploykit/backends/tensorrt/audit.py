"""Precision audit: which precision each layer of a built TensorRT engine runs in, from the engine inspector.

A strongly typed build runs what the ONNX says, but what the ONNX says is easy to get wrong: an "FP16" engine
was 0.00% FP16 after a TensorRT 11 migration (roboflow/rf-detr#1453). This reads
`engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)` (TensorRT "Engine
Inspector"; per-layer types need `config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED`, else the
layers are names only) and gives the share of layers and of FLOPs in each precision.

Layouts (tests/backends/inspector_layouts.py cites the dumps and docs they follow): 10.x lists the I/O names under
"Bindings" and describes each layer tensor with one "Format/Datatype" string ("Row major linear FP32",
"Thirty-two wide channel vectorized row major Int8 format"); 11.x replaces "Bindings" with "I/O Tensors" and
splits the tensor string into "Format" and a data type field ("DataType" in NVIDIA's migration guide, "Datatype"
in the layer-info schema of NVIDIA's own tooling): every key with "datatype" in its name is read, and the
format string as a last resort. A tensor none of whose keys names a type is of unknown format; an engine
whose layers are all of unknown format gets an audit that says so with the keys it saw (`readable` False),
never "0%".
A layer's precision is that of a quantized input when it has one (a Q/DQ-fused INT8 convolution reads INT8 and
may write float), else that of its first floating-point output. Layers whose outputs are int32/int64/bool
(shape computations) are left out of the shares. FLOPs are counted for convolutions, deconvolutions and
matrix multiplies (2 per multiply-accumulate, as TREx's `annotate_convolutions` counts MACs): from a layer's own
Kernel/Groups/Stride/... or, in fused layers, the prefixed ones (a "ConvActPool" layer's ConvKernel, ConvGroups,
ConvStride, whose output is the pooled one, so the convolution's own output size is computed from its input and
padding); a Myelin sub-layer "gemm" from its input dimensions. Layers whose work cannot be read (a "Myelin"
ForeignNode, a "kgen" kernel, a convolution without its fields) are listed in `uncounted`, so a FLOP share is
known to be of the counted FLOPs only. An engine inspected without concrete shapes has FLOP shares only where
its dimensions are static.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploykit.backends.tensorrt.common import import_tensorrt, new_runtime, process_logger
from deploykit.errors import BuildError, CheckFailed, InputError
from deploykit.io.sidecar import read_sidecar

QUANTIZED = ("int8", "fp8", "int4", "fp4")
FLOATING = (*QUANTIZED, "fp16", "bf16", "fp32")
UNKNOWN = "unknown"
OUTLIERS = 5  # layers named per precision (the heaviest)
# word in a format or data type string -> precision; checked in this order ("bfloat16" before "float").
_WORDS = (("bfloat16", "bf16"), ("bf16", "bf16"), ("float8", "fp8"), ("fp8", "fp8"), ("e4m3", "fp8"),
          ("float8e4m3", "fp8"), ("float8e4m3fn", "fp8"), ("e4m3fn", "fp8"), ("float4e2m1", "fp4"), ("e2m1", "fp4"),
          ("int8", "int8"), ("int4", "int4"), ("fp4", "fp4"), ("fp16", "fp16"), ("half", "fp16"),
          ("fp32", "fp32"), ("tf32", "fp32"), ("float", "fp32"), ("int32", "other"), ("int64", "other"),
          ("bool", "other"), ("uint8", "other"))
CONV_KINDS = ("Convolution", "Deconvolution")
# Layer types whose work the inspector does not describe: Myelin regions (10.x "Myelin" ForeignNodes) and
# Myelin-generated kernels (11.x "kgen"; "gemm" is counted from its inputs).
OPAQUE_TYPES = ("myelin", "kgen")


def _type_keys(tensor: Mapping[str, Any]) -> list[str]:
    """The keys of a layer tensor that may name its type: "Format/Datatype", "DataType", "Datatype" (or any other
    key with "type" in it), then "Format" (whose 10.x-style strings and 11.x I/O formats still name the type:
    "Row major linear FP32 format (kLINEAR)")."""
    keys = [k for k in tensor if "type" in k.lower()]
    return keys + [k for k in tensor if k.lower() == "format" and k not in keys]


def tensor_precision(tensor: Mapping[str, Any], used: set[str] | None = None) -> str:
    """The precision of one layer tensor in either layout ("other" for non-float types, "" when unknown);
    `used` collects the keys that gave it."""
    for key in _type_keys(tensor):
        words = set(re.findall(r"[a-z0-9]+", str(tensor[key]).lower()))
        precision = next((p for word, p in _WORDS if word in words), "")
        if precision:
            if used is not None:
                used.add(key)
            return precision
    return ""


def _dims(tensor: Mapping[str, Any]) -> list[int]:
    return [int(d) for d in tensor.get("Dimensions", [])]


def _conv_prefix(layer: Mapping[str, Any]) -> tuple[str, str] | None:
    """(key prefix, kind) of a layer's convolution fields: "" for a convolution layer, "Conv" for a fused
    "ConvActPool" layer (ConvParameterType "Convolution", ConvKernel, ...); None for other layers."""
    kind = str(layer.get("ParameterType") or "")
    if any(k in kind for k in CONV_KINDS):
        return "", kind
    for key, value in layer.items():
        if key.endswith("ParameterType") and key != "ParameterType" and any(k in str(value) for k in CONV_KINDS):
            return key[: -len("ParameterType")], str(value)
    return None


def _ints(value: Any, count: int, default: int) -> list[int]:
    values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * count if value else []
    return values if len(values) == count else [default] * count


def _conv_flops(layer: Mapping[str, Any], prefix: str, kind: str, x: list[int], y: list[int],
                used: set[str]) -> int | None:
    """2 x MACs of a (de)convolution from its fields; None when a field it needs is missing."""
    kernel_key, groups_key = f"{prefix}Kernel", f"{prefix}Groups"
    kernel = [int(k) for k in layer.get(kernel_key) or []]
    if len(x) < 3 or not kernel:
        return None
    used.update(k for k in (kernel_key, groups_key) if k in layer)
    groups = max(int(layer.get(groups_key, 1) or 1), 1)
    maps = int(layer.get(f"{prefix}OutMaps") or (y[1] if len(y) > 1 else 0))
    if maps <= 0:
        return None
    deconvolution = "Deconvolution" in kind or "Deconvolution" in str(layer.get("LayerType", ""))
    if deconvolution:  # every input element meets the whole kernel once per output map
        return 2 * math.prod(x) * maps * math.prod(kernel) // groups
    spatial = len(kernel)
    stride = _ints(layer.get(f"{prefix}Stride"), spatial, 1)
    before = _ints(layer.get(f"{prefix}PrePadding"), spatial, 0)
    after = _ints(layer.get(f"{prefix}PostPadding"), spatial, 0)
    dilation = _ints(layer.get(f"{prefix}Dilation"), spatial, 1)
    if prefix or f"{prefix}Stride" in layer:  # the convolution's own output (a fused pool shrinks the layer's)
        out = [(i + b + a - d * (k - 1) - 1) // s + 1
               for i, b, a, d, k, s in zip(x[2:], before, after, dilation, kernel, stride, strict=False)]
    else:
        out = y[2:]
    if len(out) != spatial or any(o <= 0 for o in out):
        return None
    return 2 * x[0] * maps * math.prod(out) * (x[1] // groups) * math.prod(kernel)


def layer_flops(layer: Mapping[str, Any], used: set[str] | None = None) -> int | None:
    """FLOPs of a convolution, deconvolution or matrix multiply from its inspector entry; 0 for layers that do
    no such work; None when the layer does work the entry does not describe (Myelin, kgen, missing fields).
    Dimensions that are not concrete (-1) give 0: the shares are then of layers, as documented."""
    used = used if used is not None else set()
    kind = str(layer.get("LayerType") or "").lower()
    inputs, outputs = layer.get("Inputs") or [], layer.get("Outputs") or []
    if any(t in kind for t in OPAQUE_TYPES) or str(layer.get("Name", "")).startswith("{ForeignNode"):
        return None
    conv = _conv_prefix(layer)
    matmul = "MatrixMultiply" in str(layer.get("ParameterType") or "") or kind == "gemm"
    if conv is None and not matmul:
        return 0
    if not inputs or not outputs:
        return None
    x, y = _dims(inputs[0]), _dims(outputs[0])
    if any(d <= 0 for d in (*x, *y)):
        return 0
    if conv is not None:
        return _conv_flops(layer, conv[0], conv[1], x, y, used)
    b = _dims(inputs[1]) if len(inputs) > 1 else []
    if len(x) < 2 or len(b) < 2 or any(d <= 0 for d in b):
        return None
    return 2 * math.prod(y) * x[-1]


def layer_precision(layer: Mapping[str, Any], used: set[str] | None = None) -> str:
    """The layer's precision (see the module docstring), "other" for shape layers, UNKNOWN when no tensor of
    the layer names a type deploykit can read."""
    inputs = [tensor_precision(t, used) for t in layer.get("Inputs") or []]
    outputs = [tensor_precision(t, used) for t in layer.get("Outputs") or []]
    if not any((*inputs, *outputs)):
        return UNKNOWN
    quantized = [p for p in inputs if p in QUANTIZED]
    if quantized:
        return quantized[0]
    known = [p for p in outputs if p] or inputs  # a Shape layer reads floats, writes int64: "other"
    floats = [p for p in known if p in FLOATING]
    return floats[0] if floats else "other"


@dataclass(frozen=True)
class PrecisionAudit:
    layout: str  # "10.x" (Bindings) or "11.x" (I/O Tensors)
    detailed: bool  # False: the engine was built without ProfilingVerbosity.DETAILED (layer names only)
    layers: int  # layers with floating-point or unreadable tensors (the shares' denominator)
    shape_layers: int  # layers with only int/bool tensors, left out
    layer_share: Mapping[str, float] = field(default_factory=dict)
    flop_share: Mapping[str, float] = field(default_factory=dict)  # empty when no layer's FLOPs are known
    flops: int = 0
    # the heaviest layers of each precision (at most OUTLIERS each), heaviest first: "name (fp32)"; the ones not
    # in the precision a check asked for are what --require-precision names
    outliers: Sequence[str] = ()
    unknown_layers: int = 0  # layers none of whose tensors names a type deploykit can read
    uncounted: Sequence[str] = ()  # layers doing work whose FLOPs the inspector does not give: "name (LayerType)"
    layer_keys: Sequence[str] = ()  # every per-layer key the inspector gave (for bug reports)
    tensor_keys: Sequence[str] = ()  # every key of the layers' tensors
    keys_used: Sequence[str] = ()  # the keys the precisions and FLOPs were read from

    @property
    def readable(self) -> bool:
        """Whether any layer's precision could be read (False: an inspector format deploykit does not know)."""
        return self.detailed and self.layers > self.unknown_layers

    def share(self, precision: str) -> float:
        """The realised share of `precision`: of FLOPs when they are known, else of layers."""
        shares = self.flop_share if self.flops else self.layer_share
        return float(shares.get(precision, 0.0))

    def format_problem(self) -> str:
        """Why no precision can be read, with the keys the inspector gave; '' when it can."""
        if not self.detailed:
            return (f"{self.layers + self.shape_layers} layers without detail (built without "
                    "ProfilingVerbosity.DETAILED)")
        if self.readable:
            return ""
        return (f"unknown inspector format: none of the {self.layers} layers' tensors names a data type deploykit "
                f"reads (layer keys: {', '.join(self.layer_keys) or 'none'}; tensor keys: "
                f"{', '.join(self.tensor_keys) or 'none'})")

    def describe(self) -> str:
        problem = self.format_problem()
        if problem:
            return f"precision audit unavailable: {problem}"

        def shown(shares: Mapping[str, float]) -> str:
            return ", ".join(f"{k.upper()} {v:.1%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))

        flops = f"; FLOPs: {shown(self.flop_share)}" if self.flops else "; FLOPs: not known (dynamic dimensions)"
        notes = ""
        if self.unknown_layers:
            notes += f"; {_count(self.unknown_layers, 'layer')} of unknown format"
        if self.uncounted:
            notes += (f"; FLOPs not counted for {_count(len(self.uncounted), 'layer')} the inspector does not "
                      f"describe: {', '.join(self.uncounted[:3])}{' ...' if len(self.uncounted) > 3 else ''}")
        return (f"precision audit ({self.layers} layers, inspector {self.layout} JSON): "
                f"layers {shown(self.layer_share)}{flops}{notes}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("outliers", "uncounted", "layer_keys", "tensor_keys", "keys_used"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrecisionAudit:
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shares(weights: Mapping[str, int], total: int) -> dict[str, float]:
    return {k: v / total for k, v in weights.items() if v} if total else {}


def _keys(layers: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    layer_keys = sorted({k for layer in layers for k in layer})
    tensor_keys = sorted({k for layer in layers for side in ("Inputs", "Outputs")
                          for t in layer.get(side) or [] if isinstance(t, Mapping) for k in t})
    return tuple(layer_keys), tuple(tensor_keys)


def parse_engine_information(text: str) -> PrecisionAudit:
    """A PrecisionAudit from `get_engine_information(LayerInformationFormat.JSON)` of TensorRT 10.x or 11.x."""
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise BuildError(f"the engine inspector returned no JSON ({exc}): {text[:80]!r}") from exc
    layout = "11.x" if "I/O Tensors" in info else "10.x"
    raw = info.get("Layers", [])
    if not all(isinstance(layer, Mapping) for layer in raw):
        return PrecisionAudit(layout, False, len(raw), 0)
    counts: dict[str, int] = {}
    flops: dict[str, int] = {}
    ranked: list[tuple[int, str, str]] = []
    uncounted: list[str] = []
    used: set[str] = set()
    shape_layers = 0
    for layer in raw:
        precision = layer_precision(layer, used)
        if precision == "other":
            shape_layers += 1
            continue
        counts[precision] = counts.get(precision, 0) + 1
        cost = layer_flops(layer, used)
        if cost is None:
            uncounted.append(f"{layer.get('Name', '?')} ({layer.get('LayerType', '?')})")
            cost = 0
        flops[precision] = flops.get(precision, 0) + cost
        ranked.append((cost, str(layer.get("Name", "?")), precision))
    total_flops = sum(flops.values())
    outliers = _heaviest(ranked)
    layer_keys, tensor_keys = _keys(raw)
    return PrecisionAudit(layout, True, sum(counts.values()), shape_layers, _shares(counts, sum(counts.values())),
                          _shares(flops, total_flops), total_flops, tuple(outliers), counts.get(UNKNOWN, 0),
                          tuple(uncounted), layer_keys, tensor_keys, tuple(sorted(used)))


def _heaviest(ranked: list[tuple[int, str, str]]) -> list[str]:
    """The OUTLIERS heaviest layers of each precision, heaviest first, as "name (precision)"."""
    taken: dict[str, int] = {}
    found = []
    for _, name, precision in sorted(ranked, key=lambda r: -r[0]):
        if taken.get(precision, 0) < OUTLIERS:
            taken[precision] = taken.get(precision, 0) + 1
            found.append(f"{name} ({precision})")
    return found


def engine_information(trt: Any, engine: Any, context: Any | None = None) -> str:
    """The inspector's raw JSON of a deserialized engine; `context` (with input shapes set) makes dynamic
    dimensions concrete. `create_engine_inspector`, `execution_context` and `get_engine_information` are the
    same in 10.x and 11.x."""
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


@dataclass(frozen=True)
class Inspection:
    raw: str  # the inspector's JSON, as TensorRT gave it
    audit: PrecisionAudit


def inspect_plan(trt: Any, logger: Any, plan: bytes, shapes: Mapping[str, Sequence[int]], *,
                 version_compatible: bool) -> Inspection:
    """Deserialize `plan` as the runner does (host code allowed for version-compatible plans), set `shapes` on
    a context so dynamic dimensions are concrete, and inspect it. BuildError when it cannot be deserialized."""
    mark = logger.mark()
    runtime = new_runtime(trt, logger, mark, version_compatible=version_compatible)
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context() if engine is not None else None
    if engine is None or context is None:
        raise BuildError(f"the engine could not be deserialized for inspection ({logger.said(mark)})")
    for name, shape in shapes.items():
        context.set_input_shape(name, tuple(shape))
    raw = engine_information(trt, engine, context)
    return Inspection(raw, parse_engine_information(raw))


def inspect_artifact(path: str | os.PathLike[str]) -> Inspection:
    """Inspect a deploykit-built engine at its profile's opt shapes (from its sidecar)."""
    sidecar = read_sidecar(path)
    if sidecar is None:
        raise InputError(f"{path} has no sidecar; only engines built by deploykit can be inspected here")
    trt = import_tensorrt()
    opt = {name: r["opt"] for name, r in (sidecar.build_options.get("profile") or {}).items()}
    return inspect_plan(trt, process_logger(trt), Path(path).read_bytes(), opt,
                        version_compatible=bool(sidecar.build_options.get("version_compatible")))


def require_precision(audit: PrecisionAudit | None, precision: str, required: float, source: str) -> None:
    """CheckFailed unless at least `required` (0-1) of the engine runs in `precision` (of FLOPs when known)."""
    if audit is None or not audit.readable:
        why = audit.format_problem() if audit is not None else "the engine could not be inspected"
        raise BuildError(f"--require-precision {required}: the engine inspector gave no per-layer precision for "
                         f"{source} ({why}), so the {precision} share cannot be checked")
    got = audit.share(precision)
    if got < required:
        of = "FLOPs" if audit.flops else "layers"
        elsewhere = [o for o in audit.outliers if not o.endswith(f"({precision})")][:OUTLIERS]
        others = f"; largest layers in another precision: {', '.join(elsewhere)}" if elsewhere else ""
        unknown = (f"; {_count(audit.unknown_layers, 'layer')} of unknown inspector format count against it"
                   if audit.unknown_layers else "")
        raise CheckFailed(f"the engine from {source} runs {got:.1%} of its {of} in {precision.upper()}, below "
                          f"--require-precision {required:g}{others}{unknown}; check the {precision} graph "
                          "(`deploykit lint`) and what it keeps in higher precision")
