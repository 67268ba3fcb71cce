"""One speed-up rule: the verdict and the report's latency table divide medians per image, whatever the batch."""

from __future__ import annotations

import pytest

from deploykit.backends.base import ONNX_RUNNER, REFERENCE
from deploykit.bench.harness import BenchResult
from deploykit.bench.run import BenchReport
from deploykit.bench.stats import summarize
from deploykit.pipeline.report import _ratio_rows
from deploykit.pipeline.verdict import artifact_latency, reference_latency, speedup
from deploykit.precision.table import BASELINE, PRECISIONS


def _run(backend: str, precision: str, batch: int, median_ms: float) -> BenchResult:
    return BenchResult(target="m", backend=backend, precision=precision, batch=batch, input_shape=(batch, 3, 8, 8),
                       mode="sync", latency=summarize([median_ms]), throughput_qps=0.0, images_per_s=0.0,
                       walltime_s=0.0, warmup_iterations=0, distinct_inputs=1, threads=1)


def test_the_report_and_the_verdict_divide_alike() -> None:
    lowered = next(p.name for p in PRECISIONS.values() if p.lowered)
    results = [_run(REFERENCE.name, BASELINE.name, 2, 40.0), _run(ONNX_RUNNER.name, BASELINE.name, 1, 10.0),
               _run(ONNX_RUNNER.name, lowered, 4, 20.0)]
    torch, fp32 = reference_latency(results), artifact_latency(results, BASELINE.name)
    assert (torch, fp32) == (20.0, 10.0)  # per image
    mine = artifact_latency(results, lowered)
    assert speedup(mine, torch) == pytest.approx(4.0) and speedup(mine, fp32) == pytest.approx(2.0)
    report = BenchReport(results=results, skipped=[], environment={}, peaks=None, config={})
    rows = {row[0]: row[2:] for row in _ratio_rows(report)}
    assert rows[f"{ONNX_RUNNER.name} {lowered}"] == pytest.approx([speedup(mine, torch), speedup(mine, fp32)])
    assert speedup(None, torch) is None and speedup(mine, None) is None
