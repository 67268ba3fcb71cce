"""TensorRTRunner under the tensorrt double (10.x and 11.x profiles): per-call shapes and addresses, CUDA-graph
replay, timings hooks, and the sidecar checks that refuse an engine built for another TensorRT or GPU.
The double executes engines with ONNX Runtime, so outputs must equal ONNX Runtime's on the same ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.tensorrt.build import TensorRTBuildOptions, TensorRTRunner, engine_from_onnx
from deploykit.errors import BackendUnavailable, InputError
from deploykit.io.images import preprocess
from deploykit.io.sidecar import read_sidecar, sidecar_path
from deploykit.types import IMAGENET
from tests.fakes.fixtures import TrtDouble
from tests.fakes.tensorrt_double import SimulatedGpu


def _photo(size: tuple[int, int], batch: int = 1) -> dict[str, np.ndarray]:
    x = preprocess(data.astronaut(), IMAGENET, size)
    return {"input": np.repeat(x, batch, axis=0)}


def _build(tiny_onnx: Path, tmp_path: Path, name: str = "tiny.plan", **options: object) -> Path:
    out = tmp_path / name
    engine_from_onnx(tiny_onnx, out, TensorRTBuildOptions(**options))  # type: ignore[arg-type]
    return out


def test_outputs_match_onnx_runtime_at_two_shapes(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    with TensorRTRunner.from_artifact(plan) as engine, OnnxRuntimeRunner(tiny_onnx) as reference:
        assert [s.describe() for s in engine.input_specs()] == ["input: float32[?x3x?x?]"]
        for feed in (_photo((64, 64)), _photo((96, 80), batch=2)):
            got, want = engine.infer(feed)["output"], reference.infer(feed)["output"]
            assert got.shape == want.shape == (feed["input"].shape[0], 3, *feed["input"].shape[2:])
            np.testing.assert_allclose(got, want, rtol=0, atol=0)


def test_shape_outside_the_profile_is_an_input_error(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    with TensorRTRunner.from_artifact(plan) as engine, pytest.raises(InputError, match="--max-shape"):
        engine.infer(_photo((160, 64)))  # max is 128 x 128


def test_cuda_graph_replays_with_fresh_inputs(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(4)]
    with TensorRTRunner.from_artifact(plan, cuda_graph=True) as engine, OnnxRuntimeRunner(tiny_onnx) as reference:
        for feed in feeds:  # run 1 warms up, run 2 captures and replays, runs 3-4 replay
            np.testing.assert_array_equal(engine.infer(feed)["output"], reference.infer(feed)["output"])
        graphs = trt_double.device.graphs
        assert len(graphs) == 1 and graphs[0].replays == 3
        engine.infer(_photo((96, 96)))  # a new shape: warm-up again, no stale graph
        engine.infer(_photo((96, 96)))
        assert len(graphs) == 2 and graphs[1].replays == 1


def test_infer_timed_reports_phases(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    engine = TensorRTRunner.from_artifact(plan)
    with pytest.raises(RuntimeError, match="outside"):
        engine.infer_timed(_photo((64, 64)))
    with engine:
        outputs, times = engine.infer_timed(_photo((64, 64)))
    assert outputs["output"].shape == (1, 3, 64, 64)
    assert set(times) == {"h2d_ms", "compute_ms", "d2h_ms", "latency_ms", "enqueue_ms"}
    assert all(v >= 0 for v in times.values())
    assert times["latency_ms"] == pytest.approx(times["h2d_ms"] + times["compute_ms"] + times["d2h_ms"])


def test_other_tensorrt_version_is_refused(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    trt_double.set_version("99.0.0.1+testdouble")
    refused = r"built with TensorRT .* has TensorRT 99\.0\.0\.1.*--version-compatible"
    with pytest.raises(BackendUnavailable, match=refused):
        TensorRTRunner.from_artifact(plan)


def test_version_compatible_engine_loads_on_a_later_tensorrt(trt_double: TrtDouble, tiny_onnx: Path,
                                                             tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path, version_compatible=True)
    major = int(trt_double.module.__version__.split(".")[0])
    trt_double.set_version(f"{major}.99.0.1+testdouble")
    with TensorRTRunner.from_artifact(plan) as engine:  # needs runtime.engine_host_code_allowed = True
        assert engine.infer(_photo((64, 64)))["output"].shape == (1, 3, 64, 64)
    trt_double.set_version("1.0.0.0+testdouble")
    with pytest.raises(BackendUnavailable, match="version-compatible from TensorRT"):
        TensorRTRunner.from_artifact(plan)


def test_other_gpu_is_refused_unless_hardware_compatible(trt_double: TrtDouble, tiny_onnx: Path,
                                                         tmp_path: Path) -> None:
    plain = _build(tiny_onnx, tmp_path, name="plain.plan")
    portable = _build(tiny_onnx, tmp_path, name="portable.plan", hardware_compatibility="ampere+")
    trt_double.set_gpu(SimulatedGpu("NVIDIA L4 (simulated)", (8, 9)))
    with pytest.raises(BackendUnavailable, match=r"compute capability 8\.6 .* has 8\.9.*ampere\+"):
        TensorRTRunner.from_artifact(plain)
    with TensorRTRunner.from_artifact(portable) as engine:
        assert engine.infer(_photo((64, 64)))["output"].shape == (1, 3, 64, 64)
    trt_double.set_gpu(SimulatedGpu("Tesla T4 (simulated)", (7, 5)))
    with pytest.raises(BackendUnavailable, match="Ampere and newer"):
        TensorRTRunner.from_artifact(portable)


def test_same_compute_capability_other_gpu_loads_with_a_note(trt_double: TrtDouble, tiny_onnx: Path,
                                                             tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    trt_double.set_gpu(SimulatedGpu("NVIDIA RTX A6000 (simulated)", (8, 6)))
    runner = TensorRTRunner.from_artifact(plan)
    assert runner.notes and "rebuilding here may be faster" in runner.notes[0]


def test_tensorrt_refusal_surfaces_when_the_sidecar_lies(trt_double: TrtDouble, tiny_onnx: Path,
                                                        tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    trt_double.set_version("99.0.0.1+testdouble")
    record = json.loads(sidecar_path(plan).read_text())
    record["backend_version"] = "99.0.0.1+testdouble"  # an edited sidecar: TensorRT itself must still refuse
    sidecar_path(plan).write_text(json.dumps(record))
    runner = TensorRTRunner.from_artifact(plan)
    with pytest.raises(BackendUnavailable, match="not compatible with this version of TensorRT"), runner:
        pass


def test_damaged_or_unknown_engines_are_input_errors(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = _build(tiny_onnx, tmp_path)
    assert read_sidecar(plan) is not None
    plan.write_bytes(plan.read_bytes() + b"\0")
    with pytest.raises(InputError, match="does not match its sidecar"):
        TensorRTRunner.from_artifact(plan)
    sidecar_path(plan).unlink()
    with pytest.raises(InputError, match="has no sidecar"):
        TensorRTRunner.from_artifact(plan)


def test_uncapturable_engine_says_to_run_without_graphs(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _build(tiny_onnx, tmp_path)

    class Broken:
        def capture(self, stream: object) -> object:
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(trt_double.device, "graph", lambda: Broken())
    with TensorRTRunner.from_artifact(plan, cuda_graph=True) as engine:
        engine.infer(_photo((64, 64)))  # warm-up, no capture yet
        with pytest.raises(BackendUnavailable, match=r"without CUDA graphs.*--cuda-graph"):
            engine.infer(_photo((64, 64)))


def test_a_second_engine_s_errors_are_quoted(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    """TensorRT keeps the process's first logger; the runner quotes what was logged since its own call."""
    plan = _build(tiny_onnx, tmp_path)
    with TensorRTRunner.from_artifact(plan) as first:
        first.infer(_photo((64, 64)))
        broken = tmp_path / "broken.plan"
        broken.write_bytes(b"not an engine")
        with pytest.raises(BackendUnavailable, match="Magic tag does not match") as caught, TensorRTRunner(broken):
            pass
        assert "logged no error" not in str(caught.value)


def test_io_dtypes_map_to_torch_or_are_refused() -> None:
    import torch

    from deploykit.backends.tensorrt.common import IO_TYPES, io_type
    from tests.fakes.tensorrt_double import make_tensorrt

    trt = make_tensorrt("11")
    assert io_type(trt.DataType.BF16, "x") == IO_TYPES["BF16"] and IO_TYPES["BF16"].host == "float32"
    assert io_type(trt.DataType.FP8, "x").device == "float8_e4m3fn"
    assert all(isinstance(getattr(torch, t.device), torch.dtype) for t in IO_TYPES.values())
    assert all(np.dtype(t.host) for t in IO_TYPES.values())
    for name in ("INT4", "FP4", "E8M0"):
        with pytest.raises(BackendUnavailable, match=rf"engine tensor 'x' is {name} .*DequantizeLinear"):
            io_type(trt.DataType[name], "x")


def test_a_missing_synchronize_reads_stale_outputs(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The double defers stream work until a synchronize, so a runner that forgot one would fail here."""
    from tests.fakes.device import FakeStream

    plan = _build(tiny_onnx, tmp_path)
    with TensorRTRunner.from_artifact(plan) as engine:
        assert engine.infer(_photo((64, 64)))["output"].any()
        monkeypatch.setattr(FakeStream, "synchronize", lambda self: None)
        assert not engine.infer(_photo((96, 96)))["output"].any()  # new buffers, never written


def test_every_device_layer_member_has_a_caller() -> None:
    """The device layer offers what the runner and the build use, nothing more: a member no path calls is code
    no test exercises on a GPU (a cross-stream event wait sat here unused)."""
    import inspect

    from deploykit.backends.tensorrt import build, device, runner

    callers = inspect.getsource(runner) + inspect.getsource(build)
    for protocol in (device.Stream, device.Buffer, device.Event, device.Graph, device.DeviceLayer):
        members = [name for name in vars(protocol) if not name.startswith("_")]
        assert members, protocol
        unused = [name for name in members if f".{name}" not in callers]
        assert not unused, f"{protocol.__name__}: {unused} have no caller in the runner or the build"
