"""`deploykit doctor --selftest`: build a tiny TensorRT engine and check it against ONNX Runtime, in seconds.

A three-layer convolutional net (a strided conv, a dilated conv, a 1x1 head; 1x3x64x64) is exported to
ONNX in memory, built with deploykit's own engine_from_onnx and run with TensorRTRunner, so the check covers
the same path build-engine, parity and bench use. TensorRT runs FP32 convolutions in TF32 on Ampere and
later by default, hence a tolerance relative to the output's scale rather than float32's.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.tensorrt.backend import availability as tensorrt_availability
from deploykit.backends.tensorrt.build import engine_from_onnx
from deploykit.backends.tensorrt.runner import TensorRTRunner
from deploykit.errors import BackendUnavailable
from deploykit.io.outputs import scratch_folder
from deploykit.metrics.numeric import numeric_metrics
from deploykit.types import Progress

SHAPE = (1, 3, 64, 64)
MIN_COSINE = 0.9999
REL_TOL = 1e-2  # of max |reference|; TF32 convolutions are about 1e-3 relative


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    tensorrt_version: str
    gpu: str
    max_abs: float
    ref_scale: float
    cosine: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"{verdict}: TensorRT {self.tensorrt_version} on {self.gpu}, tiny conv net engine vs ONNX Runtime: "
                f"max |diff| {self.max_abs:.3g} (output scale {self.ref_scale:.3g}), cosine {self.cosine:.6f}, "
                f"{self.seconds:.1f} s")


def _tiny_onnx() -> bytes:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice is noise here
        torch.onnx.export(net, (torch.randn(SHAPE),), buffer, dynamo=False,  # type: ignore[arg-type]
                          opset_version=18, input_names=["input"], output_names=["output"])
    return buffer.getvalue()


def selftest(progress: Progress | None = None) -> SelfTestResult:
    """Raise BackendUnavailable (saying why) when TensorRT cannot run here; else build, run and compare."""
    status = tensorrt_availability()
    if not status.ready:
        raise BackendUnavailable(f"the TensorRT self-test cannot run: TensorRT is {status.describe()}")

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    with scratch_folder("deploykit-selftest-") as tmp:
        onnx_path, plan = Path(tmp) / "tiny.onnx", Path(tmp) / "tiny.plan"
        onnx_path.write_bytes(_tiny_onnx())
        say("building a tiny TensorRT engine")
        sidecar = engine_from_onnx(onnx_path, plan, force=True)
        feed = {"input": np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)}
        with OnnxRuntimeRunner(onnx_path) as reference:
            expected = reference.infer(feed)["output"]
        with TensorRTRunner.from_artifact(plan) as engine:
            got = engine.infer(feed)["output"]
    metrics = numeric_metrics(expected, got)
    scale = float(np.abs(expected).max())
    passed = (metrics.nan == 0 and metrics.inf == 0 and metrics.cosine >= MIN_COSINE
              and metrics.max_abs <= REL_TOL * scale + 1e-4)
    return SelfTestResult(passed, sidecar.backend_version, str(sidecar.device.get("gpu", "?")), metrics.max_abs,
                          scale, metrics.cosine, time.perf_counter() - started)
