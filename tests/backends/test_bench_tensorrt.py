"""`deploykit bench` on a TensorRT engine and `bench kernels` with TensorRT, through the tensorrt double (which
runs the engine's ONNX on the CPU; its event times are host times, not GPU figures): the H2D / compute / D2H
split is reported beside the end-to-end latency, and the mode says which is which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.backends.tensorrt.build import engine_from_onnx
from deploykit.bench import kernels as kernels_module
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.kernels import KernelCase
from deploykit.bench.roofline import Peaks
from deploykit.cli import cli
from tests.fakes.fixtures import TrtDouble

FIXED = Peaks(gemm_gflops=100.0, copy_gbps=10.0, threads=1, gemm_size=64, copy_mbytes=1.0, seconds=0.0)


@pytest.mark.parametrize("graph", [False, True], ids=["enqueue", "cuda-graph"])
def test_engine_bench_reports_the_gpu_phases(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path,
                                              graph: bool) -> None:
    plan = tmp_path / "tiny.plan"
    engine_from_onnx(tiny_onnx, plan)
    args = ["bench", str(plan), "--iterations", "3", "--warmup", "0", "--no-roofline", "--json"]
    result = CliRunner().invoke(cli, args + (["--cuda-graph"] if graph else []))
    assert result.exit_code == 0, result.output
    (bench,) = json.loads(result.stdout)["results"]
    assert bench["backend"] == "tensorrt" and bench["input_shape"] == [1, 3, 64, 64]
    assert set(bench["phases"]) == {"h2d", "compute", "d2h", "enqueue"}
    assert all(phase["count"] == 3 for phase in bench["phases"].values())
    assert "compute-only" in bench["mode"] and ("CUDA graph replay" in bench["mode"]) == graph
    text = CliRunner().invoke(cli, args[:-1])
    assert "GPU phases" in text.stdout and "tiny.plan" in text.stdout


def test_an_engine_refuses_other_backends(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = tmp_path / "tiny.plan"
    engine_from_onnx(tiny_onnx, plan)
    result = CliRunner().invoke(cli, ["bench", str(plan), "--backend", "onnxruntime", "--iterations", "2"])
    assert result.exit_code == 2 and "TensorRT engine" in result.stderr


def _tiny_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [KernelCase("dilated", "tiny", "dilated", 8, 8, 9, 2),
             KernelCase("separable", "tiny sep", "separable", 8, 4, 9, 1)]
    monkeypatch.setattr(kernels_module, "plan_cases", lambda **_kw: cases)
    monkeypatch.setattr(kernels_module, "measure_peaks", lambda threads=None, quick=False: FIXED)
    monkeypatch.setattr(kernels_module, "QUICK_CONFIG", TimingConfig(warmup_s=0, iterations=2,
                                                                       min_warmup_iterations=1))


def test_a_kernel_graph_tensorrt_refuses_fails_the_sweep(trt_double: TrtDouble,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph TensorRT refuses is a bug in the kernel graphs: said, not skipped (the sweep once swallowed it)."""
    from deploykit.bench import kernel_graphs as kg

    _tiny_sweep(monkeypatch)
    original = kg.int8_graph
    monkeypatch.setattr(kg, "int8_graph", lambda *a, **kw: original(*a, **{**kw, "unsigned": True}))  # UINT8 Q/DQ
    result = CliRunner().invoke(cli, ["bench", "kernels", "--quick", "--backend", "tensorrt", "--precision", "int8"])
    assert result.exit_code != 0 and "UINT8" in result.output


def test_kernels_run_through_tensorrt(trt_double: TrtDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny_sweep(monkeypatch)
    result = CliRunner().invoke(cli, ["bench", "kernels", "--quick", "--backend", "tensorrt", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ran = {(r["precision"], r["shape"]) for r in data["results"]}
    # Every TensorRT precision runs, INT8 included: its graphs keep the bias in float (IDequantizeLayer takes
    # INT8/FP8/INT4/FP4 only; the double refuses an INT32 bias as TensorRT does), and nothing is skipped quietly.
    assert not data["skipped"], data["skipped"]
    assert ran == {(p, shape) for p in ("fp32", "fp16", "int8") for shape in ("tiny", "tiny sep")}
    assert all(r["timing"] == "GPU compute (CUDA events)" for r in data["results"])  # kernels exclude transfers
    assert any("no CUDA device" in note for note in data["notes"]) and data["gpu_peaks"] is None
