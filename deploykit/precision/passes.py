"""The precision passes with their calibration: FP32 ONNX -> FP16 ONNX or INT8 Q/DQ ONNX.

Both measure the FP32 model on calibration inputs first (streamed, cached): FP16 needs max |x| per activation
for its overflow guard, INT8 needs the range of every tensor it may quantize. The result carries the
metadata (precision, nodes kept in higher precision) and a report for the sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from deploykit.backends.base import Backend
from deploykit.calib import cache as calib_cache
from deploykit.calib.collect import collect_stats
from deploykit.calib.data import CalibrationData, calibration_data
from deploykit.calib.methods import Auto, Method, MinMax, amax, candidates, make_method
from deploykit.calib.qdq import LAYOUTS, QdqBuilder, calibration_tensors
from deploykit.errors import BuildError, CalibrationError, ConfigConflict, InputError, first_line
from deploykit.graph.fp16 import Fp16Result, fp16_from_onnx
from deploykit.graph.macs import count_onnx_macs, graph_inputs
from deploykit.graph.tensors import activations, ensure_node_names, index_graph, match_nodes
from deploykit.io.labels import match_labels
from deploykit.io.metadata import ModelMetadata, write_metadata
from deploykit.io.onnx_graph_checks import default_opset
from deploykit.precision.budget import (
    Budget,
    BudgetResult,
    Evaluator,
    MacShare,
    halved,
    local_sensitivities,
    parse_budget,
    search,
)
from deploykit.precision.int8_choices import float_remainder, grouped_reason, qdq_lint
from deploykit.precision.range_choice import SCORED_INPUTS, choose_method
from deploykit.precision.recovery import RecoveryOptions, equalized_source, recover
from deploykit.runner import InputSizes
from deploykit.types import Progress

# Held-out inputs at most: the budget's bound is pooled -/+ t * sd / sqrt(n) (deploykit.precision.budget), and
# its margin shrinks from 0.82 sd at 4 inputs to 0.50 at 8 and 0.39 at 12, while each search try runs them all.
MAX_HOLDOUT = 8
# Held-out inputs the "single" sensitivities are measured on (the budget itself is judged on all of them):
# ranking 61 nodes took 61 x 4 ORT runs of 513x513 in the demo's deploy; see bench_deploy_time.py.
RANK_INPUTS = 2
RANK_MIN_SIDE = 128  # smallest side the "single" ranking is halved to (see _rank_evaluator)
# FP16 budget candidates: the nodes where float16 accumulation and weight rounding happen; elementwise ops
# between them gain little from float32 and would multiply the search's cost.
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SENSITIVITIES = ("single", "local")  # the budget search's rankings (deploykit.precision.budget), default first


@dataclass(frozen=True)
class CalibrationOptions:
    """What to calibrate on and how. None means the library's default (see deploykit.build)."""

    data: str | None = None  # folder, .npy/.npz, "photos" or "synthetic"
    n: int | None = None
    method: str | None = None  # minmax | entropy | percentile | mse | auto (default: the backend's)
    percentile: float | None = None
    cache: str | None = None  # explicit cache file; default: the cache folder, keyed
    use_cache: bool = True
    holdout: int | None = None  # inputs held out for an accuracy budget
    max_kept: int | None = None  # most weighted nodes the budget search may keep in float
    sensitivity: str | None = None  # "single" (default) or "local" (see deploykit.precision.budget)
    labels: str | None = None  # ground-truth masks of the held-out images, for miou_gt / miou_drop budgets
    int8_float: str | None = None  # INT8's float remainder: fp32 | fp16 | auto (deploykit.precision.int8_choices)
    grouped: str | None = None  # INT8 depthwise/grouped convs: int8 | float (default: the backend's)
    recovery: RecoveryOptions = field(default_factory=RecoveryOptions)  # INT8 accuracy recovery


@dataclass
class PrecisionResult:
    model: onnx.ModelProto
    report: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=dict)  # data, count, method, cache use
    calibration_sha256: str = ""
    # The float model the graph was quantized from when the pass changed it first (cross-layer equalization):
    # backend lowerings that re-derive weights from float (deploykit.graph.seven_bit) read this one.
    float_model: onnx.ModelProto | None = None


def input_shape(model: onnx.ModelProto, meta: ModelMetadata | None) -> tuple[int, int, int, int] | None:
    """1xCxHxW for calibration images: the graph's static dims, else the metadata's input size."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    values = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    if len(values) != 4:
        return None
    channels = values[1] or 3
    if values[2] and values[3]:
        return (1, channels, values[2], values[3])
    if meta is not None:
        return (1, channels, *meta.input_size)
    return None


def _data(options: CalibrationOptions, model: onnx.ModelProto, meta: ModelMetadata | None,
          say: Progress) -> CalibrationData:
    assert options.data is not None
    data = calibration_data(options.data, input_shape=input_shape(model, meta),
                            preprocessing=meta.preprocessing if meta else None, n=options.n, warn=say,
                            dtype=_input_dtype(model))
    _check_static_size(data, model)
    if data.kind == "array":  # images are resized to the model's size; arrays are taken as they are
        try:
            InputSizes.of(meta).check(data.input_shape)
        except InputError as exc:
            raise InputError(f"calibration data {data.source}: {exc}") from exc
    return data


def _input_dtype(model: onnx.ModelProto) -> str:
    """The NumPy type of the first graph input (uint8 for a model taking pixels); float32 when it is not numeric."""
    inputs = graph_inputs(model)
    elem = inputs[0].type.tensor_type.elem_type if inputs else TensorProto.FLOAT
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
    return dtype.name if dtype.kind in "fiu" else "float32"


def _check_static_size(data: CalibrationData, model: onnx.ModelProto) -> None:
    """Arrays of another height or width than a static graph input fail here in one line, not in ONNX Runtime
    mid-calibration (images are resized to the model's size; arrays are taken as they are)."""
    initializers = {init.name for init in model.graph.initializer}
    graph_input = next((i for i in model.graph.input if i.name not in initializers), None)
    if data.kind != "array" or graph_input is None:
        return
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    for axis, (want, got) in enumerate(zip(dims[1:], data.input_shape[1:], strict=False), start=1):
        if want and want != got:
            raise InputError(f"{data.source}: inputs of shape {list(data.input_shape[1:])} (C,H,W), but the model's "
                             f"input is fixed at {dims[1:]} (axis {axis}); save inputs of that size or export "
                             "with dynamic shapes")


def _ranges(model: onnx.ModelProto, model_sha: str, data: CalibrationData, method: Method | Auto,
            tensors: Sequence[str], options: CalibrationOptions, *, threads: int | None,
            say: Progress) -> tuple[calib_cache.CachedRanges, dict[str, Any]]:
    """Ranges of `tensors` under `method` (auto: under each of its candidates, from one pass), from the cache
    when its key matches, else measured (streamed); histograms only when a method reads them."""
    data_sha = data.fingerprint()
    method_record = method.to_dict()
    methods = candidates(method)
    key = calib_cache.cache_key(model_sha, data_sha, method_record)
    path = Path(options.cache) if options.cache else calib_cache.default_path(key)
    info = {"source": data.source, "kind": data.kind, "inputs": len(data), "method": method_record,
            "data_sha256": data_sha, "cache": str(path) if options.use_cache else None}
    if options.use_cache:
        cached = calib_cache.load(path, key)
        if cached is not None and set(tensors) <= set(cached.absmax) and {m.name for m in methods} <= set(cached.amax):
            say(f"calibration ranges from cache {path}")
            return cached, {**info, "cache_hit": True}
    say(f"calibrating on {len(data)} input(s) from {data.source} ({method_record['method']})")
    histograms = any(not isinstance(m, MinMax) for m in methods)
    collection = collect_stats(model, tensors, data, histograms=tensors if histograms else (),
                               threads=threads, progress=say)
    if collection.inputs == 0:
        raise CalibrationError(f"no calibration inputs were read from {data.source}")
    ranges = calib_cache.CachedRanges(
        key=key, amax={m.name: {name: amax(stats, m) for name, stats in collection.stats.items()} for m in methods},
        absmax={name: stats.absmax for name, stats in collection.stats.items()}, inputs=collection.inputs,
        observed={name: (stats.minimum, stats.maximum) for name, stats in collection.stats.items()
                  if stats.count})
    if options.use_cache:
        unwritten = calib_cache.store(path, ranges, onnx_sha256=model_sha, data_sha256=data_sha,
                                      method=method_record)
        if unwritten is not None:
            say(f"calibration cache not written ({unwritten}); the build goes on, and the next one calibrates "
                "again")
            info = {**info, "cache": None, "cache_not_written": unwritten}
    return ranges, {**info, "cache_hit": False}


def _with_metadata(model: onnx.ModelProto, meta: ModelMetadata | None, precision: str, record: Any) -> None:
    if meta is not None:
        extra = {**dict(meta.extra), f"{precision}_kept": json.dumps(record)}
        write_metadata(model, replace(meta, precision=precision, extra=extra))


def _verify(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise BuildError(f"the {what} graph fails the ONNX checker ({first_line(exc)}); this is a bug "
                         "in deploykit: please report it with the model") from exc


BEYOND_CALIB_N, LAST_OF_CALIB_N = "beyond --calib-n", "the last of the --calib-n inputs"  # held-out origins


def _split(data: CalibrationData, options: CalibrationOptions, budget: Budget | None
           ) -> tuple[CalibrationData, CalibrationData | None, str]:
    """(calibration inputs, held-out inputs for the budget, where those came from). By default the source's
    inputs beyond --calib-n when it has at least as many as the quarter split would hold out (at most
    MAX_HOLDOUT): then every --calib-n input calibrates and the held-out share is larger; else the last quarter
    of the --calib-n inputs. --holdout N always holds out the last N of them."""
    if budget is None:
        return data, None, ""
    quarter = max(1, min(MAX_HOLDOUT, len(data) // 4))
    if options.holdout is None and len(data.spare[:MAX_HOLDOUT]) >= quarter:
        return replace(data, spare=()), data.spare_part(MAX_HOLDOUT), BEYOND_CALIB_N
    return (*data.split(options.holdout if options.holdout is not None else quarter), LAST_OF_CALIB_N)


def _scoring_inputs(data: CalibrationData, held: CalibrationData | None
                    ) -> tuple[CalibrationData, CalibrationData, str]:
    """(calibration inputs, the inputs --calib-method auto scores its candidates on, which they are), so that no
    range is fitted to them (deploykit.precision.range_choice): the budget's held-out inputs, else the source's
    inputs beyond --calib-n, else the last of the --calib-n inputs, left out of calibration as the budget's
    held-out share is (a single calibration input is scored on itself)."""
    if held is not None:
        scored = replace(held, items=held.items[:SCORED_INPUTS])
        return data, scored, f"{len(scored)} of the budget's held-out inputs"
    if data.spare:
        scored = data.spare_part(SCORED_INPUTS)
        return data, scored, f"{len(scored)} input(s) {BEYOND_CALIB_N}"
    count = min(SCORED_INPUTS, len(data) - 1)
    if count == 0:
        return data, data, "the one calibration input itself (no other input: it favours minmax)"
    calibration, scored = data.split(count)
    return calibration, scored, f"the last {count} of the --calib-n inputs, left out of calibration"


def fp16_graph(source: onnx.ModelProto, meta: ModelMetadata | None, source_sha: str,
               options: CalibrationOptions, *, keep: Sequence[str], fp16_io: bool, accuracy_budget: Sequence[str],
               backend: Backend, threads: int | None, progress: Progress) -> PrecisionResult:
    """FP16 graph; activations that overflow float16 on the calibration data keep their nodes in float32, and
    with a budget the fewest most sensitive nodes stay float32 until it is met."""
    source = onnx.ModelProto.FromString(source.SerializeToString())
    ensure_node_names(source.graph)
    if keep:  # a typo fails now, before calibration writes its cache
        match_nodes(source.graph, keep, index_graph(source), option="--keep-fp32")
    budget = parse_budget(accuracy_budget, meta.task if meta else None) if accuracy_budget else None
    if budget is not None and options.data is None:
        raise CalibrationError("an accuracy budget needs --calib-data (part of it is held out to measure it)")
    chosen = options.data if options.data is not None else ("photos" if meta is not None else None)
    absmax: dict[str, float] = {}
    info: dict[str, Any] = {"overflow_scan": "skipped: no --calib-data and no deploykit metadata"}
    data_sha, held, truth = "", None, None
    if chosen is not None:
        try:
            data = _data(replace(options, data=chosen), source, meta, progress)
        except (CalibrationError, InputError) as exc:
            if options.data is not None:
                raise
            data, info = None, {"overflow_scan": f"skipped: {exc}"}
        if data is not None:
            data, held, _origin = _split(data, options, budget)
            truth = _held_truth(held, options, budget, meta)
            index = index_graph(source)
            tensors = sorted(t for t in activations(source, index) if index.types.get(t) == TensorProto.FLOAT)
            ranges, info = _ranges(source, source_sha, data, MinMax(), tensors, options, threads=threads,
                                   say=progress)
            absmax, data_sha = ranges.absmax, info["data_sha256"]
            info["overflow_scan"] = f"{ranges.inputs} input(s)"

    def build(kept: frozenset[str] = frozenset()) -> Fp16Result:
        return fp16_from_onnx(source, keep=[*keep, *sorted(kept)], fp16_io=fp16_io, activation_absmax=absmax)

    result = build()
    report: dict[str, Any] = {}
    if budget is not None and held is not None:
        weighted = {n.name for n in source.graph.node if n.op_type in WEIGHTED}
        candidates = [name for name in result.half_nodes if name in weighted]
        found = _search(source, candidates, lambda kept: build(kept).model, held, truth, budget, meta, options,
                        backend=backend, low="FP16", threads=threads, progress=progress)
        result = build(frozenset(found.kept))
        report["budget"], info["holdout"] = found.to_dict(), len(held)
    _verify(result.model, "FP16")
    _with_metadata(result.model, meta, "fp16", [k.to_dict() for k in result.kept])
    progress(f"FP16: {result.converted} nodes in float16, {len(result.kept)} kept in float32")
    return PrecisionResult(result.model, {**result.report(), **report}, info, data_sha)


def int8_graph(source: onnx.ModelProto, meta: ModelMetadata | None, source_sha: str,
               options: CalibrationOptions, *, keep_float: Sequence[str], accuracy_budget: Sequence[str],
               layout: str, backend: Backend, threads: int | None, progress: Progress) -> PrecisionResult:
    """INT8 Q/DQ graph from calibration ranges, with the accuracy recovery steps (deploykit.precision.recovery);
    with a budget, the fewest nodes kept in float that meet it; then the float remainder."""
    _check_int8(source, options, layout, keep_float)
    entry = backend
    budget = parse_budget(accuracy_budget, meta.task if meta else None) if accuracy_budget else None
    data, held, origin = _split(_data(options, source, meta, progress), options, budget)
    truth = _held_truth(held, options, budget, meta)
    method = make_method(options.method, percentile=options.percentile, default=entry.calib_method)
    if isinstance(method, Auto):
        data, scoring, scored_on = _scoring_inputs(data, held)
    source, source_sha, equalized = equalized_source(source, source_sha, options.recovery, progress)
    ranges, info = _ranges(source, source_sha, data, method, calibration_tensors(source), options,
                           threads=threads, say=progress)
    builder = QdqBuilder(source, ranges.amax[candidates(method)[0].name], keep_float=keep_float,
                         quantize_outputs=layout == LAYOUTS[1], float_grouped=grouped_reason(options.grouped, entry),
                         observed=ranges.observed)
    report: dict[str, Any] = {}
    if isinstance(method, Auto):
        choice, recovered = choose_method(builder, ranges.amax, method.candidates, options.recovery, entry, data,
                                          list(scoring), scored_on, meta.task if meta else None, threads=threads,
                                          progress=progress)
        method, report["method_choice"] = choice.chosen, choice.to_dict()
    else:
        recovered = recover(builder, options.recovery.resolved(method), entry, data, threads=threads,
                            progress=progress)
    report.update({"method": method.to_dict(), "recovery": options.recovery.resolved(method).to_dict(),
                   "equalization": equalized, **recovered})
    result = builder.build()
    if budget is not None and held is not None:
        found = _search(builder.model, result.quantized, lambda kept: builder.build(kept).model, held, truth, budget,
                        meta, options, backend=backend, low="INT8", threads=threads, progress=progress)
        result = builder.build(found.kept)
        report["budget"] = {**found.to_dict(), "held_out": len(held), "held_out_from": origin}
        info["holdout"] = len(held)
    model, report["int8_float"] = float_remainder(builder.model, result.model, options.int8_float, entry, budget,
                                                  held, meta, ranges.absmax, threads=threads, progress=progress)
    info["int8_float"] = report["int8_float"]["chosen"]
    if entry.lint_target:  # the placement rules are the compiling backend's (TensorRT's)
        choices = {"int8-fp32-remainder": report["int8_float"]["why"],
                   "int8-grouped-conv": "asked for (--int8-grouped int8)"}
        report["qdq_lint"] = qdq_lint(model, entry.lint_target, choices, progress)
    _verify(model, "INT8")
    _with_metadata(model, meta, "int8", [k.to_dict() for k in result.kept])
    progress(f"INT8: {len(result.quantized)} weighted nodes quantized, {len(result.kept)} kept in float; "
             f"float remainder {report['int8_float']['chosen']}")
    return PrecisionResult(model, {**result.report(), **report}, info, info["data_sha256"],
                           float_model=builder.model if equalized["pairs"] else None)


def _check_int8(source: onnx.ModelProto, options: CalibrationOptions, layout: str, keep_float: Sequence[str]) -> None:
    """What can fail before calibration starts (and before its cache is written) fails here."""
    if options.data is None:
        raise CalibrationError("INT8 needs calibration data: --calib-data DIR (images), FILE.npz (preprocessed "
                               "inputs), 'photos' (scikit-image's photographs) or 'synthetic' (noise; poor ranges)")
    if layout not in LAYOUTS:
        raise BuildError(f"unknown Q/DQ layout {layout!r}; choose {' or '.join(LAYOUTS)}")
    opset = default_opset(source) or 0
    if opset < 13:
        raise BuildError(f"INT8 Q/DQ needs opset 13 or later (per-channel DequantizeLinear); this model is opset "
                         f"{opset}: re-export it with `deploykit export --opset 18`")
    if keep_float:  # a typo fails now (on a copy named as QdqBuilder names)
        named = onnx.ModelProto.FromString(source.SerializeToString())
        ensure_node_names(named.graph)
        match_nodes(named.graph, keep_float, index_graph(named), option="--keep-float")


def _held_truth(held: CalibrationData | None, options: CalibrationOptions, budget: Budget | None,
                meta: ModelMetadata | None) -> list[np.ndarray] | None:
    """The ground-truth mask of each held-out image (io.labels matches them by name), read now so that a
    missing mask fails before calibration; None unless the budget is measured against ground truth."""
    if budget is None or not budget.needs_labels:
        return None
    if options.labels is None:
        raise ConfigConflict(f"accuracy budget {budget.describe()} is measured against ground truth; add --labels "
                             "DIR (PNG masks named like the --calib-data images)")
    if held is None or held.kind != "folder":
        raise ConfigConflict("an accuracy budget against --labels needs --calib-data DIR, a folder of images "
                             "whose held-out part the masks are matched to by file name")

    found = match_labels(options.labels, held.items)
    return [found.read(i, meta.num_classes if meta else None) for i in range(len(found))]


def _search(source: onnx.ModelProto, candidates: list[str], build: Callable[[frozenset[str]], onnx.ModelProto],
            held: CalibrationData, truth: list[np.ndarray] | None, budget: Budget, meta: ModelMetadata | None,
            options: CalibrationOptions, *,
            backend: Backend, low: str, threads: int | None, progress: Progress) -> BudgetResult:
    """The budget search, scored on the held-out inputs with what the backend would run: for ONNX Runtime the
    lowered and optimized model the artifact holds (its numerics differ from the plain graph's: the saved
    Casts round activations to float16 where a plain float16 graph on CPU drops them)."""
    def lowered(kept: frozenset[str]) -> onnx.ModelProto:
        return backend.as_deployed(build(kept), threads=threads, optimize=False, float_source=source)

    def deployed(kept: frozenset[str]) -> bytes:
        return bytes(backend.as_deployed(build(kept), threads=threads, optimize=True,
                                         float_source=source).SerializeToString())

    inputs = list(held)
    method = options.sensitivity or SENSITIVITIES[0]
    if method not in SENSITIVITIES:
        raise CalibrationError(f"unknown sensitivity method {method!r}; choose {' or '.join(SENSITIVITIES)}")
    progress(f"accuracy budget {budget.describe()} on {len(inputs)} held-out input(s), {method} sensitivity")
    evaluator = Evaluator(source.SerializeToString(), inputs, meta.task if meta else None, threads=threads,
                          rank_inputs=RANK_INPUTS, truth=truth, disabled_optimizers=backend.scored_without)
    sensitivity = None
    if method == "local" and candidates:
        triples = _node_tensors(source, candidates)
        sensitivity = local_sensitivities(source, lowered(frozenset()), triples, inputs, threads)
        sensitivity.update({name: 0.0 for name in candidates if name not in sensitivity})
    return search(deployed, candidates, evaluator, budget, max_kept=options.max_kept, sensitivity=sensitivity,
                  rank_build=lambda kept: lowered(kept).SerializeToString(), low=low,
                  rank_evaluator=_rank_evaluator(source, inputs, meta, backend, threads, progress)
                  if method == "single" else None, macs=_mac_share(source, inputs[0].shape, progress),
                  progress=progress)


def _rank_evaluator(model: onnx.ModelProto, inputs: Sequence[np.ndarray], meta: ModelMetadata | None,
                    backend: Backend, threads: int | None, progress: Progress) -> Evaluator | None:
    """An Evaluator on the first RANK_INPUTS held-out inputs at half their height and width, where the graph
    takes any size and the halves are at least RANK_MIN_SIDE pixels (deploykit.precision.budget: "single"
    ranks alike there, in a quarter of the time); None (rank at full size) otherwise."""
    shape = inputs[0].shape
    if len(shape) != 4 or min(shape[2:]) // 2 < RANK_MIN_SIDE or input_shape(model, None) is not None:  # fixed H, W
        return None
    small = [halved(x) for x in inputs[:RANK_INPUTS]]
    try:
        return Evaluator(model.SerializeToString(), small, meta.task if meta else None, threads=threads,
                         rank_inputs=RANK_INPUTS, disabled_optimizers=backend.scored_without)
    except Exception as exc:  # a graph whose dims are dynamic but whose ops are not (ORT raises its own types)
        progress(f"ranking at full size: the model does not run at {list(small[0].shape)} ({first_line(exc)})")
        return None


def _mac_share(model: onnx.ModelProto, shape: tuple[int, ...], progress: Progress) -> MacShare | None:
    """Multiply-adds per node at the held-out input shape, so the report can estimate the latency of plans it
    did not time; None (and a note) when they cannot be counted: the search itself does not need them."""
    try:
        counted = count_onnx_macs(model, shape)
    except Exception as exc:  # counting is best effort: a failure must not stop the build
        progress(f"could not count multiply-adds per node ({type(exc).__name__}: {exc}); the report will not "
                 "estimate the latency of untimed plans")
        return None
    return MacShare(counted.by_node, counted.madds)


def _node_tensors(model: onnx.ModelProto, names: Sequence[str]) -> list[tuple[str, list[str], str]]:
    """(node, its activation inputs, its first output) for local sensitivities; graph inputs carry no noise."""
    index = index_graph(model, infer_types=False)
    live = activations(model, index_graph(model))
    graph_inputs = {v.name for v in model.graph.input}
    nodes = {n.name: n for n in model.graph.node}
    return [(name, [i for i in nodes[name].input if i in live and i not in graph_inputs], nodes[name].output[0])
            for name in names if name in nodes and index.producer.get(nodes[name].output[0]) is not None]
