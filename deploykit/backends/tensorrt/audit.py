"""Precision audit: which precision each layer of a built TensorRT engine runs in, from the engine inspector.

A strongly typed build runs what the ONNX says, but what the ONNX says is easy to get wrong: an "FP16" engine
was 0.00% FP16 after a TensorRT 11 migration (roboflow/rf-detr#1453). This reads
`engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)` (TensorRT "Engine
Inspector"; per-layer types need `config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED`, else the
layers are names only) and gives the share of layers and of FLOPs in each precision.

Two JSON layouts exist ("Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"): 10.x lists the I/O
names under "Bindings" and describes each layer tensor with one "Format/Datatype" string ("Row major linear
FP32", "Channel major FP16 format where channel % 8 == 0"); 11.x replaces "Bindings" with "I/O Tensors"
(objects with Name, IOMode, DataType, ...) and splits the tensor string into "Format" and a data type field.
A layer's precision is that of a quantized input when it has one (a Q/DQ-fused INT8 convolution reads INT8 and
may write float), else that of its first floating-point output. Layers whose outputs are int32/int64/bool
(shape computations) are left out of the shares. FLOPs are counted for convolutions, deconvolutions and
matrix multiplies (2 per multiply-accumulate, as TREx's `annotate_convolutions` counts MACs), from the layer's
dimensions; an engine inspected without concrete shapes has FLOP shares only where its dimensions are static.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from deploykit.errors import BuildError, CheckFailed

QUANTIZED = ("int8", "fp8", "int4", "fp4")
FLOATING = (*QUANTIZED, "fp16", "bf16", "fp32")
# word in a format or data type string -> precision; checked in this order ("bfloat16" before "float").
_WORDS = (("bfloat16", "bf16"), ("bf16", "bf16"), ("float8", "fp8"), ("fp8", "fp8"), ("e4m3", "fp8"),
          ("int8", "int8"), ("int4", "int4"), ("fp4", "fp4"), ("fp16", "fp16"), ("half", "fp16"),
          ("fp32", "fp32"), ("tf32", "fp32"), ("float", "fp32"), ("int32", "other"), ("int64", "other"),
          ("bool", "other"), ("uint8", "other"))


def tensor_precision(tensor: Mapping[str, Any]) -> str:
    """The precision of one layer tensor in either layout ("other" for non-float types, "" when unknown)."""
    text = " ".join(str(tensor.get(k, "")) for k in ("DataType", "Datatype", "Format/Datatype"))
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    return next((precision for word, precision in _WORDS if word in words), "")


def _dims(tensor: Mapping[str, Any]) -> list[int]:
    return [int(d) for d in tensor.get("Dimensions", [])]


def layer_flops(layer: Mapping[str, Any]) -> int:
    """FLOPs of a convolution, deconvolution or matrix multiply from its inspector entry; 0 for others or when a
    dimension is not concrete (-1)."""
    kind = str(layer.get("ParameterType") or layer.get("LayerType") or "")
    inputs, outputs = layer.get("Inputs") or [], layer.get("Outputs") or []
    if not inputs or not outputs:
        return 0
    x, y = _dims(inputs[0]), _dims(outputs[0])
    if any(d <= 0 for d in (*x, *y)):
        return 0
    if "Convolution" in kind or "Deconvolution" in kind:
        kernel = [int(k) for k in layer.get("Kernel", [])]
        groups = max(int(layer.get("Groups", 1) or 1), 1)
        if len(x) < 3 or not kernel:
            return 0
        if "Deconvolution" in kind or "Deconvolution" in str(layer.get("LayerType", "")):
            return 2 * math.prod(x) * y[1] * math.prod(kernel) // groups
        return 2 * math.prod(y) * x[1] * math.prod(kernel) // groups
    if "MatrixMultiply" in kind and len(inputs) >= 2:
        b = _dims(inputs[1])
        if len(x) >= 2 and len(b) >= 2 and all(d > 0 for d in b):
            return 2 * math.prod(y) * x[-1]
    return 0


def layer_precision(layer: Mapping[str, Any]) -> str:
    inputs = [tensor_precision(t) for t in layer.get("Inputs") or []]
    outputs = [tensor_precision(t) for t in layer.get("Outputs") or []]
    quantized = [p for p in inputs if p in QUANTIZED]
    if quantized:
        return quantized[0]
    floats = [p for p in (outputs or inputs) if p in FLOATING]  # a Shape layer reads floats, writes int64
    return floats[0] if floats else "other"


@dataclass(frozen=True)
class PrecisionAudit:
    layout: str  # "10.x" (Bindings) or "11.x" (I/O Tensors)
    detailed: bool  # False: the engine was built without ProfilingVerbosity.DETAILED (layer names only)
    layers: int  # layers with floating-point tensors (the shares' denominator)
    shape_layers: int  # layers with only int/bool tensors, left out
    layer_share: Mapping[str, float] = field(default_factory=dict)
    flop_share: Mapping[str, float] = field(default_factory=dict)  # empty when no layer's FLOPs are known
    flops: int = 0
    outliers: Sequence[str] = ()  # the heaviest layers not in the engine's main precision: "name (fp32)"

    def share(self, precision: str) -> float:
        """The realised share of `precision`: of FLOPs when they are known, else of layers."""
        shares = self.flop_share if self.flops else self.layer_share
        return float(shares.get(precision, 0.0))

    def describe(self) -> str:
        if not self.detailed:
            return (f"precision audit unavailable: {self.layers + self.shape_layers} layers without detail "
                    "(built without ProfilingVerbosity.DETAILED)")

        def shown(shares: Mapping[str, float]) -> str:
            return ", ".join(f"{k.upper()} {v:.1%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))

        flops = f"; FLOPs: {shown(self.flop_share)}" if self.flops else "; FLOPs: not known (dynamic dimensions)"
        return (f"precision audit ({self.layers} layers, inspector {self.layout} JSON): "
                f"layers {shown(self.layer_share)}{flops}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outliers"] = list(self.outliers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrecisionAudit:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _shares(weights: Mapping[str, int], total: int) -> dict[str, float]:
    return {k: v / total for k, v in weights.items() if v} if total else {}


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
    shape_layers = 0
    for layer in raw:
        precision = layer_precision(layer)
        if precision == "other":
            shape_layers += 1
            continue
        counts[precision] = counts.get(precision, 0) + 1
        cost = layer_flops(layer)
        flops[precision] = flops.get(precision, 0) + cost
        ranked.append((cost, str(layer.get("Name", "?")), precision))
    total_flops = sum(flops.values())
    main = max(flops if total_flops else counts, key=lambda k: (flops if total_flops else counts)[k], default="")
    outliers = [f"{name} ({p})" for _, name, p in sorted(ranked, key=lambda r: -r[0]) if p != main][:5]
    return PrecisionAudit(layout, True, sum(counts.values()), shape_layers, _shares(counts, sum(counts.values())),
                          _shares(flops, total_flops), total_flops, outliers)


def inspect_engine(trt: Any, engine: Any, context: Any | None = None) -> PrecisionAudit:
    """Audit a deserialized engine; `context` (with input shapes set) makes dynamic dimensions concrete.
    `create_engine_inspector`, `execution_context` and `get_engine_information` are the same in 10.x and 11.x."""
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    return parse_engine_information(str(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))


def require_precision(audit: PrecisionAudit | None, precision: str, required: float, source: str) -> None:
    """CheckFailed unless at least `required` (0-1) of the engine runs in `precision` (of FLOPs when known)."""
    if audit is None or not audit.detailed:
        raise BuildError(f"--require-precision {required}: the engine inspector gave no per-layer precision for "
                         f"{source}, so the {precision} share cannot be checked")
    got = audit.share(precision)
    if got < required:
        of = "FLOPs" if audit.flops else "layers"
        others = f"; largest layers in another precision: {', '.join(audit.outliers)}" if audit.outliers else ""
        raise CheckFailed(f"the engine from {source} runs {got:.1%} of its {of} in {precision.upper()}, below "
                         f"--require-precision {required:g}{others}; check the {precision} graph (`deploykit lint`) "
                         "and what it keeps in higher precision")
