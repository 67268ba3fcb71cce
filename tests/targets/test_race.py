"""`--backend auto` on a CPU: every ready CPU backend is built and timed, the fastest kept, its medians and the
reason recorded in the sidecar; without an explicit auto, or where the table picks a GPU backend, no race."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploykit.backends.base import BACKENDS, backend_of
from deploykit.bench.interleave import Interleaved, Timing
from deploykit.bench.load import MachineLoad
from deploykit.build import build_artifact
from deploykit.targets import race as race_module
from deploykit.targets.race import artifact_for, candidates

CPU = backend_of("onnxruntime")


def test_only_an_explicit_auto_on_a_cpu_races() -> None:
    gpu = next(b for b in BACKENDS.values() if b.device == "gpu")
    assert candidates(None, CPU, layout_given=False) == []
    assert candidates(CPU.name, CPU, layout_given=False) == []
    assert candidates("auto", gpu, layout_given=False) == []  # TensorRT ready: auto stays TensorRT
    racers = candidates("auto", CPU, layout_given=False)
    ready = [b for b in BACKENDS.values() if b.device == "cpu" and b.auto_rank and b.availability().ready]
    assert racers == (ready if len(ready) > 1 else [])


def test_artifact_names_follow_the_winner() -> None:
    openvino = backend_of("openvino")
    assert artifact_for(Path("d/m.int8.ort.onnx"), CPU) == Path("d/m.int8.ort.onnx")
    assert artifact_for(Path("d/m.int8.ort.onnx"), openvino) == Path("d/m.int8.xml")
    assert artifact_for(Path("d/m.xml"), CPU) == Path("d/m.ort.onnx")


def test_feed_fills_dynamic_dims_from_the_input_size() -> None:
    from deploykit.runner import TensorSpec

    class Specs:
        def input_specs(self) -> list[TensorSpec]:
            return [TensorSpec("x", (None, 3, "h", "w"), "float32")]

    feed = race_module._feed(Specs(), (32, 48))  # type: ignore[arg-type]
    assert feed["x"].shape == (1, 3, 32, 48) and feed["x"].dtype == np.float32


def _run(samples: dict[str, list[float]]) -> Interleaved:
    load = MachineLoad(cores=2, seconds=1.0, load_before=0.1, load_after=0.2, others_cores=0.0)
    return Interleaved({name: Timing(list(ms), sum(ms) / 1e3, 2) for name, ms in samples.items()},
                       len(next(iter(samples.values()))), load)


def test_the_fastest_wins_when_its_interval_excludes_one() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(10.0, 0.2, 20)
    result = race_module.standing(_run({"onnxruntime": list(base * 1.3), "openvino": list(base)}), "x[1x3x8x8]",
                                  ["onnxruntime", "openvino"])
    assert result.winner == "openvino" and result.slower["onnxruntime"].low > 1
    assert "OpenVINO was the fastest here" in result.reason and "1.30x" in result.reason
    record = result.record()
    assert record["chosen"] == "openvino" and set(record["medians_ms"]) == {"onnxruntime", "openvino"}
    assert record["ratios_to_chosen"]["onnxruntime"]["low"] > 1 and record["runs"] == 20
    assert record["spread_ms"]["openvino"][0] <= record["medians_ms"]["openvino"] <= record["spread_ms"]["openvino"][1]
    assert "load" in record and "pause_s" in record


def test_a_tie_keeps_the_tables_preference() -> None:
    rng = np.random.default_rng(1)
    ort, ov = rng.normal(10.0, 1.0, 20), rng.normal(9.9, 1.0, 20)  # OpenVINO a hair faster: noise
    result = race_module.standing(_run({"onnxruntime": list(ort), "openvino": list(ov)}), "x[1x3x8x8]",
                                  ["onnxruntime", "openvino"])
    assert result.winner == "onnxruntime" and result.slower["openvino"].tied
    assert "kept as the table's preference" in result.reason


@pytest.mark.parametrize("fastest", ["openvino", "onnxruntime"])
def test_auto_keeps_the_fastest_and_records_why(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fastest: str) -> None:
    pytest.importorskip("openvino", reason="a race needs a second CPU backend: pip install 'deploykit[openvino]'")
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    timed: list[list[str]] = []

    def fake_time(steps: dict[str, Any], config: Any) -> Interleaved:
        for step in steps.values():
            step(0)  # each candidate really runs
        timed.append(sorted(steps))
        return _run({name: [1.0] * 20 if name == fastest else [2.0] * 20 for name in steps})

    monkeypatch.setattr(race_module, "time_interleaved", fake_time)
    out = tmp_path / "m.ort.onnx"
    chosen, note, racer = race_module.choose_backend("auto", layout_given=False)
    result = build_artifact(tiny_onnx, out, backend=chosen, backend_note=note, threads=1, racer=racer)
    winner = backend_of(fastest)
    assert timed == [["onnxruntime", "openvino"]]
    assert result.backend == fastest and result.path == artifact_for(out, winner)
    record = json.loads(result.sidecar_path.read_text())["build_options"]["auto"]
    assert record["chosen"] == fastest and record["medians_ms"][fastest] == 1.0 and len(record["medians_ms"]) == 2
    assert f"{winner.title} was the fastest" in result.backend_note == record["reason"]
    files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert files == sorted([*(f.name for f in winner.files(result.path)), result.sidecar_path.name])
