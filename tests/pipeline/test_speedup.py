"""One speed-up rule (bench.harness.speedup): the verdict, the report's latency table and `bench` divide medians
per image, whatever the batch, each with the interval of that ratio."""

from __future__ import annotations

import pytest

from deploykit.backends.base import ONNX_RUNNER, REFERENCE
from deploykit.bench.harness import BenchResult, speedup
from deploykit.bench.run import BenchReport
from deploykit.bench.stats import summarize
from deploykit.pipeline.report import _ratio_rows
from deploykit.pipeline.verdict import artifact_latency, artifact_run, reference_run
from deploykit.precision.table import BASELINE, PRECISIONS


def _run(backend: str, precision: str, batch: int, median_ms: float) -> BenchResult:
    samples = [median_ms * f for f in (0.98, 1.0, 1.02)]
    return BenchResult(target="m", backend=backend, precision=precision, batch=batch, input_shape=(batch, 3, 8, 8),
                       mode="sync", latency=summarize(samples), throughput_qps=0.0, images_per_s=0.0,
                       walltime_s=0.0, warmup_iterations=0, distinct_inputs=1, threads=1, samples_ms=samples)


def test_the_report_and_the_verdict_divide_alike() -> None:
    lowered = next(p.name for p in PRECISIONS.values() if p.lowered)
    results = [_run(REFERENCE.name, BASELINE.name, 2, 40.0), _run(ONNX_RUNNER.name, BASELINE.name, 1, 10.0),
               _run(ONNX_RUNNER.name, lowered, 4, 20.0)]
    assert artifact_latency(results, BASELINE.name) == 10.0 and artifact_latency(results, lowered) == 5.0
    torch, fp32, mine = reference_run(results), artifact_run(results, BASELINE.name), artifact_run(results, lowered)
    assert torch is not None and fp32 is not None and mine is not None
    over_torch, over_fp32 = speedup(torch, mine), speedup(fp32, mine)  # per image: 20 / 5 and 10 / 5
    assert over_torch.value == pytest.approx(4.0) and over_fp32.value == pytest.approx(2.0)
    assert over_torch.low <= over_torch.value <= over_torch.high
    report = BenchReport(results=results, skipped=[], environment={}, peaks=None, config={})
    rows = {(row[0], row[1]): row[3:] for row in _ratio_rows(report)}
    assert rows[(f"{ONNX_RUNNER.name} {lowered}", 4)] == [over_torch.text(), over_fp32.text()]


def test_each_batch_of_a_run_is_a_row_of_its_own() -> None:
    """--input-shape 2,... times each contender at batch 1 and 2: the speed-up table named both rows 'torch fp32'."""
    results = [_run(REFERENCE.name, BASELINE.name, batch, 10.0 * batch) for batch in (1, 2)]
    report = BenchReport(results=results, skipped=[], environment={}, peaks=None, config={})
    rows = _ratio_rows(report)
    assert len({(row[0], row[1]) for row in rows}) == 2 and [row[1] for row in rows] == [1, 2]
