"""deploy builds its state once and hands it on: one PyTorch build, no sidecar re-read, model.onnx loaded once
per step by deploykit itself, and the per-layer step runs on the parity inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import deploykit.backends.onnxruntime.backend as ort_backend
import deploykit.pipeline.deploy as deploy_module
import deploykit.targets.bench as bench_targets_module
import deploykit.targets.resolve as targets_module
import deploykit.zoo.sources as sources
from deploykit.parity.inputs import resolve_inputs
from deploykit.pipeline.deploy import DeployOptions, run_deploy
from deploykit.pipeline.results import DeployResult

SOURCE = "deeplabv3plus_mobilenetv2"
OPTIONS = {"width_multiplier": 0.25}


def _options(out: Path) -> DeployOptions:
    return DeployOptions(source=SOURCE, out=out, options=OPTIONS, precisions=("fp32", "fp16"), calib_data="photos",
                         calib_n=2, input_shape=(1, 3, 65, 65), bench_seconds=0.05, threads=1)


def test_one_deploy_builds_the_model_once_and_reads_no_sidecar_twice(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()
    onnx_loads: Counter[str] = Counter()
    seen: dict[str, Any] = {}
    real_load_model, real_read_sidecar, real_onnx_load = sources.load_model, targets_module.read_sidecar, onnx.load
    real_localize = deploy_module.localize

    def load_model(*args: Any, **kwargs: Any) -> Any:
        calls["load_model"] += 1
        return real_load_model(*args, **kwargs)

    def read_sidecar(*args: Any, **kwargs: Any) -> Any:
        calls["read_sidecar"] += 1
        return real_read_sidecar(*args, **kwargs)

    def onnx_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        onnx_loads[str(f)] += 1
        return real_onnx_load(f, *args, **kwargs)

    def localize(reference: Any, candidate: Any, x: np.ndarray, **kwargs: Any) -> Any:
        seen["x"] = x
        return real_localize(reference, candidate, x, **kwargs)

    for module in (sources, deploy_module, targets_module):  # each module that builds a model calls it
        monkeypatch.setattr(module, "load_model", load_model)
    monkeypatch.setattr(targets_module, "read_sidecar", read_sidecar)
    monkeypatch.setattr(bench_targets_module, "read_sidecar", read_sidecar)
    monkeypatch.setattr(onnx, "load", onnx_load)
    monkeypatch.setattr(deploy_module, "localize", localize)
    # 7-bit INT8 weights (CPUs without VNNI) need the float model beside the compiled graph; it once came by
    # reading model.onnx again, so this count was 5 on such CPUs and 4 on others. Taken here on every CPU.
    monkeypatch.setattr(ort_backend, "needs_seven_bit_weights", lambda: True)
    first = run_deploy(_options(tmp_path))
    assert calls == Counter({"load_model": 1})  # export, parity and bench share one PyTorch model
    # OUT/model.onnx: once for both builds (deploykit.build), once by ONNX Runtime's compile of the fp32 graph,
    # once by the layers step's localize and once by the MAC counter of the fp32 artifact's bench (it was 6+).
    assert onnx_loads[str(tmp_path / "model.onnx")] <= 4, onnx_loads
    first_input = next(iter(resolve_inputs([targets_module.open_target(SOURCE, options=OPTIONS)],
                                           input_shape=(1, 3, 65, 65)).batches()))
    assert np.array_equal(seen["x"], first_input[:1])  # the parity inputs, not a fixed photograph
    calls.clear()
    again = run_deploy(_options(tmp_path))
    assert all(s.skipped for s in again.steps) and calls["load_model"] == 0  # nothing to rebuild
    assert again.to_dict()["parity"] == first.to_dict()["parity"]


def test_the_summary_round_trips_through_the_typed_result(tmp_path: Path) -> None:
    result = run_deploy(_options(tmp_path / "first"))
    data = json.loads((tmp_path / "first" / "summary.json").read_text())
    rebuilt = DeployResult.from_dict(data, tmp_path / "first")
    assert json.loads(json.dumps(rebuilt.to_dict(), default=str)) == data
    assert rebuilt.builds[1].precision_onnx == result.builds[1].precision_onnx
    assert rebuilt.parity.passed == result.parity.passed
    # A moved deploy folder still holds its builds (the records name them as that deploy was given its --out)
    moved = (tmp_path / "first").rename(tmp_path / "moved")
    found = DeployResult.from_dict(data, moved).builds
    assert [b.path for b in found] == [moved / b.path.name for b in result.builds]
    assert [b.sidecar.artifact_sha256 for b in found] == [b.sidecar.artifact_sha256 for b in result.builds]
    again = run_deploy(_options(moved))
    assert all(s.skipped for s in again.steps) and [b.path.parent for b in again.builds] == [moved, moved]


def test_a_moved_project_resumes_a_zoo_model_with_its_weights(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights a zoo model loads were also recorded as a file its build read, by their absolute name: a
    project folder moved elsewhere (weights and --out inside it) reran every step, 'proj/w.pt ... changed'."""
    import torch

    project = tmp_path / "proj"
    project.mkdir()
    torch.save(sources.load_model(SOURCE, options=OPTIONS).module.state_dict(), project / "w.pt")

    def options() -> DeployOptions:
        return DeployOptions(source=SOURCE, out=Path("out"), options=OPTIONS, weights="w.pt", precisions=("fp32",),
                             input_shape=(1, 3, 65, 65), bench_seconds=0.05, threads=1)

    monkeypatch.chdir(project)
    assert not any(s.skipped for s in run_deploy(options()).steps)
    moved = project.rename(tmp_path / "moved")
    monkeypatch.chdir(moved)
    again = run_deploy(options())
    assert all(s.skipped for s in again.steps), [(s.name, s.skipped) for s in again.steps]
