"""deploy: the whole flow on a tiny zoo model, its report, resuming, and failures that keep finished steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.cli import cli

MODEL = ["deeplabv3plus_mobilenetv2", "--set", "width_multiplier=0.25", "--input-shape", "1,3,65,65"]
FAST = ["--bench-seconds", "0.2", "--threads", "1"]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("deploy") / "nested" / "dl"  # parents are created, as users expect
    result = CliRunner().invoke(cli, ["deploy", *MODEL, "--precisions", "fp32,fp16", "--calib-data", "photos",
                                      "--out", str(out), *FAST])
    return out, result


def test_flow_writes_artifacts_report_and_summary(deployed: tuple[Path, object]) -> None:
    out, result = deployed
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    for name in ("model.onnx", "model.fp32.ort.onnx", "model.fp16.ort.onnx", "model.fp16.onnx", "report.md",
                 "report.html", "summary.json", "latency.png", "accuracy.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parity"]["passed"] is True
    assert [c["precision"] for c in summary["parity"]["candidates"]] == ["fp32", "fp16"]
    backends = {(r["backend"], r["precision"]) for r in summary["bench"]["results"]}
    assert backends == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16")}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "pixel_agreement" in (out / "report.md").read_text()


def test_rerun_skips_unchanged_steps_and_redoes_changed_ones(deployed: tuple[Path, object]) -> None:
    out, _ = deployed
    again = CliRunner().invoke(cli, ["deploy", *MODEL, "--precisions", "fp32,fp16", "--calib-data", "photos",
                                     "--out", str(out), *FAST, "--json"])
    assert again.exit_code == 0, again.output
    steps = {s["name"]: s["skipped"] for s in json.loads(again.stdout)["steps"]}
    assert steps["export"] and steps["build-fp32"] and steps["build-fp16"] and steps["parity"]
    (out / "model.fp16.ort.onnx").write_bytes(b"tampered")
    third = CliRunner().invoke(cli, ["deploy", *MODEL, "--precisions", "fp32,fp16", "--calib-data", "photos",
                                     "--out", str(out), *FAST, "--json"])
    steps = {s["name"]: s["skipped"] for s in json.loads(third.stdout)["steps"]}
    assert steps["export"] and steps["build-fp32"] and not steps["build-fp16"]


def test_bad_input_stops_with_message_and_keeps_finished_steps(deployed: tuple[Path, object]) -> None:
    out, _ = deployed
    before = (out / "model.onnx").read_bytes()
    result = CliRunner().invoke(cli, ["deploy", *MODEL, "--precisions", "fp32,int8", "--calib-data",
                                      str(out / "no-such-folder"), "--out", str(out), *FAST])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert (out / "model.onnx").read_bytes() == before
    bad_precision = CliRunner().invoke(cli, ["deploy", *MODEL, "--precisions", "fp8", "--out", str(out)])
    assert bad_precision.exit_code == 2 and "fp8" in bad_precision.output
    assert (out / "report.md").is_file()


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    result = CliRunner().invoke(cli, ["deploy", *MODEL, "--out", str(file)])
    assert result.exit_code == 2 and "is a file" in result.output


def test_the_batch_of_input_shape_is_timed_beside_batch_1_which_the_verdict_compares(tmp_path: Path) -> None:
    model = ["tests.fixtures.user_models:tiny_segmenter", "--precisions", "fp32", "--out", str(tmp_path / "d"), *FAST]
    first = CliRunner().invoke(cli, ["deploy", *model, "--input-shape", "3,3,32,32", "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    timed = {(r["backend"], r["batch"]) for r in summary["bench"]["results"]}
    assert timed == {("torch", 1), ("torch", 3), ("onnxruntime", 1), ("onnxruntime", 3)}
    at_1 = next(r for r in summary["bench"]["results"] if r["backend"] == "onnxruntime" and r["batch"] == 1)
    assert "at batch 1" in " ".join(summary["verdict"]["text"])
    assert summary["verdict"]["latency_ms"] == pytest.approx(at_1["latency"]["median"], rel=1e-3)
    again = CliRunner().invoke(cli, ["deploy", *model, "--input-shape", "2,3,32,32", "--json"])
    steps = {s["name"]: s["skipped"] for s in json.loads(again.stdout)["steps"]}
    assert steps["parity"] and not steps["bench"] and not steps["export"]


def test_an_export_that_does_not_verify_is_said_in_words_naming_where_its_advice_applies(tmp_path: Path) -> None:
    """deploy's export failure printed a Python list of dicts and advised --exporter dynamo or --no-simplify,
    options deploy does not have."""
    source = "tests.fixtures.outcome_models:noisy"
    result = CliRunner().invoke(cli, ["deploy", source, "--input-shape", "1,3,32,32", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert "does not verify (at 1x3x32x32 max |diff| " in line and "cosine" in line
    assert "[{" not in line and "'max_abs'" not in line
    assert f"those are options of `deploykit export {source}`" in line
