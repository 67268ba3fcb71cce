"""deploy --backend auto (issue 22 item 2): on a CPU every ready backend is built and raced per precision by
build-engine's own race, each median, its spread, its ratio to the chosen one and the reason land in summary.json
and the report's latency section; where TensorRT has a working builder (the tensorrt double) auto builds TensorRT,
without a CPU race, and says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit.backends.base import BACKENDS
from deploykit.pipeline.deploy import DeployOptions, run_deploy
from tests.fakes.fixtures import TrtDouble, trt_double

__all__ = ["trt_double"]

SOURCE = "tests.fixtures.user_models:tiny_segmenter"


def _options(out: Path, precisions: tuple[str, ...]) -> DeployOptions:
    return DeployOptions(source=SOURCE, out=out, precisions=precisions, backend="auto", calib_data="synthetic",
                         calib_n=2, input_shape=(1, 3, 32, 32), bench_seconds=0.05, threads=1)


def test_auto_races_every_ready_cpu_backend_per_precision(tmp_path: Path) -> None:
    ready = [b for b in BACKENDS.values() if b.device == "cpu" and b.auto_rank and b.availability().ready]
    if len(ready) < 2:
        pytest.skip("a race needs a second CPU backend: pip install 'deploykit[openvino]'")
    result = run_deploy(_options(tmp_path, ("fp32", "fp16")))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "each precision is built with every one of them" in summary["backend_note"]
    for build in result.builds:
        record = build.sidecar.build_options["auto"]
        assert set(record["medians_ms"]) == {b.name for b in ready}
        assert record["chosen"] == build.backend and build.path.is_file()
        assert all(record["spread_ms"][n][0] <= record["medians_ms"][n] <= record["spread_ms"][n][1]
                   for n in record["medians_ms"])
        loser = next(n for n in record["medians_ms"] if n != build.backend)
        assert loser in record["ratios_to_chosen"] and record["reason"] in build.backend_note
        assert "load average" in record["reason"]
    assert [b["race"]["chosen"] for b in summary["builds"]] == [b.backend for b in result.builds]
    report = (tmp_path / "report.md").read_text()
    after = report[report.index("`--backend auto` built every ready CPU backend"):].split("\n\n")[1]
    rows = after.splitlines()[2:]  # the race table, under its header and rule
    assert sorted((row.split(" | ")[0][2:], row.split(" | ")[1]) for row in rows) == sorted(
        (p, b.name) for p in ("fp32", "fp16") for b in ready)
    assert sum(row.endswith("| chosen |") for row in rows) == 2
    again = run_deploy(_options(tmp_path, ("fp32", "fp16")))
    assert all(s.skipped for s in again.steps)  # the raced artifacts' names are known to the step record


def test_auto_builds_tensorrt_where_a_builder_works(trt_double: TrtDouble, tmp_path: Path) -> None:
    result = run_deploy(_options(tmp_path, ("fp32",)))
    (build,) = result.builds
    assert build.backend == "tensorrt" and build.path.suffix == ".plan"
    assert "found a working builder" in result.backend_note and "no CPU race" in result.backend_note
    assert "auto" not in build.sidecar.build_options
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "tensorrt" and summary["verdict"]["ship"] == "model.fp32.plan"
