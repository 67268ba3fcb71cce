"""`deploykit doctor --selftest --full`: the user's first minutes on a GPU, in one run and one verdict.

The zoo model (DeepLabv3+ MobileNetV2, 5.8 M parameters, at 257x257 by default) is exported and built into FP32,
FP16 and INT8 TensorRT engines through build-engine's own path (deploykit.build.build_artifact: precision pass,
lint, engine, precision audit); then:
- each engine: parity with ONNX Runtime running the FP32 source (logit cosine, pixel agreement) and the precision
  audit (at least AUDIT_SHARE of its FLOPs in its precision; roboflow/rf-detr#1453);
- the FP16 engine replayed from a CUDA graph: replays agree with a plain run within REPLAY_TOLERANCE of the
  output's scale (not bit for bit: each execution context may take other tactics' reduction orders);
- speed: the three engines timed round-robin from CUDA graphs (GPU compute time from CUDA events, medians); the
  verdict names the fastest engine whose parity passed, which TensorRT should ship, and says so when INT8 is not
  faster than FP16 (MMDeploy's T4 table has exactly that for DeepLabv3+).
Then the tiny graph's checks (selftest_tiny.py: ConvTranspose, residual Add, Concat and Resize in FP16 and INT8
with both float remainders, a version-compatible build with --require-precision, an argmax head, a dynamic
engine at min/opt/max with CUDA graphs, a shape outside its profile, a timing cache read back with hits).
Every check runs even when an earlier one fails (selftest_checks.Session): the verdict lists what works and what
does not, never a traceback. Images: scikit-image's photographs when installed, else synthetic scenes. The zoo
model has seeded random weights, hence loose INT8 bounds: the point is a working toolchain, not accuracy
(`deploykit parity` measures that). `--evidence DIR` writes the run for a bug report (selftest_evidence.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.base import resolve_backend
from deploykit.backends.tensorrt.backend import availability as tensorrt_availability
from deploykit.backends.tensorrt.runner import TensorRTRunner
from deploykit.bench.interleave import Step, TimingConfig, time_interleaved
from deploykit.build import build_artifact
from deploykit.doctor import selftest_evidence, selftest_tiny
from deploykit.doctor.selftest_checks import (
    FullSelfTestResult,
    Session,
    Verdict,
    audit_check,
    engine_outputs,
    parity,
    reference_outputs,
    selftest_images,
)
from deploykit.errors import BackendUnavailable
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.outputs import scratch_folder
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import PRECISIONS, precision_of
from deploykit.types import Progress, Progressed
from deploykit.zoo.sources import load_model

MODEL = "deeplabv3plus_mobilenetv2"
SIZE = (257, 257)
# The precisions tested, and each one's minimum logit cosine and pixel agreement vs FP32 ONNX Runtime: their
# entries' selftest_bounds (FP32 on TensorRT runs convolutions in TF32).
TESTED = tuple(p.name for p in PRECISIONS.values() if p.selftest_bounds is not None)
REPLAY_TOLERANCE = 1e-3  # max |replay - plain run| over max |plain run|
# The engines' speed through deploykit's one timing core (bench.interleave): round-robin, one replay of each per
# round, 0.6 s each and at least 10 rounds; two untimed runs first (warm-up, then the CUDA-graph capture). No
# pause between calls: CUDA events time the GPU's compute, which no CPU runtime's spinning threads disturb.
TIMING = TimingConfig(warmup_s=0.0, min_warmup_iterations=2, duration_s=0.6, min_iterations=10, pause_s=0.0)


def _simulated(version: str) -> bool:
    """deploykit's TensorRT test double labels its version (tests/fakes/tensorrt_double)."""
    return "testdouble" in version


def full_selftest(progress: Progress | None = None, *, model: str = MODEL, size: tuple[int, int] = SIZE,
                  options: Mapping[str, Any] | None = None, calib_n: int = 4,
                  evidence: Path | None = None) -> FullSelfTestResult:
    """Run every check (see the module docstring); BackendUnavailable when TensorRT cannot run here at all.
    With `evidence`, write the run there (selftest_evidence.write_evidence), also when TensorRT cannot run."""
    log: list[str] = []

    def say(message: str | Progressed) -> None:
        if isinstance(message, str):  # counts (Progressed) are for the progress bar, not the log
            log.append(message)
        if progress is not None:
            progress(message)

    status = tensorrt_availability()
    result = FullSelfTestResult(status.version, "?", f"{model} at {size[0]}x{size[1]}",
                                simulated=_simulated(status.version))
    if not status.ready:
        error = BackendUnavailable(f"the TensorRT self-test cannot run: TensorRT is {status.describe()}")
        if evidence is not None:
            selftest_evidence.write_evidence(evidence, result, {}, log, error=str(error))
        raise error
    started = time.perf_counter()
    session = Session(result, say)
    with scratch_folder("deploykit-selftest-") as tmp:
        folder = Path(tmp)
        _zoo_checks(session, folder, model, size, options, calib_n)
        selftest_tiny.tiny_checks(session, folder, calib_n)
        result.seconds = time.perf_counter() - started
        if evidence is not None:
            engines = {k.removeprefix("engine:"): v for k, v in session.made.items() if k.startswith("engine:")}
            selftest_evidence.write_evidence(evidence, result, engines, log)
    return result


def _zoo_checks(session: Session, folder: Path, model: str, size: tuple[int, int],
                options: Mapping[str, Any] | None, calib_n: int) -> None:
    source, images_path = folder / f"{model}.onnx", folder / f"{model}.images.npy"

    def export() -> Verdict:
        exported = onnx_from_torch(load_model(model, options=options), source, input_shape=(1, 3, *size),
                                   simplify=False, progress=session.say)
        images, what = selftest_images(size, calib_n)
        np.save(images_path, images)
        session.result.images = what
        session.made["feed"] = images[:1]
        session.made["reference"] = reference_outputs(source, images[:1])
        return Verdict(exported.passed, f"{model} exported and checked against PyTorch; reference from ONNX "
                                        "Runtime (FP32)")

    session.check("export + ONNX Runtime reference", export)
    for precision in TESTED:
        plan = folder / f"{model}.{precision}.plan"
        name = f"{precision} build"
        session.check(name, partial(_build, session, source, plan, precision, images_path, calib_n),
                      needs=["export + ONNX Runtime reference"])
        session.check(f"{precision} parity", partial(_parity, session, plan, _bounds(precision)), needs=[name])
        session.check(f"{precision} audit", partial(audit_check, plan, precision), needs=[name])
    fp16 = folder / f"{model}.fp16.plan"
    session.check("fp16 CUDA-graph replay", lambda: _replay(fp16, session.made["feed"]), needs=["fp16 build"])
    plans = {p: folder / f"{model}.{p}.plan" for p in TESTED}
    session.check("speed: INT8 vs FP16 vs FP32", lambda: _speed(session, plans),
                  needs=[f"{p} build" for p in TESTED])


def _bounds(precision: str) -> tuple[float, float]:
    bounds = precision_of(precision).selftest_bounds
    assert bounds is not None
    return bounds


def _build(session: Session, source: Path, plan: Path, precision: str, images: Path, calib_n: int) -> Verdict:
    engine, note = resolve_backend("tensorrt")
    built = build_artifact(source, plan, precision=precision_of(precision), backend=engine, backend_note=note,
                           progress=session.say,
                           calibration=CalibrationOptions(data=str(images), n=calib_n, use_cache=False), force=True)
    session.result.gpu = str(built.sidecar.device.get("gpu", "?"))
    session.made[f"engine:{plan.stem}"] = plan
    remainder = built.sidecar.build_options.get("float_remainder")
    rest = f"; float ops outside INT8: {remainder['kind'].upper()}" if remainder else ""
    return Verdict(True, f"{built.backend_note}, {built.seconds:.1f} s{rest}", {"seconds": built.seconds})


def _parity(session: Session, plan: Path, bounds: tuple[float, float]) -> Verdict:
    return parity(plan, session.made["reference"], session.made["feed"], bounds)


def _replay(plan: Path, x: np.ndarray) -> Verdict:
    want = engine_outputs(plan, x)
    with TensorRTRunner.from_artifact(plan, cuda_graph=True) as graphed:
        name = graphed.input_specs()[0].name
        runs = [next(iter(graphed.infer({name: x}).values())) for _ in range(3)]  # warm-up, capture, replay
    scale = float(np.abs(want).max()) or 1.0
    worst = max(float(np.abs(run.astype(np.float64) - want).max()) for run in runs) / scale
    return Verdict(worst <= REPLAY_TOLERANCE, f"warm-up, capture and replay within {worst:.2e} of a plain run "
                                              f"(relative to the output's scale; <= {REPLAY_TOLERANCE:g})",
                   {"max_relative_difference": worst})


def _replay_step(runner: TensorRTRunner, feed: dict[str, np.ndarray]) -> Step:
    runner.validate_feed(feed)  # once, before timing
    return lambda _i: runner.infer_timed(feed, validate=False)


def _speed(session: Session, plans: Mapping[str, Path]) -> Verdict:
    """GPU compute medians of the engines, timed round-robin from CUDA graphs; which one TensorRT should ship."""
    x = session.made["feed"]
    with ExitStack() as stack:
        runners = {p: TensorRTRunner.from_artifact(path, cuda_graph=True) for p, path in plans.items()}
        for runner in runners.values():
            stack.enter_context(runner)
        steps = {p: _replay_step(runner, {runner.input_specs()[0].name: x}) for p, runner in runners.items()}
        run = time_interleaved(steps, TIMING)
    samples = {p: run.timings[p].phases_ms.get("compute") or run.timings[p].samples_ms for p in plans}
    medians = {p: statistics.median(v) for p, v in samples.items()}
    counts = ", ".join(f"{len(v)}" for v in samples.values())
    shown = ", ".join(f"{p.upper()} {medians[p]:.3f} ms" for p in plans)
    eligible = [p for p in plans if session.passed(f"{p} parity")]
    best = min(eligible or list(plans), key=lambda p: medians[p])
    figures = {"median_compute_ms": medians, "samples": {p: len(v) for p, v in samples.items()},
               "machine_load": run.load.to_dict()}
    if session.result.simulated:  # host times of ONNX Runtime behind the double: no advice about TensorRT
        return Verdict(True, f"test double, not TensorRT: CPU host-time medians ({counts} runs) {shown}", figures)
    advice = f"ship {best.upper()}" if eligible else f"no engine passed parity; {best.upper()} is fastest"
    if "int8" in medians and "fp16" in medians and medians["int8"] >= medians["fp16"]:
        advice += (f"; INT8 is not faster than FP16 here ({medians['int8']:.3f} vs {medians['fp16']:.3f} ms): "
                   "check its depthwise/grouped convolutions and unfused Q/DQ (`deploykit lint` on the int8 graph)")
    return Verdict(True, f"GPU compute medians (CUDA events; CUDA graphs, round-robin, {counts} runs): {shown}; "
                         f"{advice}", {**figures, "ship": best})
