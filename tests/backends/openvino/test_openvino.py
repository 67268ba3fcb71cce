"""The OpenVINO backend: deploykit's FP32 / FP16 / INT8 Q/DQ graphs compiled to IR and run on the CPU plugin,
against ONNX Runtime running the same graph; the Q/DQ graph must run in low precision."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.errors import InputError, OutputExists
from deploykit.io.digests import sha256_file
from deploykit.io.metadata import read_metadata
from deploykit.precision.passes import CalibrationOptions, fp16_graph, int8_graph
from deploykit.precision.recovery import EQUALIZE, RecoveryOptions
from deploykit.precision.table import precision_of
from tests.fixtures.cpu import simulate_cpu

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'deploykit[openvino]')")

from deploykit.backends.base import backend_of  # noqa: E402
from deploykit.backends.openvino.backend import as_deployed, availability  # noqa: E402
from deploykit.backends.openvino.compile import compile  # noqa: E402
from deploykit.backends.openvino.runner import open_runner, runtime_precisions  # noqa: E402
from deploykit.graph.seven_bit import needs_seven_bit_weights  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


def _x(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, height, width)).astype(np.float32)


def _graph(source: Path, precision: str, folder: Path) -> Path:
    """deploykit's precision graph of `source` (the ONNX that --backend openvino compiles)."""
    model = onnx.load(str(source))
    meta, sha, say = read_metadata(model), sha256_file(source), (lambda _m: None)
    calibration = CalibrationOptions(data="synthetic", n=4)
    onnxruntime = backend_of("onnxruntime")  # the graph is backend-independent
    if precision == "fp16":
        result = fp16_graph(model, meta, sha, calibration, keep=(), fp16_io=False, accuracy_budget=(),
                            backend=onnxruntime, threads=1, progress=say)
    else:
        result = int8_graph(model, meta, sha, calibration, keep_float=(), accuracy_budget=(), layout="inputs",
                            backend=onnxruntime, threads=1, progress=say)
    path = folder / f"tiny.{precision}.onnx"
    onnx.save(result.model, str(path))
    return path


def _run(runner_factory: Any, path: Path, x: np.ndarray) -> np.ndarray:
    with runner_factory(path, threads=1) as runner:
        name = runner.input_specs()[0].name
        return next(iter(runner.infer({name: x}).values()))


def test_available_here() -> None:
    found = availability()
    assert found.ready and found.version


def test_reports_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_openvino(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "openvino" or name.startswith("openvino."):
            raise ModuleNotFoundError("No module named 'openvino'", name="openvino")  # what Python raises
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.delitem(__import__("sys").modules, "openvino")
    found = availability()
    assert found.state == "not installed" and "deploykit[openvino]" in found.reason


def test_fp32_ir_matches_onnxruntime(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.xml"
    facts = compile(tiny_onnx, out, force=False, threads=1)
    assert out.is_file() and (tmp_path / "tiny.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny")) == []  # nothing staged left
    assert facts["backend_version"] == ov.get_version() and facts["device"]["cpu"]
    options = facts["build_options"]
    assert options["compile_options"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert options["runtime_precisions"] == {"Convolution": {"f32": 3}}
    with open_runner(out) as runner:  # the ONNX metadata survives in the IR
        meta, source = runner.metadata(), read_metadata(onnx.load(str(tiny_onnx)))
        assert meta is not None and meta == source
    for size in ((64, 64), (32, 48)):  # dynamic dimensions: one compiled model per shape
        got, want = _run(open_runner, out, _x(*size)), _run(OnnxRuntimeRunner, tiny_onnx, _x(*size))
        assert got.shape == want.shape == (1, 3, *size)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_fp32_keeps_float32_weights(tiny_onnx: Path, tmp_path: Path) -> None:
    """openvino.save_model compresses weights to FP16 unless told not to: an FP32 build must not."""
    compile(tiny_onnx, tmp_path / "tiny.xml", force=False)
    assert b'element_type="f16"' not in (tmp_path / "tiny.xml").read_bytes()


def test_fp16_graph(tiny_onnx: Path, tmp_path: Path) -> None:
    graph = _graph(tiny_onnx, "fp16", tmp_path)
    out = tmp_path / "tiny.fp16.xml"
    compile(graph, out, force=False, threads=1)
    assert b'element_type="f16"' in out.read_bytes()  # the FP16 weights stay FP16 in the IR
    got, want = _run(open_runner, out, _x()), _run(OnnxRuntimeRunner, graph, _x())
    np.testing.assert_allclose(got, want, atol=2e-3 * float(np.abs(want).max()))


def test_int8_qdq_graph_runs_in_low_precision(tiny_onnx: Path, tmp_path: Path) -> None:
    graph = _graph(tiny_onnx, "int8", tmp_path)
    out = tmp_path / "tiny.int8.xml"
    facts = compile(graph, out, force=False, threads=1)
    convs = facts["build_options"]["runtime_precisions"]["Convolution"]
    assert set(convs) <= {"u8", "i8"} and sum(convs.values()) == 3, convs
    with open_runner(out, threads=1) as runner:
        x = {"input": _x()}
        assert runtime_precisions(runner.compiled_model(x)) == {"Convolution": convs}
        got = runner.infer(x)["output"]
    # The graph the CPU plugin is given (7-bit weights on x86 CPUs without VNNI, deploykit.graph.seven_bit):
    # full-range weights saturate there, 18% of the output range off on an AVX2 EPYC.
    deployed = tmp_path / "tiny.int8.deployed.onnx"
    onnx.save(as_deployed(onnx.load(str(graph)), threads=1, optimize=False, float_source=onnx.load(str(tiny_onnx))),
              str(deployed))
    qdq = _run(OnnxRuntimeRunner, deployed, _x())
    fp32 = _run(OnnxRuntimeRunner, tiny_onnx, _x())
    scale = float(np.abs(fp32).max())
    assert np.abs(got - qdq).max() < 2e-2 * scale  # the same quantized model (rounding may differ by a step)
    assert np.abs(got - fp32).max() > 1e-5 * scale  # and quantized indeed
    lowering = facts["build_options"]["int8_lowering"]
    assert (lowering["seven_bit_weights"] == 3) == needs_seven_bit_weights()
    # the CPU lowering ONNX Runtime's artifact gets (deploykit.graph.cpu_int8): UINT8 activations, the INT8
    # pass's observed ranges as asymmetric FakeQuantize; the symmetric graph stays TensorRT's
    assert lowering["uint8_activations"] > 0
    zero_points = [i for i in onnx.load(str(deployed)).graph.initializer if i.name.endswith("_u8") and not i.dims
                   and i.data_type == onnx.TensorProto.UINT8]
    assert zero_points


@pytest.mark.parametrize("vnni", [False, True], ids=["no-vnni", "vnni"])
def test_weight_width_follows_vnni(vnni: bool, tiny_onnx: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this CPU is: as the build sees a CPU without VNNI, the IR gets 7-bit weights rounded once from
    the float weights (those the graph was quantized from: the build hands the equalized float model to the
    lowering); with VNNI it keeps full-range weights."""
    from deploykit.build import build_artifact

    simulate_cpu(monkeypatch, vnni=vnni)
    result = build_artifact(tiny_onnx, tmp_path / "tiny.int8.xml", precision=precision_of("int8"),
                            backend=backend_of("openvino"), threads=1,
                            calibration=CalibrationOptions(data="synthetic", n=4,
                                                           recovery=RecoveryOptions(equalization=EQUALIZE["relu"])))
    assert result.report["equalization"]["pairs"] > 0  # the float weights changed before quantization
    width = 0 if vnni else 3
    lowering = result.sidecar.build_options["int8_lowering"]
    assert (lowering["seven_bit_weights"], lowering["seven_bit_from_float"]) == (width, width)


def test_refuses_to_overwrite(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.xml"
    compile(tiny_onnx, out, force=False)
    with pytest.raises(OutputExists, match="--force"):
        compile(tiny_onnx, out, force=False)
    compile(tiny_onnx, out, force=True)


def test_runner_errors(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.xml"
    compile(tiny_onnx, out, force=False)
    with open_runner(out) as runner, pytest.raises(InputError, match="expected rank 4"):
        runner.infer({"input": np.zeros((3, 64, 64), np.float32)})
    (tmp_path / "tiny.bin").unlink()
    with pytest.raises(InputError, match=r"tiny\.bin"), open_runner(out):
        pass


def test_node_failure_reads_both_of_openvinos_forms(tmp_path: Path) -> None:
    """A shape a graph cannot take is refused by OpenVINO's shape inference when the model is reshaped, or by the
    CPU plugin at run time when it is not: both messages (raised here by OpenVINO itself) name the node and why;
    any other error is not read as one."""
    from onnx import TensorProto, helper

    from deploykit.backends.openvino.runner import node_failure

    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph([helper.make_node("MaxPool", ["input"], ["half"], kernel_shape=[2, 2], strides=[2, 2]),
                               helper.make_node("Resize", ["half", "", "scales"], ["up"], mode="nearest"),
                               helper.make_node("Add", ["up", "input"], ["sum"])], "odd", [image],
                              [helper.make_tensor_value_info("sum", TensorProto.FLOAT, None)], [scales])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "odd.onnx"))
    core = ov.Core()
    model = core.read_model(str(tmp_path / "odd.onnx"))
    with pytest.raises(RuntimeError) as reshaping:
        model.clone().reshape({"input": [1, 3, 65, 65]})
    with pytest.raises(RuntimeError) as running:
        core.compile_model(model, "CPU").create_infer_request().infer({"input": _x(65, 65)})
    assert node_failure(reshaping.value) == "node sum (Add): Argument shapes are inconsistent"
    assert (node_failure(running.value) or "").startswith("node sum (Add): ")
    assert node_failure(RuntimeError("Exception from src/inference/src/core.cpp:99: cannot read")) is None
