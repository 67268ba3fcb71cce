"""The pieces every full self-test check shares: its verdict, the session that runs checks so that none ends
the run, the test images, parity against ONNX Runtime, and the audit check.

A check returns a Verdict (passed, a one-line detail, figures for the evidence). The session turns what a check
raises into its line: a DeployKitError is deploykit's verdict on this machine (TensorRT refused a graph, a
GPU cannot capture a graph...): FAIL with the error's type and first line; anything else means the check could
not run (a bug to report): "could not run" with the exception's type and first line. A check whose inputs
did not come about (its build failed) says which, and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.tensorrt.audit import PrecisionAudit
from deploykit.backends.tensorrt.runner import TensorRTRunner
from deploykit.errors import BackendUnavailable, DeployKitError, first_line
from deploykit.io.images import preprocess, sample_photographs
from deploykit.io.sidecar import read_sidecar
from deploykit.metrics.numeric import numeric_metrics
from deploykit.metrics.scores import task_metrics
from deploykit.types import IMAGENET, Progress

REPORT = ("to report a failure, run `deploykit doctor --selftest --full --evidence DIR` and attach DIR (zipped) "
          "to an issue")
AUDIT_SHARE = 0.9  # of the engine's FLOPs in the precision asked for (roboflow/rf-detr#1453: an "FP16" engine at 0%)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: could not run (an unexpected exception, or a check it needs did not pass)
    detail: str
    seconds: float = 0.0
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mark(self) -> str:
        return {True: "ok  ", False: "FAIL", None: "n/a "}[self.passed]


@dataclass
class FullSelfTestResult:
    tensorrt_version: str
    gpu: str
    model: str
    images: str = ""  # what the parity and calibration images are
    simulated: bool = False  # run through deploykit's TensorRT test double: nothing here is a TensorRT figure
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed is True for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        source = "TensorRT TEST DOUBLE (ONNX Runtime on the CPU; not TensorRT results)" if self.simulated else \
            "TensorRT"
        lines = [f"{source} {self.tensorrt_version} on {self.gpu}; {self.model}; images: {self.images}"]
        width = max((len(c.name) for c in self.checks), default=0)
        lines += [f"  {c.mark} {c.name:<{width}}  {c.detail}" for c in self.checks]
        failed = [c.name for c in self.checks if c.passed is False]
        unrun = [c.name for c in self.checks if c.passed is None]
        if self.passed:
            verdict = f"verdict: all {len(self.checks)} checks passed in {self.seconds:.0f} s"
        else:
            parts = [f"{len(failed)} failed ({', '.join(failed)})" if failed else "",
                     f"{len(unrun)} could not run ({', '.join(unrun)})" if unrun else ""]
            verdict = f"verdict: of {len(self.checks)} checks, {'; '.join(p for p in parts if p)}; {REPORT}"
        return "\n".join([*lines, verdict])


def error_text(exc: BaseException) -> str:
    """The exception's type and the first line of its message."""
    text = first_line(exc, 300, default="")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Session:
    """Runs checks in order; remembers which passed and what they made (engines, arrays) for later checks."""

    def __init__(self, result: FullSelfTestResult, say: Progress) -> None:
        self.result, self.say = result, say
        self.made: dict[str, Any] = {}

    def passed(self, name: str) -> bool:
        return any(c.name == name and c.passed is True for c in self.result.checks)

    def check(self, name: str, step: Callable[[], Verdict], *, needs: Sequence[str] = ()) -> bool:
        missing = [n for n in needs if not self.passed(n)]
        if missing:
            self.result.checks.append(Check(name, None, f"not run: {', '.join(missing)} did not pass"))
            return False
        self.say(f"self-test: {name}")
        started = time.perf_counter()
        try:
            verdict = step()
        except DeployKitError as exc:
            check = Check(name, False, error_text(exc), time.perf_counter() - started)
        except Exception as exc:  # the verdict must come whatever a library raises; it says what and where
            check = Check(name, None, f"could not run: {error_text(exc)}", time.perf_counter() - started)
        else:
            check = Check(name, verdict.passed, verdict.detail, time.perf_counter() - started, dict(verdict.figures))
        self.result.checks.append(check)
        self.say(f"self-test: {check.mark.strip()} {name}: {check.detail}")
        return check.passed is True


def selftest_images(size: tuple[int, int], count: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """`count` preprocessed 1x3xHxW images stacked (N,3,H,W), and what they are: scikit-image's photographs
    (mirrored for more) when it is installed, else deterministic synthetic scenes (smooth colour gradients with
    a few flat shapes: edges and regions a segmenter responds to, unlike noise)."""
    try:
        photos = sample_photographs()
        what = "scikit-image photographs"
    except BackendUnavailable:
        photos = [_scene(np.random.default_rng(seed + i), size) for i in range(count)]
        what = "synthetic scenes (scikit-image is not installed or fails to import)"
    pool = [*photos, *(p[:, ::-1] for p in photos)]
    return np.concatenate([preprocess(pool[i % len(pool)], IMAGENET, size) for i in range(count)]), what


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / np.array([max(h - 1, 1), max(w - 1, 1)])[:, None, None]
    image = np.stack([rng.uniform(0.2, 1) * x + rng.uniform(0, 0.5) * y + rng.uniform(0, 0.3) for _ in range(3)],
                     axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        mask = (y - cy) ** 2 + (x - cx) ** 2 < r * r
        image[mask] = rng.uniform(0, 1, 3)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def reference_outputs(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """Output 0 of the FP32 ONNX on ONNX Runtime: what every engine is compared with."""
    with OnnxRuntimeRunner(onnx_path) as runner:
        name = runner.input_specs()[0].name
        return next(iter(runner.infer({name: x}).values()))


def engine_outputs(plan: Path, x: np.ndarray, *, cuda_graph: bool = False) -> np.ndarray:
    with TensorRTRunner.from_artifact(plan, cuda_graph=cuda_graph) as runner:
        name = runner.input_specs()[0].name
        return next(iter(runner.infer({name: x}).values()))


def parity(plan: Path, reference: np.ndarray, x: np.ndarray, bounds: tuple[float, float], *,
           pixels: bool = True) -> Verdict:
    """Logit cosine (and pixel agreement of the arg-max) of the engine against the ONNX Runtime reference."""
    got = engine_outputs(plan, x)
    cosine = numeric_metrics(reference, got).cosine
    low_cos, low_agree = bounds
    figures: dict[str, Any] = {"cosine": cosine}
    detail = f"cosine {cosine:.5f} (>= {low_cos})"
    passed = cosine >= low_cos
    if pixels:
        agreement = task_metrics("segmentation", reference, got)["pixel_agreement"]
        figures["pixel_agreement"] = agreement
        detail += f", pixel agreement {agreement:.4f} (>= {low_agree})"
        passed = passed and agreement >= low_agree
    return Verdict(passed, detail, figures)


def audit_check(plan: Path, precision: str, share: float | None = None) -> Verdict:
    """At least `share` (default AUDIT_SHARE) of the engine's FLOPs (of its layers when FLOPs are not known) run
    in `precision`, as the build's precision audit read it from the engine inspector."""
    share = AUDIT_SHARE if share is None else share
    sidecar = read_sidecar(plan)
    record = sidecar.build_options.get("precision_audit") if sidecar else None
    if not record:
        return Verdict(False, "the build recorded no precision audit")
    audit = PrecisionAudit.from_dict(record)
    if not audit.readable:
        return Verdict(False, audit.format_problem(), {"audit": audit.to_dict()})
    got = audit.share(precision)
    of = "FLOPs" if audit.flops else "layers"
    uncounted = f", {len(audit.uncounted)} layers not counted" if audit.uncounted else ""
    return Verdict(got >= share, f"{got:.1%} of {of} in {precision.upper()} (>= {share:.0%}), {audit.layers} layers"
                                 f"{uncounted}, inspector {audit.layout} JSON", {"share": got})
