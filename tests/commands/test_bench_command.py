"""`deploykit bench TARGET` and `deploykit bench kernels` through the CLI, with tiny inputs and a few
iterations (no timing assertions: only that the figures are consistent and complete)."""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from deploykit.bench import kernels as kernels_module
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.kernels import KernelCase
from deploykit.bench.roofline import Peaks
from deploykit.cli import cli
from deploykit.environment import cpu_model
from deploykit.zoo.flops import count_complexity
from tests.fixtures.user_models import tiny_segmenter

USER = "tests.fixtures.user_models:tiny_segmenter"
FAST = ["--iterations", "3", "--warmup", "0", "--no-roofline"]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_segmenter(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=18, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes})
    return path


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def test_onnx_json_has_stats_counts_and_manifest(tiny_onnx: Path) -> None:
    code, out, err = _invoke(["bench", str(tiny_onnx), "--batch", "1,2", "--input-shape", "1,3,32,32", *FAST,
                              "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert [r["batch"] for r in data["results"]] == [1, 2]
    for result in data["results"]:
        assert result["backend"] == "onnxruntime" and result["precision"] == "fp32"
        assert result["input_shape"] == [result["batch"], 3, 32, 32]
        assert result["latency"]["count"] == 3 == len(result["samples_ms"])
        stats = result["latency"]
        assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["p95"] <= stats["p99"] <= stats["max"]
        assert result["distinct_inputs"] >= 4
        expected = count_complexity(tiny_segmenter(), (result["batch"], 3, 32, 32)).madds
        assert result["madds"] == expected
        assert result["achieved_gflops"] > 0 and result["efficiency_percent"] is None  # --no-roofline
        assert result["mode"].startswith("end-to-end")
        assert result["output_bytes"] == result["batch"] * 3 * 32 * 32 * 4  # 3 float32 class scores a pixel
    env = data["environment"]
    assert env["cpu"] and env["cores"] >= 1 and env["versions"]["onnxruntime"] != "-"
    assert "load_average_1m" in env and "cpu_flags" in env
    assert data["skipped"] == []
    assert "timing tiny.onnx onnxruntime fp32 batch 1" in err  # progress goes to stderr


def test_several_targets_run_round_robin_in_one_run(tiny_onnx: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin.onnx"
    twin.write_bytes(tiny_onnx.read_bytes())
    code, out, err = _invoke(["bench", str(tiny_onnx), str(twin), USER, "--input-shape", "1,3,32,32", "--iterations",
                              "5", "--warmup", "0", "--no-roofline", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert [(r["target"], r["backend"]) for r in data["results"]] == [
        ("tiny.onnx", "onnxruntime"), ("twin.onnx", "onnxruntime"), (USER, "torch")]
    assert len({r["run_id"] for r in data["results"]}) == 1 and all(len(r["samples_ms"]) == 5 for r in data["results"])
    assert data["load"]["cores"] >= 1 and "load_before" in data["load"]
    assert "round-robin" in err
    code, text, _ = _invoke(["bench", str(tiny_onnx), str(twin), "--input-shape", "1,3,32,32", *FAST])
    assert code == 0 and "speed-up over tiny.onnx onnxruntime fp32 batch 1" in text
    assert re.search(r"twin.onnx onnxruntime fp32 batch 1: \d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)", text)


def test_skipped_backends_are_listed_once_and_never_tabled(tiny_onnx: Path) -> None:
    code, out, _ = _invoke(["bench", str(tiny_onnx), "--backend", "onnxruntime,torch", "--backend", "tensorrt",
                            "--input-shape", "1,3,32,32", *FAST])
    assert code == 0, out
    assert out.count("skipped torch:") == 1 and out.count("skipped tensorrt:") == 1
    table = [line for line in out.splitlines() if line.startswith("tiny.onnx")]
    assert len(table) == 1 and " onnxruntime " in table[0]


def test_a_batch_whose_inputs_exceed_the_free_memory_is_skipped_before_any_array_is_made(
        tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1x3x32x32 float32 is 12 KB a feed (16 distinct: 197 KB); at batch 64, 786 KB a feed and 12.6 MB in all
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 8 * 2**20)
    code, out, err = _invoke(["bench", str(tiny_onnx), "--batch", "1,64", "--input-shape", "1,3,32,32", *FAST])
    assert code == 0, err
    assert "skipped onnxruntime batch 64: a pool of 16 inputs of 64x3x32x32 needs about 12.6 MB" in out, out
    table = [line.split() for line in out.splitlines() if line.startswith("tiny.onnx")]
    assert [row[3] for row in table] == ["1"]
    code, _, err = _invoke(["bench", str(tiny_onnx), "--batch", "64", "--input-shape", "1,3,32,32", *FAST])
    assert code == 2 and "needs about 12.6 MB" in err and "available" in err, err


@pytest.mark.parametrize("name", ["input", "fixed batch"])  # the reason quotes the name: the hint reads no text
def test_nothing_to_time_gives_each_reasons_own_fix_and_the_batch_hint_only_for_a_batch(tmp_path: Path,
                                                                                        name: str) -> None:
    from onnx import TensorProto, helper

    text = helper.make_tensor_value_info(name, TensorProto.STRING, [1])
    graph = helper.make_graph([helper.make_node("Identity", [name], ["output"])], "g", [text],
                              [helper.make_tensor_value_info("output", TensorProto.STRING, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "strings.onnx"))
    code, _, err = _invoke(["bench", str(tmp_path / "strings.onnx"), *FAST])
    assert code == 2 and "is not a numeric tensor" in err and "choose a batch" not in err, err


def test_no_runnable_backend_is_an_error(tiny_onnx: Path) -> None:
    code, _, err = _invoke(["bench", str(tiny_onnx), "--backend", "torch", *FAST])
    assert code == 2
    assert "no requested backend can run" in err and "PyTorch module" in err


def test_cuda_graph_on_no_tensorrt_engine_is_refused_not_ignored(tiny_onnx: Path) -> None:
    """`bench model.onnx --cuda-graph` timed ONNX Runtime as usual and exited 0: figures that pass for CUDA-graph
    replay's (build-engine refuses TensorRT options on other backends the same way)."""
    code, out, err = _invoke(["bench", str(tiny_onnx), "--cuda-graph", *FAST])
    assert code == 2 and out == ""
    assert "--cuda-graph applies to none of the targets" in err and "drop --cuda-graph" in err


def test_duration_and_iterations_conflict(tiny_onnx: Path) -> None:
    code, _, err = _invoke(["bench", str(tiny_onnx), "--duration", "1", "--iterations", "3"])
    assert code == 2 and "--duration or --iterations" in err


def test_csv(tiny_onnx: Path) -> None:
    code, out, _ = _invoke(["bench", str(tiny_onnx), "--input-shape", "1,3,32,32", *FAST, "--csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert rows[0]["backend"] == "onnxruntime" and rows[0]["iterations"] == "3"
    assert float(rows[0]["p99 ms"]) >= float(rows[0]["median ms"]) > 0


FIXED = Peaks(gemm_gflops=100.0, copy_gbps=10.0, threads=1, gemm_size=64, copy_mbytes=1.0, seconds=0.0)
FAST_KERNELS = TimingConfig(warmup_s=0.0, duration_s=0.0, iterations=2, min_warmup_iterations=1)


@pytest.fixture()
def fixed_peaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Peaks are measured for real in tests/bench/test_roofline.py; here they only need to be known."""
    from deploykit.bench import run

    monkeypatch.setattr(run, "measure_peaks", lambda threads=None, quick=False: FIXED)
    monkeypatch.setattr(kernels_module, "measure_peaks", lambda threads=None, quick=False: FIXED)
    monkeypatch.setattr(kernels_module, "QUICK_CONFIG", FAST_KERNELS)
    monkeypatch.setattr(kernels_module, "FULL_CONFIG", FAST_KERNELS)


def test_user_model_in_torch_with_roofline(fixed_peaks: None) -> None:
    code, out, err = _invoke(["bench", USER, "--input-shape", "1,3,32,32", "--iterations", "2", "--warmup", "0",
                              "--json"])
    assert code == 0, err
    data = json.loads(out)
    (result,) = data["results"]
    assert result["backend"] == "torch"
    assert result["madds"] == count_complexity(tiny_segmenter(), (1, 3, 32, 32)).madds
    assert data["peaks"]["gemm_gflops"] == 100.0
    assert result["efficiency_percent"] == pytest.approx(result["achieved_gflops"])  # of 100 GFLOP/s


def test_compare_flags_a_slowdown_and_writes_nothing_over_a_baseline(tiny_onnx: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "base.json"
    args = ["bench", str(tiny_onnx), "--input-shape", "1,3,32,32", "--iterations", "20", "--warmup", "0",
            "--no-roofline"]
    code, _, err = _invoke([*args, "-o", str(baseline)])
    assert code == 0 and baseline.is_file(), err
    code, _, err = _invoke([*args, "-o", str(baseline)])
    assert code == 2 and "--force" in err  # never over an existing file
    data = json.loads(baseline.read_text())
    for result in data["results"]:
        result["samples_ms"] = [s / 100 for s in result["samples_ms"]]  # a baseline 100x faster than now
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps(data))
    code, out, err = _invoke([*args, "--compare", str(fast)])
    assert code == 0, err
    line = next(row for row in out.splitlines() if row.startswith("tiny.onnx") and "verdict" not in row
                and ("slower" in row or "within noise" in row or "faster" in row))
    assert line.rstrip().endswith("slower")


def test_a_baseline_that_matches_nothing_is_bad_input_after_the_run_is_shown_and_written(
        tiny_onnx: Path, tmp_path: Path) -> None:
    """A --compare baseline of another input shape compared nothing and exited 0 with an empty table."""
    baseline, now = tmp_path / "base.json", tmp_path / "now.json"
    code, _, err = _invoke(["bench", str(tiny_onnx), "--input-shape", "1,3,32,32", *FAST, "-o", str(baseline)])
    assert code == 0, err
    code, out, err = _invoke(["bench", str(tiny_onnx), "--input-shape", "1,3,40,40", *FAST, "--compare",
                              str(baseline), "-o", str(now)])
    assert code == 2 and "nothing in --compare" in err and "at 1x3x32x32" in err and "at 1x3x40x40" in err, err
    assert [line for line in err.splitlines() if line.startswith("deploykit: error")] == err.strip().splitlines()[-1:]
    assert json.loads(now.read_text())["results"] and "tiny.onnx" in out  # the run itself stands


def _tiny_cases(*, quick: bool = False, suites: object = None) -> list[KernelCase]:
    return [KernelCase("dilated", "tiny dilated", "dilated", 8, 8, 9, rate) for rate in (1, 2)] + [
        KernelCase("separable", "tiny separable", variant, 8, 4, 9, 1) for variant in ("separable", "standard")]


def test_kernels_sweep_writes_json_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            fixed_peaks: None) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(kernels_module, "plan_cases", _tiny_cases)
    out = tmp_path / "k.json"
    code, text, err = _invoke(["bench", "kernels", "--quick", "--threads", "1", "--backend", "torch,onnxruntime",
                               "--precision", "fp32,int8,int8u8", "-o", str(out)])
    assert code == 0, err
    data = json.loads(out.read_text())
    variants = {(r["backend"], r["precision"]) for r in data["results"]}
    assert variants == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                        ("onnxruntime", "int8u8")}
    assert len(data["results"]) == 4 * 4 and data["skipped"] == []
    for r in data["results"]:
        assert r["efficiency_percent"] == pytest.approx(100 * r["bound_ms"] / r["median_ms"])
        assert r["gflops"] == pytest.approx(2 * r["madds"] / (r["median_ms"] * 1e6))
    for name in ("k.dilated.png", "k.separable.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "% of roofline" in text and "kernel sweep (shapes): 4/4" in err
    assert f"timed on {cpu_model()}, " in text  # the CPU beside the figures, as bench TARGET states it


def test_kernels_lists_an_absent_tensorrt_once(monkeypatch: pytest.MonkeyPatch, fixed_peaks: None) -> None:
    from deploykit.backends.tensorrt.backend import availability as tensorrt_status

    if tensorrt_status().ready:
        pytest.skip("TensorRT works here")
    monkeypatch.setattr(kernels_module, "plan_cases", _tiny_cases)
    code, text, _ = _invoke(["bench", "kernels", "--backend", "torch,tensorrt", "--suite", "dilated"])
    assert code == 0
    assert text.count("skipped tensorrt:") == 1
    assert "tensorrt" not in "\n".join(line for line in text.splitlines() if not line.startswith("skipped"))
