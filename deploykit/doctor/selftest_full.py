"""`deploykit doctor --selftest --full`: the user's first minutes on a GPU, in one run and one screen.

A small zoo model (DeepLabv3+ MobileNetV2, 5.8 M parameters, at 257x257 by default) is exported, built into
FP16 and INT8 TensorRT engines through build-engine's own path (deploykit.build.build_artifact: precision pass,
lint, engine, precision audit), and each engine is checked:
- parity with ONNX Runtime running the FP32 source on a photograph (cosine of the logits, pixel agreement);
- the precision audit: at least AUDIT_SHARE of its FLOPs in the precision asked for (roboflow/rf-detr#1453);
then the FP16 engine is replayed from a CUDA graph (outputs identical to the plain run) and timed briefly.
Every check runs even when an earlier one fails (a failed build skips what needs its engine), so the verdict
lists everything that works and what does not, with what to report. The model has its seeded random weights,
hence loose INT8 bounds: the point is a working toolchain, not accuracy (`deploykit parity` measures that).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.base import resolve_backend
from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.tensorrt.audit import PrecisionAudit
from deploykit.backends.tensorrt.backend import availability as tensorrt_availability
from deploykit.backends.tensorrt.runner import TensorRTRunner
from deploykit.build import build_artifact
from deploykit.errors import BackendUnavailable, DeployKitError
from deploykit.export import onnx_from_torch
from deploykit.io.images import preprocess
from deploykit.io.sidecar import read_sidecar
from deploykit.metrics.numeric import numeric_metrics
from deploykit.metrics.scores import task_metrics
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import PRECISIONS, Precision
from deploykit.types import IMAGENET, Progress, Task
from deploykit.zoo.sources import load_model

MODEL = "deeplabv3plus_mobilenetv2"
SIZE = (257, 257)
AUDIT_SHARE = 0.9
BENCH_ITERATIONS = 20
REPORT = ("to report a failure, open an issue with the output of `deploykit doctor --selftest --full --json` "
          "and `nvidia-smi`")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: skipped (a step it needs failed)
    detail: str
    seconds: float = 0.0


@dataclass
class FullSelfTestResult:
    tensorrt_version: str
    gpu: str
    model: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        marks = {True: "ok  ", False: "FAIL", None: "skip"}
        lines = [f"TensorRT {self.tensorrt_version} on {self.gpu}; {self.model}"]
        lines += [f"  {marks[c.passed]} {c.name:<22} {c.detail}" for c in self.checks]
        failed = [c.name for c in self.checks if c.passed is False]
        verdict = (f"verdict: all {len(self.checks)} checks passed in {self.seconds:.0f} s" if self.passed else
                   f"verdict: {len(failed)} of {len(self.checks)} checks failed ({', '.join(failed)}); {REPORT}")
        return "\n".join([*lines, verdict])


def _photo(size: tuple[int, int]) -> np.ndarray:
    from skimage import data

    return preprocess(data.astronaut(), IMAGENET, size)


def _timed(checks: list[Check], name: str, step: Callable[[], tuple[bool, str]]) -> bool:
    started = time.perf_counter()
    try:
        passed, detail = step()
    except DeployKitError as exc:
        passed, detail = False, str(exc).splitlines()[0]
    checks.append(Check(name, passed, detail, time.perf_counter() - started))
    return passed


def _parity(plan: Path, reference: np.ndarray, feed: Mapping[str, np.ndarray], precision: Precision,
            task: Task) -> tuple[bool, str]:
    """Its bounds are the precision entry's selftest_bounds (minimum logit cosine and pixel agreement)."""
    with TensorRTRunner.from_artifact(plan) as engine:
        got = next(iter(engine.infer(feed).values()))
    cosine = numeric_metrics(reference, got).cosine
    agreement = task_metrics(task, reference, got)["pixel_agreement"]
    assert precision.selftest_bounds is not None
    low_cos, low_agree = precision.selftest_bounds
    return (cosine >= low_cos and agreement >= low_agree,
            f"cosine {cosine:.5f} (>= {low_cos}), pixel agreement {agreement:.4f} (>= {low_agree})")


def _audit(plan: Path, precision: str) -> tuple[bool, str]:
    sidecar = read_sidecar(plan)
    record = sidecar.build_options.get("precision_audit") if sidecar else None
    if not record:
        return False, "the build recorded no precision audit"
    audit = PrecisionAudit.from_dict(record)
    share = audit.share(precision)
    of = "FLOPs" if audit.flops else "layers"
    return share >= AUDIT_SHARE, (f"{share:.1%} of {of} in {precision.upper()} (>= {AUDIT_SHARE:.0%}), "
                                  f"{audit.layers} layers, inspector {audit.layout} JSON")


def _graph_and_bench(plan: Path, feed: Mapping[str, np.ndarray]) -> tuple[bool, str]:
    with TensorRTRunner.from_artifact(plan) as plain:
        want = next(iter(plain.infer(feed).values()))
    graphed = TensorRTRunner.from_artifact(plan, cuda_graph=True)
    with graphed:
        runs = [next(iter(graphed.infer(feed).values())) for _ in range(3)]  # warm-up, capture, replay
        times = [graphed.infer_timed(feed)[1] for _ in range(BENCH_ITERATIONS)]
    same = all(np.array_equal(run, want) for run in runs)
    latency = float(np.median([t["latency_ms"] for t in times]))
    compute = float(np.median([t["compute_ms"] for t in times]))
    return same, (f"replayed outputs {'identical to' if same else 'DIFFER from'} the plain run; median of "
                  f"{BENCH_ITERATIONS} (graph replay, with transfers): latency {latency:.3f} ms, "
                  f"compute {compute:.3f} ms")


def full_selftest(progress: Progress | None = None, *, model: str = MODEL, size: tuple[int, int] = SIZE,
                  options: Mapping[str, Any] | None = None, calib_n: int = 8) -> FullSelfTestResult:
    """Run every check (see the module docstring); BackendUnavailable when TensorRT cannot run here at all."""
    status = tensorrt_availability()
    if not status.ready:
        raise BackendUnavailable(f"the TensorRT self-test cannot run: TensorRT {status.version} is {status.state}: "
                                 f"{status.reason}")
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    result = FullSelfTestResult(status.version, "?", f"{model} at {size[0]}x{size[1]}")
    with tempfile.TemporaryDirectory(prefix="deploykit-selftest-") as tmp:
        source = Path(tmp) / f"{model}.onnx"
        say(f"exporting {model} ({size[0]}x{size[1]})")
        loaded = load_model(model, options=options)
        onnx_from_torch(loaded, source, input_shape=(1, 3, *size), simplify=False)
        feed = {"input": _photo(size)}

        with OnnxRuntimeRunner(source) as reference_runner:
            name = reference_runner.input_specs()[0].name
            feed = {name: feed["input"]}
            reference = next(iter(reference_runner.infer(feed).values()))
        plans: dict[str, Path] = {}
        tested = [p for p in PRECISIONS.values() if p.selftest_bounds is not None]  # FP16 and INT8
        engine, note = resolve_backend("tensorrt")
        for precision in tested:
            plan = Path(tmp) / f"{model}.{precision.name}.plan"

            def build(precision: Precision = precision, plan: Path = plan) -> tuple[bool, str]:
                say(f"building the {precision.name} engine")
                built = build_artifact(source, plan, precision=precision, backend=engine, backend_note=note,
                                       progress=say,
                                       calibration=CalibrationOptions(data="photos", n=calib_n))
                result.gpu = str(built.sidecar.device.get("gpu", "?"))
                return True, f"{built.backend_note}, {built.seconds:.1f} s"

            if _timed(result.checks, f"{precision.name} build", build):
                plans[precision.name] = plan
                _timed(result.checks, f"{precision.name} parity",
                       partial(_parity, plan, reference, feed, precision, loaded.spec.task))
                _timed(result.checks, f"{precision.name} audit", partial(_audit, plan, precision.name))
            else:
                result.checks += [Check(f"{precision.name} parity", None, "no engine"),
                                  Check(f"{precision.name} audit", None, "no engine")]
        first = tested[0].name  # the CUDA graph is replayed on the first precision's engine (FP16)
        if first in plans:
            _timed(result.checks, f"{first} CUDA graph, bench", lambda: _graph_and_bench(plans[first], feed))
        else:
            result.checks.append(Check(f"{first} CUDA graph, bench", None, f"no {first} engine"))
    result.seconds = time.perf_counter() - started
    return result
