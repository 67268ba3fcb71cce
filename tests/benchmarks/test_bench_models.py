"""benchmarks/bench_models.py: the targets are judged right, and the script runs end to end on tiny variants."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deploykit.bench.harness import result_from_timing
from deploykit.bench.interleave import Timing
from deploykit.bench.roofline import Peaks
from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("bench_models")


def _row(model: str, medians: dict[str, float], agreement: dict[str, dict[str, float]],
         peak: float = 100.0) -> dict[str, Any]:
    results = []
    for variant, median in medians.items():
        backend, precision = variant.split()
        timing = Timing(samples_ms=[median] * 3, walltime_s=3 * median / 1e3, warmup_iterations=1)
        results.append(result_from_timing(timing, target=model, backend=backend, precision=precision, batch=1,
                                          input_shape=(1, 3, 513, 513), mode="end-to-end", threads=2,
                                          distinct_inputs=16, madds=10**10, peak_gflops=peak))
    return {"model": model, "input_size": [513, 513], "options": {}, "weights": "random initialisation",
            "task": "segmentation", "results": results, "agreement": agreement}


def test_targets_are_judged_per_model_kind(script: ModuleType) -> None:
    # 2e10 FLOP: 200 ms = 100 GFLOP/s = 100% of a 100 GFLOP/s peak; 400 ms = 50%
    separable = _row("deeplabv3plus_mobilenetv2", {"torch fp32": 1000.0, "onnxruntime fp32": 300.0,
                                                   "onnxruntime int8": 250.0},
                     {"onnxruntime int8": {"pixel_agreement": 0.997, "miou": 0.98}})
    checks = script._checks(separable)
    assert "ONNX Runtime fp32 >= 2.5x eager: 3.33x, met" in checks[0]
    assert "INT8 >= 1.3x fp32: 1.20x, MISSED" in checks[1]
    assert "pixel agreement >= 99.5%: 99.7%, met" in checks[2]
    dense = _row("deeplabv3plus_resnet50", {"torch fp32": 300.0, "onnxruntime fp32": 250.0,
                                            "onnxruntime int8": 150.0},
                 {"onnxruntime int8": {"pixel_agreement": 0.99, "miou": 0.9}})
    checks = script._checks(dense)
    assert "70% of the GEMM peak: 80.0%, met" in checks[0]  # 2e10 FLOP in 250 ms = 80 GFLOP/s
    assert "INT8 >= 1.3x fp32: 1.67x, met" in checks[1]
    assert "99.0%, MISSED" in checks[2]
    peaks = Peaks(100.0, 10.0, 2, 2048, 128.0, 1.0)
    text = script.markdown([separable, dense], {"msinet": "export failed"}, peaks,
                           {"cpu": "AMD EPYC", "cores": 2, "versions": {}}, False, [])
    row = "| deeplabv3plus_mobilenetv2 | 513x513 | 10.0 | 1,000.0 | 300.0 | - | 250.0 | 3.33x | 1.20x | 20.0 | 66.7 |"
    assert row in text
    assert "msinet: FAILED: export failed" in text and "Tiny" not in text


@pytest.mark.slow
def test_tiny_run_end_to_end(script: ModuleType, tmp_path: Path) -> None:
    code = script.main(["--tiny", "--models", "deeplabv3plus_mobilenetv2", "--out-dir", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "bench_models.json").read_text())
    (model,) = data["models"]
    assert {(r["backend"], r["precision"]) for r in model["results"]} == {
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8")}
    assert all(r["input_shape"] == [1, 3, 65, 65] for r in model["results"])
    assert 0.0 <= model["agreement"]["onnxruntime int8"]["pixel_agreement"] <= 1.0
    assert "Tiny test variants" in (tmp_path / "bench_models.md").read_text()
