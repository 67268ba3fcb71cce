"""The one precision table, `PRECISIONS`: every fact that depends on the precision lives in its entry.

An entry names its CLI flag, its graph pass (FP32 ONNX -> this precision's ONNX; None for fp32), the build
options that apply to it (its keep option's name and help become a build-engine option), the report key listing
the nodes kept in higher precision, its default parity gates (deploykit.parity.gates documents why each
threshold), the tolerance --localize flags nodes at, the bounds of doctor's full self-test, its element type
(the kernel sweep's graphs), and how to recognise a graph of it. Code outside this file asks the table
(`precision_of`, `detect_precision`) or takes an entry, never compares a precision name. Adding a precision is
one entry here plus its pass in deploykit.precision.passes, or, from another package, an entry point
`deploykit.precisions` (deploykit.plugins) naming a Precision whose graph_pass is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import TensorProto

from deploykit.backends.base import Backend
from deploykit.errors import ConfigConflict
from deploykit.io.metadata import ModelMetadata
from deploykit.plugins import with_plugins
from deploykit.precision.passes import CalibrationOptions, PrecisionResult, fp16_graph, int8_graph
from deploykit.types import Progress

_ALWAYS = ("nan==0", "inf==0")


@dataclass(frozen=True)
class GraphRequest:
    """What a precision pass is given (deploykit.build fills it)."""

    source: onnx.ModelProto
    meta: ModelMetadata | None
    source_sha: str
    calibration: CalibrationOptions
    keep: Sequence[str]  # node names / op types kept in higher precision
    fp16_io: bool
    budget: Sequence[str]
    layout: str  # the backend's Q/DQ layout (BACKENDS[b].qdq_layout) unless the user chose one
    backend: Backend  # the compiling backend: what the budget search scores, whose lint rules apply
    threads: int | None
    progress: Progress


def _fp16_pass(r: GraphRequest) -> PrecisionResult:
    return fp16_graph(r.source, r.meta, r.source_sha, r.calibration, keep=r.keep, fp16_io=r.fp16_io,
                      accuracy_budget=r.budget, backend=r.backend, threads=r.threads, progress=r.progress)


def _int8_pass(r: GraphRequest) -> PrecisionResult:
    return int8_graph(r.source, r.meta, r.source_sha, r.calibration, keep_float=r.keep, accuracy_budget=r.budget,
                      layout=r.layout, backend=r.backend, threads=r.threads, progress=r.progress)


_INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                       "MatMulInteger"})


def _is_int8(model: onnx.ModelProto) -> bool:
    return any(node.op_type in _INT8_OPS for node in model.graph.node)


def _is_fp16(model: onnx.ModelProto) -> bool:
    half = TensorProto.FLOAT16
    return any(init.data_type == half for init in model.graph.initializer) or any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute)
        for node in model.graph.node)


@dataclass(frozen=True)
class Precision:
    name: str
    flag: str  # the build-engine flag
    help: str
    title: str  # how reports and progress messages name it
    graph_pass: Callable[[GraphRequest], PrecisionResult] | None  # None: the FP32 graph is compiled as it is
    options: frozenset[str]  # build options that apply: keep, fp16_io, accuracy_budget, calibration, int8
    keep_option: str  # the build_artifact keyword (and CLI option) naming nodes kept in higher precision
    kept_key: str  # report key listing the nodes kept in higher precision ("" for fp32)
    gates: tuple[str, ...]  # default parity gates
    detect: Callable[[onnx.ModelProto], bool]  # does a graph compute in this precision
    detect_rank: int  # the first matching detector of highest rank wins (int8 graphs hold fp16 casts too)
    localize_tolerance: float = 1e-1  # per-node relative error --localize flags (deploykit.parity.localize)
    keep_help: str = ""  # help of its keep option on the command line
    element_type: int = TensorProto.FLOAT  # what its weights and activations are (the kernel sweep's graphs)
    # doctor --selftest --full: minimum logit cosine and pixel agreement of its TensorRT engine against FP32
    # ONNX Runtime, on a model with random weights (hence looser than the gates); None: not self-tested
    selftest_bounds: tuple[float, float] | None = None
    budget_in_deploy: bool = False  # deploy applies --accuracy-budget to this precision's build
    # Computes in float16: faster only where a backend runs float16 natively (deploy leaves it out elsewhere)
    float16_compute: bool = False
    needs_data: bool = False  # cannot build without --calib-data (deploy leaves it out when none is given)
    lowered_key: str = ""  # report key counting the nodes its pass moved to this precision ("" for fp32)

    @property
    def lowered(self) -> bool:
        return self.graph_pass is not None


PRECISIONS: dict[str, Precision] = with_plugins("deploykit.precisions", Precision, {
    p.name: p
    for p in (
        Precision("fp32", "--fp32", "Keep float32.", "FP32", None, frozenset(), "", "",
                  (*_ALWAYS, "cosine>=0.99999", "pixel_agreement>=0.999", "miou_major>=0.99", "cc>=0.9999",
                   "sim>=0.999", "kld<=0.001"), lambda _m: True, 0, localize_tolerance=1e-4,
                  selftest_bounds=(0.9999, 0.995)),
        Precision("fp16", "--fp16", "Weights and activations in float16.", "FP16", _fp16_pass,
                  frozenset({"keep", "fp16_io", "accuracy_budget", "calibration"}), "keep_fp32", "kept_fp32",
                  (*_ALWAYS, "cosine>=0.999", "pixel_agreement>=0.99", "miou_major>=0.95", "cc>=0.999", "sim>=0.99",
                   "kld<=0.01"), _is_fp16, 1, localize_tolerance=1e-2,
                  keep_help="FP16: keep this node name or op type in float32 (repeatable; DepthwiseConv works too).",
                  element_type=TensorProto.FLOAT16, selftest_bounds=(0.999, 0.98), float16_compute=True,
                  lowered_key="converted_nodes"),
        Precision("int8", "--int8", "Explicit INT8 Q/DQ from calibration data.", "INT8", _int8_pass,
                  frozenset({"keep", "accuracy_budget", "calibration", "int8"}), "keep_float", "kept_float",
                  (*_ALWAYS, "cosine>=0.98", "pixel_agreement>=0.95", "miou_major>=0.85", "cc>=0.98", "sim>=0.95",
                   "kld<=0.05"), _is_int8, 2, localize_tolerance=1e-1,
                  keep_help="INT8: keep this node name or op type unquantized (repeatable; DepthwiseConv works too).",
                  element_type=TensorProto.INT8, selftest_bounds=(0.95, 0.80), budget_in_deploy=True,
                  needs_data=True, lowered_key="quantized_nodes"),
    )
})
DEFAULT = PRECISIONS["fp32"]  # build-engine's precision when no flag is given
BASELINE = next(p for p in PRECISIONS.values() if not p.lowered)  # what the others are compared with
KEPT_KEYS = tuple(p.kept_key for p in PRECISIONS.values() if p.kept_key)


def precision_of(name: str | None, *, what: str = "precision") -> Precision:
    """The entry for `name` (None: the default), or a clear error listing the known ones."""
    chosen = name or DEFAULT.name
    if chosen not in PRECISIONS:
        raise ConfigConflict(f"unknown {what} {chosen!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[chosen]


def detect_precision(model: onnx.ModelProto, meta: ModelMetadata | None = None) -> str:
    """The precision a graph computes in (int8 when it quantizes, fp16 when it computes in float16); for a
    plain float32 graph, the precision its deploykit metadata records, if any."""
    found = max((p for p in PRECISIONS.values() if p.detect(model)), key=lambda p: p.detect_rank)
    if not found.lowered and meta is not None:
        return meta.precision
    return found.name


# Build flags that only some precisions read (FLAG_NEEDS: the Precision.options entry a flag needs): the
# calibration data feed FP16's overflow scan and INT8's ranges; the range and recovery flags are INT8's.
FLAG_NEEDS = {
    **dict.fromkeys(("--calib-data", "--calib-n", "--calib-cache", "--no-calib-cache"), "calibration"),
    **dict.fromkeys(("--calib-method", "--percentile", "--qdq-layout", "--int8-float", "--int8-grouped",
                     "--int8-rounding", "--int8-bias-correction", "--int8-equalize", "--int8-distill"), "int8"),
}
BUDGET_FLAGS = ("--holdout", "--labels", "--max-float", "--sensitivity")  # the budget search's


def check_flags_apply(precision: Precision, given: Sequence[str], *, budget: bool) -> None:
    """ConfigConflict naming every flag in `given` that this build would ignore: one that `precision` does not
    read, or a budget search flag without --accuracy-budget (a user who typed it expects it to act)."""
    wrong = [f"{flag} applies to {' and '.join(p.flag for p in PRECISIONS.values() if FLAG_NEEDS[flag] in p.options)}"
             " builds only" for flag in given if flag in FLAG_NEEDS and FLAG_NEEDS[flag] not in precision.options]
    wrong += [f"{flag} applies only with --accuracy-budget" for flag in given if flag in BUDGET_FLAGS and not budget]
    if wrong:
        raise ConfigConflict(f"{'; '.join(wrong)} (this build is {precision.flag})")


def lowered_nodes(precision: str, report: Mapping[str, Any]) -> int | None:
    """How many nodes the precision pass moved to `precision` (0: its graph computes in float as FP32's does),
    or None where the report does not say (FP32, a plugin precision without a lowered_key)."""
    key = PRECISIONS[precision].lowered_key if precision in PRECISIONS else ""
    count = report.get(key) if key else None
    return int(count) if isinstance(count, int | float) else None


def kept_nodes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes a precision report keeps in higher precision, whichever precision wrote it."""
    return [node for key in KEPT_KEYS for node in report.get(key) or []]


def check_build_options(precision: Precision, *, keeps: Mapping[str, Sequence[str]], fp16_io: bool,
                        accuracy_budget: Sequence[str]) -> Sequence[str]:
    """Fail on a build option that does not apply to `precision`; return its own keep list. `keeps` maps each
    precision's keep_option (keep_fp32, keep_float) to what was given."""
    wrong = [(f"--{option.replace('_', '-')}", [p.flag for p in PRECISIONS.values() if p.keep_option == option])
             for option, values in keeps.items() if values and option != precision.keep_option]
    for name, on in (("fp16_io", fp16_io), ("accuracy_budget", bool(accuracy_budget))):
        if on and name not in precision.options:
            wrong.append((f"--{name.replace('_', '-')}", [p.flag for p in PRECISIONS.values() if name in p.options]))
    if wrong:
        listed = "; ".join(f"{flag} applies to {' and '.join(owners)} builds only" for flag, owners in wrong)
        raise ConfigConflict(f"{listed} (this build is {precision.flag})")
    return keeps.get(precision.keep_option, ())
