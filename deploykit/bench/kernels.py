"""`deploykit bench kernels`: the convolutions dense-prediction models live on, per backend and precision,
against this machine's roofline.

(a) dilated: a 3x3 convolution at rates 1, 2, 4, 6, 12, 18, 24, 36 on DeepLab's shapes at 513x513 input
    (ResNet layer3/layer4 3x3s at output stride 8/16, the ASPP branches on 2048 channels, the decoder's
    3x3 at stride 4: 33x33, 65x65, 129x129 feature maps). A rate at or beyond the map size makes the
    filter degenerate towards its centre tap (DeepLabv3, section 3.3); the count stays the nominal one.
(b) separable: 3x3 depthwise (dilated where the model dilates it) then 1x1 pointwise, against the standard
    3x3 convolution it replaces, on MobileNetV2 (inverted-residual widths) and Xception-65 shapes.

Per case: median time, GFLOP/s (2 x nominal multiply-adds / time), GB/s (minimum traffic / time) and the
roofline bound from the measured peaks (roofline.py) with the efficiency = bound / time. A depthwise + 1x1
pair is bounded by the sum of its two members' bounds. On a GPU (TensorRT) a kernel's time is its compute
time from CUDA events, against the GPU's peaks measured with torch.

Runtime on a 2-core AMD EPYC (Zen 3, AVX2): `--quick` (1 shape x 5 rates, 2 separable shapes, 5 CPU variants)
took 53 s while other jobs loaded the machine; the full sweep (6 shapes x 8 rates + 8 separable shapes x 2,
5 CPU variants: 320 timings) is estimated at about 20 minutes from the quick run's rates (not yet timed
on a quiet machine; `deploykit bench kernels -o k.json` records its own duration in the JSON).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnx import helper

from deploykit.backends.base import BACKENDS, Backend
from deploykit.bench import kernel_graphs as kg
from deploykit.bench.harness import pool_size
from deploykit.bench.interleave import Step, TimingConfig, time_interleaved
from deploykit.bench.load import LoadProbe
from deploykit.bench.roofline import (
    Peaks,
    best_of,
    chain_bound_seconds,
    measure_gpu_peaks,
    measure_peaks,
    spread_warning,
    torch_threads,
)
from deploykit.bench.run import PEAKS_MESSAGE, describe_machine, environment_manifest
from deploykit.bench.runners import Skipped
from deploykit.bench.stats import summarize
from deploykit.build import build_artifact
from deploykit.errors import BackendUnavailable, InputError, first_line
from deploykit.io.outputs import scratch_folder
from deploykit.precision.table import BASELINE
from deploykit.types import Progress, Progressed

SUITES = ("dilated", "separable")
RATES = (1, 2, 4, 6, 12, 18, 24, 36)
QUICK_RATES = (1, 2, 6, 12, 24)
# (name, cin, cout, feature size) at 513x513 input
DILATED_SHAPES = (
    ("ResNet layer3 3x3, OS8", 256, 256, 65),
    ("ResNet layer4 3x3, OS16", 512, 512, 33),
    ("ResNet layer4 3x3, OS8", 512, 512, 65),
    ("ASPP 3x3 on 2048 ch, OS16", 2048, 256, 33),
    ("ASPP 3x3 on 2048 ch, OS8", 2048, 256, 65),
    ("decoder 3x3, OS4", 256, 256, 129),
)
QUICK_DILATED = ("ResNet layer4 3x3, OS16",)
# (name, cin, cout, feature size, dilation) at 513x513 input, output stride 16
SEPARABLE_SHAPES = (
    ("MobileNetV2 block 2 (144 -> 24)", 144, 24, 129, 1),
    ("MobileNetV2 block 3 (192 -> 32)", 192, 32, 65, 1),
    ("MobileNetV2 block 4 (384 -> 64)", 384, 64, 33, 1),
    ("MobileNetV2 block 6 (960 -> 160, rate 2)", 960, 160, 33, 2),
    ("Xception-65 entry (128 -> 256)", 128, 256, 129, 1),
    ("Xception-65 middle (728 -> 728)", 728, 728, 33, 1),
    ("Xception-65 exit (1024 -> 1536, rate 2)", 1024, 1536, 33, 2),
    ("Xception-65 exit (1536 -> 2048, rate 2)", 1536, 2048, 33, 2),
)
QUICK_SEPARABLE = ("MobileNetV2 block 4 (384 -> 64)", "Xception-65 middle (728 -> 728)")
# (backend, precision) pairs, from each backend entry's kernel_precisions
VARIANTS = tuple((b.name, p) for b in BACKENDS.values() for p in b.kernel_precisions)
QUICK_CONFIG = TimingConfig(warmup_s=0.05, duration_s=0.25, min_iterations=3, min_warmup_iterations=1)
FULL_CONFIG = TimingConfig(warmup_s=0.2, duration_s=1.0, min_iterations=5, min_warmup_iterations=2)


@dataclass(frozen=True)
class KernelCase:
    suite: str  # "dilated" | "separable"
    shape: str
    variant: str  # "dilated" | "separable" | "standard"
    cin: int
    cout: int
    size: int
    dilation: int

    def ops(self) -> list[kg.ConvOp]:
        if self.variant == "separable":
            return [kg.ConvOp(self.cin, self.cin, 3, self.dilation, self.cin), kg.ConvOp(self.cin, self.cout, 1)]
        return [kg.ConvOp(self.cin, self.cout, 3, self.dilation)]

    def madds(self) -> int:
        return sum(op.madds(self.size) for op in self.ops())

    def describe(self) -> str:
        rate = f" rate {self.dilation}" if self.dilation > 1 or self.suite == "dilated" else ""
        return f"{self.shape}: {self.variant} {self.cin}->{self.cout} @{self.size}{rate}"


def plan_cases(*, quick: bool = False, suites: Sequence[str] = SUITES) -> list[KernelCase]:
    cases = []
    if "dilated" in suites:
        for name, cin, cout, size in DILATED_SHAPES:
            if quick and name not in QUICK_DILATED:
                continue
            cases += [KernelCase("dilated", name, "dilated", cin, cout, size, rate)
                      for rate in (QUICK_RATES if quick else RATES)]
    if "separable" in suites:
        for name, cin, cout, size, rate in SEPARABLE_SHAPES:
            if quick and name not in QUICK_SEPARABLE:
                continue
            cases += [KernelCase("separable", name, variant, cin, cout, size, rate)
                      for variant in ("separable", "standard")]
    return cases


@dataclass
class KernelResult:
    suite: str
    shape: str
    variant: str
    cin: int
    cout: int
    size: int
    dilation: int
    backend: str
    precision: str
    median_ms: float
    min_ms: float
    p90_ms: float
    iterations: int
    madds: int
    gflops: float
    gbps: float
    bound_ms: float
    roofline_gflops: float
    efficiency_percent: float
    timing: str = "end-to-end (host)"


@dataclass
class KernelReport:
    results: list[KernelResult]
    skipped: list[Skipped]
    peaks: dict[str, Any]
    environment: dict[str, Any]
    config: dict[str, Any]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    gpu_peaks: dict[str, Any] | None = None  # TensorRT kernels' roofline, when torch sees a CUDA device

    def machine(self) -> str:
        """The CPU the figures belong to (bench.run.describe_machine)."""
        return describe_machine(self.environment)

    def to_dict(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "skipped": [asdict(s) for s in self.skipped],
                "peaks": self.peaks, "gpu_peaks": self.gpu_peaks, "environment": self.environment,
                "config": self.config, "seconds": self.seconds, "notes": self.notes}


def _float_inputs(case: KernelCase, seed: int) -> list[np.ndarray]:
    shape = (1, case.cin, case.size, case.size)
    rng = np.random.default_rng(seed)
    count = pool_size(int(np.prod(shape)) * 4)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]


def _torch_step(ops: Sequence[kg.ConvOp], weights: Sequence[kg.ConvWeights], inputs: Sequence[np.ndarray]) -> Step:
    import torch

    module = kg.torch_chain(ops, weights)
    tensors = [torch.from_numpy(x) for x in inputs]

    def step(i: int) -> object:
        with torch.inference_mode():
            return module(tensors[i % len(tensors)])
    return step


def _onnx_model(case: KernelCase, precision: str, weights: Sequence[kg.ConvWeights],
                inputs: Sequence[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    ops = case.ops()
    if kg.is_float(precision):
        dtype = helper.tensor_dtype_to_np_dtype(kg.element_type(precision))
        return kg.float_graph(ops, weights, case.size, precision).SerializeToString(), [x.astype(dtype)
                                                                                           for x in inputs]
    unsigned = precision == kg.UNSIGNED
    scales = kg.calibrate_scales(ops, weights, inputs[0], unsigned=unsigned)
    model = kg.int8_graph(ops, weights, case.size, scales, unsigned=unsigned)
    quantized = [kg.quantize(x, scales[0]) for x in inputs]
    return model.SerializeToString(), [kg.as_unsigned(q) for q in quantized] if unsigned else quantized


def _backend_step(entry: Backend, model: bytes, feeds: Sequence[np.ndarray], threads: int | None, folder: str,
                  stack: ExitStack, tag: str) -> Step:
    """The backend's Runner on the one-op graph: the graph itself for a backend that runs ONNX, else the artifact
    it builds from it (the build-engine path); a runner with `infer_timed` (TensorRT) reports its GPU phases.
    `tag` names the files: a case's variants are open together, timed round-robin."""
    graph = Path(folder) / f"kernel-{tag}.onnx"
    graph.write_bytes(model)
    if entry.runs_onnx:
        runner = stack.enter_context(entry.open(graph, None, threads=threads))
    else:
        built = build_artifact(graph, Path(folder) / f"kernel-{tag}{entry.suffix}", backend=entry, threads=threads,
                               force=True)
        runner = stack.enter_context(entry.open(built.path, built.sidecar, threads=threads))
    name = runner.input_specs()[0].name
    timed = getattr(runner, "infer_timed", None)
    if callable(timed):
        return lambda i: timed({name: feeds[i % len(feeds)]})
    return lambda i: runner.infer_unchecked({name: feeds[i % len(feeds)]})


@dataclass(frozen=True)
class Timed:
    case: KernelCase
    backend: str
    precision: str
    samples: list[float]
    timing: str  # what the samples measure


def _result(timed: Timed, peaks: Peaks) -> KernelResult:
    case, backend, precision = timed.case, timed.backend, timed.precision
    stats = summarize(timed.samples)
    ops = case.ops()
    element = BASELINE.name if BACKENDS[backend].reference else precision
    flops = 2.0 * case.madds()
    moved = sum(op.bytes_moved(case.size, element) for op in ops)
    bound = chain_bound_seconds([(2.0 * op.madds(case.size), op.bytes_moved(case.size, element)) for op in ops],
                                peaks)
    seconds = stats.median / 1e3
    return KernelResult(
        suite=case.suite, shape=case.shape, variant=case.variant, cin=case.cin, cout=case.cout, size=case.size,
        dilation=case.dilation, backend=backend, precision=precision, median_ms=stats.median, min_ms=stats.min,
        p90_ms=stats.p90, iterations=stats.count, madds=case.madds(), gflops=flops / seconds / 1e9,
        gbps=moved / seconds / 1e9, bound_ms=bound * 1e3, roofline_gflops=flops / bound / 1e9,
        efficiency_percent=100.0 * bound / seconds, timing=timed.timing)


def available_variants(backends: Sequence[str] | None,
                       precisions: Sequence[str] | None) -> tuple[list[tuple[str, str]], list[Skipped]]:
    """The (backend, precision) pairs to run, and the requested ones that cannot run here, with why."""
    for given, known, option in ((backends, dict.fromkeys(b for b, _ in VARIANTS), "--backend"),
                                 (precisions, dict.fromkeys(p for _, p in VARIANTS), "--precision")):
        unknown = [name for name in given or () if name not in known]
        if unknown:
            raise InputError(f"{option} {','.join(unknown)}: unknown; choose from {', '.join(known)}")
    wanted = [(b, p) for b, p in VARIANTS if (not backends or b in backends) and (not precisions or p in precisions)]
    skipped: list[Skipped] = []
    for name in dict.fromkeys(b for b, _ in wanted):
        status = BACKENDS[name].availability()
        if not status.ready:
            wanted = [(b, p) for b, p in wanted if b != name]
            if backends and name in backends:  # only mention what was asked for by name
                skipped.append(Skipped(name, f"{BACKENDS[name].title} is {status.state}: {status.reason}"))
    return wanted, skipped


def _why_nothing(skipped: Sequence[Skipped]) -> str:
    reasons = "; ".join(f"{s.backend}: {s.reason}" for s in skipped)
    return reasons or "no requested backend runs the requested precisions"


def _runnable() -> str:
    """The (backend, precision) pairs this machine can time, for the message when none was asked for."""
    ready = {name for name in dict.fromkeys(b for b, _ in VARIANTS) if BACKENDS[name].availability().ready}
    return ", ".join(f"--backend {b} --precision {p}" for b, p in VARIANTS if b in ready)


def _sweep(cases: Sequence[KernelCase], variants: Sequence[tuple[str, str]], config: TimingConfig,
           threads: int | None, peaks: Peaks, say: Progress, skipped: list[Skipped], seed: int) -> list[Timed]:
    """Per case, every variant that runs it, timed round-robin (deploykit.bench.interleave)."""
    timed: list[Timed] = []
    broken: set[tuple[str, str]] = set()
    with scratch_folder("deploykit-kernels-") as folder, torch_threads(threads):
        for number, case in enumerate(cases, start=1):
            say(Progressed("kernel sweep (shapes)", number - 1, len(cases)))
            weights = kg.random_weights(case.ops(), seed)
            inputs = _float_inputs(case, seed + 1)
            with ExitStack() as stack:
                steps: dict[tuple[str, str], Step] = {}
                for variant in (v for v in variants if v not in broken):
                    try:
                        steps[variant] = _make_step(case, *variant, weights, inputs, threads, str(folder), stack)
                        steps[variant](0)  # fails now, before the others are timed
                    except BackendUnavailable as exc:  # a backend that cannot run here cannot run the other cases
                        # Anything else is a kernel graph the backend refuses, i.e. a bug in these graphs: it is
                        # raised, not skipped (an INT32 bias once hid every TensorRT INT8 row behind a "skipped").
                        steps.pop(variant, None)
                        broken.add(variant)
                        skipped.append(Skipped(" ".join(variant), f"{type(exc).__name__}: "
                                                                  f"{first_line(exc, 200)}"))
                if not steps:
                    continue
                run = time_interleaved({" ".join(v): step for v, step in steps.items()}, config)
            for (backend, precision), timing in zip(steps, run.timings.values(), strict=True):
                # On a GPU the kernel is its compute time (CUDA events); transfers are not the kernel's.
                gpu = timing.phases_ms.get("compute")
                timed.append(Timed(case, backend, precision, gpu or timing.samples_ms,
                                   "GPU compute (CUDA events)" if gpu else "end-to-end (host)"))
                result = _result(timed[-1], peaks)
                say(f"{case.describe()}: {backend} {precision} {result.median_ms:.2f} ms, "
                    f"{result.gflops:.1f} GFLOP/s, {result.efficiency_percent:.0f}% of roofline")
        say(Progressed("kernel sweep (shapes)", len(cases), len(cases)))
    return timed


def run_kernels(*, quick: bool = False, suites: Sequence[str] = SUITES,
                backends: Sequence[str] | None = None, precisions: Sequence[str] | None = None,
                threads: int | None = None, config: TimingConfig | None = None,
                progress: Progress | None = None, seed: int = 0) -> KernelReport:
    """Time every case on every available (backend, precision); failures are skipped once with the reason.
    TensorRT kernels are measured against the GPU's peaks (measured with torch on CUDA) when torch sees one."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    probe = LoadProbe()
    config = config or (QUICK_CONFIG if quick else FULL_CONFIG)
    variants, skipped = available_variants(backends, precisions)
    if not variants:  # before the peaks are measured: a report of nothing must not read as done
        raise InputError(f"nothing to time: {_why_nothing(skipped)}; choose from {_runnable()}")
    say(f"{PEAKS_MESSAGE} ({threads or 'default'} threads, before and after)")
    peaks = measure_peaks(threads, quick=quick)
    say(f"peaks: {peaks.gemm_gflops:.1f} GFLOP/s sgemm, {peaks.copy_gbps:.1f} GB/s copy")
    gpu = measure_gpu_peaks(quick=quick) if any(BACKENDS[b].device == "gpu" for b, _ in variants) else None
    timed = _sweep(plan_cases(quick=quick, suites=suites), variants, config, threads, peaks, say, skipped, seed)
    if not timed:  # every variant failed on the first case
        raise BackendUnavailable(f"nothing was timed: {_why_nothing(skipped)}")
    load = probe.stop()
    after = measure_peaks(threads, quick=quick)
    warnings = [w for w in (load.warning(), spread_warning(peaks, after)) if w]
    if any(BACKENDS[t.backend].device == "gpu" for t in timed) and gpu is None:
        warnings.append("torch sees no CUDA device, so TensorRT kernels are set against the CPU's peaks: their "
                        "efficiencies mean nothing")
    for warning in warnings:
        say(f"warning: {warning}")
    peaks = best_of(peaks, after)
    results = [_result(t, gpu if gpu is not None and BACKENDS[t.backend].device == "gpu" else peaks) for t in timed]
    return KernelReport(results=results, skipped=skipped, peaks=peaks.to_dict(),
                        environment=environment_manifest(threads, load),
                        config={**config.to_dict(), "quick": quick, "suites": list(suites)},
                        seconds=time.perf_counter() - started, notes=NOTES + warnings,
                        gpu_peaks=gpu.to_dict() if gpu else None)


NOTES = [
    "GFLOP/s count 2 FLOPs per nominal multiply-add, zero padding included.",
    "Roofline peaks are fp32 (sgemm, array copy): fp16 and int8 may exceed 100% where the hardware has faster "
    "paths.",
    "int8 = symmetric signed Q/DQ (TensorRT's form); int8u8 = uint8 activations with zero point 128 and 7-bit "
    "weights, the form ONNX Runtime's x86 kernels fuse into QLinearConv on CPUs without VNNI without saturating.",
    "fp16 on a CPU without native fp16 arithmetic runs as Cast + fp32 kernels.",
]


def _make_step(case: KernelCase, backend: str, precision: str, weights: Sequence[kg.ConvWeights],
               inputs: Sequence[np.ndarray], threads: int | None, folder: str, stack: ExitStack) -> Step:
    if BACKENDS[backend].reference:
        return _torch_step(case.ops(), weights, inputs)
    model, feeds = _onnx_model(case, precision, weights, inputs)
    return _backend_step(BACKENDS[backend], model, feeds, threads, folder, stack, f"{backend}-{precision}")
