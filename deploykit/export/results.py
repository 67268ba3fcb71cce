"""What an export gives: the tolerance it is judged by, each verification shape's check, and the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deploykit.exporters import DEFAULT_OPSET, REDUCED_PRECISION
from deploykit.metrics.numeric import NumericMetrics


@dataclass(frozen=True)
class Tolerance:
    """An export passes when, per output, nothing is NaN/Inf, cosine >= min_cosine, and either
    max_abs <= atol + rtol * max|ref|, or the elements beyond atol + rtol * |ref| (numpy.isclose's rule) are
    outliers: at most `max_outliers` of them (a share: 1e-4 is 26 elements of a 512x512 map) AND none off by
    more than atol + outlier_rtol * max|ref| (1% of the output's largest magnitude).

    What it tolerates: a few elements moved by a small amount, as argmax-like operators produce where two
    values of a max-pool window are equal to float rounding and ONNX Runtime and PyTorch pick different
    switches (DeconvNet's unpooling). What it does not: a local bug, such as a zeroed corner or a wrong
    border, which moves few elements but by about their own size; the count alone let that through.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.99999
    max_outliers: float = 1e-4
    outlier_rtol: float = 1e-2

    @classmethod
    def for_dtype(cls, dtype: torch.dtype) -> Tolerance:
        """The tolerance for a reference model computing in `dtype`: a float16 or bfloat16 model is judged by
        its own precision (ten of its rounding steps, 2**-10 and 2**-7, of the output's largest magnitude),
        since its PyTorch outputs carry that much rounding and the float32 graph does not; float32 and float64
        ones by the default."""
        if dtype not in REDUCED_PRECISION:
            return cls()
        steps = 10 * torch.finfo(dtype).eps
        # relative to the output's largest magnitude only: an absolute allowance that size would pass a zeroed
        # corner of an output whose values are all small
        return cls(rtol=steps, min_cosine=1 - steps**2, outlier_rtol=max(cls.outlier_rtol, 2 * steps))

    def passes(self, metrics: NumericMetrics, ref_scale: float) -> bool:
        if metrics.nan or metrics.inf or not metrics.cosine >= self.min_cosine:
            return False
        if metrics.max_abs <= self.atol + self.rtol * ref_scale:
            return True
        return metrics.beyond_tol <= self.max_outliers and metrics.max_abs <= self.atol + self.outlier_rtol * ref_scale


@dataclass(frozen=True)
class ShapeCheck:
    input_shape: tuple[int, ...]
    outputs: dict[str, NumericMetrics]
    passed: bool

    @property
    def max_abs(self) -> float:
        """The worst output's largest difference."""
        return max((m.max_abs for m in self.outputs.values()), default=0.0)

    @property
    def cosine(self) -> float:
        """The worst output's cosine similarity."""
        return min((m.cosine for m in self.outputs.values()), default=1.0)


@dataclass
class ExportResult:
    path: Path
    exporter: str
    opset: int
    dynamic: bool
    input_shape: tuple[int, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    simplified: bool
    simplify_note: str
    seconds: float
    checks: list[ShapeCheck] = field(default_factory=list)
    size_multiple: int = 1  # the height/width multiple the verification shapes kept (given or detected)
    head: str | None = None  # the output head appended after verification (graph/heads.py), if any
    model_dtype: str = "float32"  # the floating dtype the user's model computes in (see `exporters.traced_model`)
    as_float32: bool = False  # a float16/bfloat16/float64 model exported as its float32 copy
    trace_warnings: tuple[str, ...] = ()  # where the tracer read tensor values in the model's code (exporters)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def mismatch(self) -> str:
        """What a failed verification says, with its likely cause when the tracer warned about the model's code."""
        if not self.trace_warnings and self.opset < DEFAULT_OPSET:
            return (f"ONNX Runtime disagrees with PyTorch beyond tolerance at opset {self.opset}; try --opset "
                    f"{DEFAULT_OPSET} (older opsets compute some operators, Resize among them, unlike PyTorch) or "
                    "--no-simplify, or report the model")
        if not self.trace_warnings:
            return ("ONNX Runtime disagrees with PyTorch beyond tolerance; try --exporter dynamo or --no-simplify, "
                    f"or report the model{self._static_hint()}")
        return (f"ONNX Runtime disagrees with PyTorch beyond tolerance, likely because the trace fixed a path through "
                f"Python code that reads tensor values ({self.trace_warnings[0]}): the graph repeats what this one "
                "input did; compute it with torch operations (torch.where for a branch), or try --exporter dynamo, "
                f"which names such code{self._static_hint()}")

    def checks_text(self) -> str:
        """Each verification shape's worst output difference, as a sentence reads it."""
        return "; ".join(f"at {shape_text(c.input_shape)} max |diff| {c.max_abs:.3g}, cosine {c.cosine:.4g}"
                         for c in self.checks)

    def _static_hint(self) -> str:
        """Right at the export shape, wrong at the other: the number or branch the trace fixed may come from the
        input's shape (float(x.shape[2]), a mean over int(h * w)), which only a static export makes true."""
        if not self.dynamic or len(self.checks) < 2 or not self.checks[0].passed:
            return ""
        other = next(c for c in self.checks if not c.passed)
        return (f"; it agrees at the export shape {shape_text(self.input_shape)} but not at "
                f"{shape_text(other.input_shape)}: if the model computes a number from its input's shape "
                "(int(x.shape[2]), float(h * w)), keep it a tensor, or export with --static for that one shape")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (export --json, deploy's export.json): per check the worst max_abs and cosine over
        the outputs, and every output's metrics."""
        return {"path": str(self.path), "written": self.passed, "exporter": self.exporter, "opset": self.opset,
                "dynamic": self.dynamic, "size_multiple": self.size_multiple, "head": self.head,
                "input_shape": list(self.input_shape), "input_names": list(self.input_names),
                "output_names": list(self.output_names), "simplified": self.simplified,
                "simplify_note": self.simplify_note, "seconds": round(self.seconds, 2),
                "model_dtype": self.model_dtype, "as_float32": self.as_float32,
                "trace_warnings": list(self.trace_warnings),
                "checks": [{"input_shape": list(c.input_shape), "passed": c.passed,
                            "max_abs": c.max_abs, "cosine": c.cosine,
                            "outputs": {k: v.to_dict() for k, v in c.outputs.items()}} for c in self.checks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportResult:
        checks = [ShapeCheck(tuple(c["input_shape"]), {k: NumericMetrics(**v) for k, v in c.get("outputs", {}).items()},
                             bool(c["passed"])) for c in data.get("checks", [])]
        return cls(path=Path(data["path"]), exporter=str(data["exporter"]), opset=int(data["opset"]),
                   dynamic=bool(data.get("dynamic", True)), input_shape=tuple(data.get("input_shape", ())),
                   input_names=tuple(data.get("input_names", ())), output_names=tuple(data.get("output_names", ())),
                   simplified=bool(data.get("simplified", False)), simplify_note=str(data.get("simplify_note", "")),
                   seconds=float(data.get("seconds", 0.0)), checks=checks,
                   size_multiple=int(data.get("size_multiple", 1)), head=data.get("head"),
                   model_dtype=str(data.get("model_dtype", "float32")), as_float32=bool(data.get("as_float32", False)),
                   trace_warnings=tuple(data.get("trace_warnings", ())))


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))
