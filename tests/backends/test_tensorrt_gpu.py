"""On a machine with an NVIDIA GPU and TensorRT: the real thing, no double. Skipped here with the reason
(tests/conftest.py): these are the tests to run once on the target GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.tensorrt.build import TensorRTBuildOptions, TensorRTRunner, engine_from_onnx
from deploykit.doctor.selftest import selftest
from deploykit.io.images import preprocess
from deploykit.types import IMAGENET

pytestmark = [pytest.mark.gpu, pytest.mark.trt]


def test_selftest_passes_on_this_gpu() -> None:
    result = selftest()
    assert result.passed, result.describe()


def test_real_engine_matches_onnx_runtime(tiny_onnx: Path, tmp_path: Path) -> None:
    plan = tmp_path / "tiny.plan"
    engine_from_onnx(tiny_onnx, plan, TensorRTBuildOptions(timing_cache=str(tmp_path / "timing.cache")))
    feed = {"input": preprocess(data.astronaut(), IMAGENET, (64, 64))}
    with OnnxRuntimeRunner(tiny_onnx) as reference:
        want = reference.infer(feed)["output"]
    for cuda_graph in (False, True):
        with TensorRTRunner.from_artifact(plan, cuda_graph=cuda_graph) as engine:
            for _ in range(3):
                got, times = engine.infer_timed(feed)
        scale = float(np.abs(want).max())
        assert np.abs(got["output"] - want).max() <= 1e-2 * scale  # TF32 convolutions
        assert times["compute_ms"] > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0


def test_full_selftest_passes_on_this_gpu(tmp_path: Path) -> None:
    from deploykit.doctor.selftest_full import full_selftest

    result = full_selftest(evidence=tmp_path / "evidence")
    assert result.passed, result.describe()
    assert not result.simulated and not (tmp_path / "evidence" / "README.txt").read_text().startswith("SIMULATED")
    assert result.seconds < 300  # issues 11 and 19: under 5 minutes on one GPU
