"""build_artifact: FP32/FP16/INT8 artifacts for ONNX Runtime with sidecars that later commands load, the
precision graph beside them, calibration caching, accuracy budgets, and clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploykit.backends.base import BACKENDS, backend_of, resolve_backend
from deploykit.backends.tensorrt.backend import availability as tensorrt_status
from deploykit.build import build_artifact, precision_path
from deploykit.errors import BackendUnavailable, CalibrationError, CheckFailed, ConfigConflict, OutputExists
from deploykit.io.digests import sha256_file
from deploykit.io.metadata import read_metadata
from deploykit.io.sidecar import read_sidecar
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import PRECISIONS
from deploykit.targets.resolve import open_target
from tests.fixtures.precision_models import export_user_model, photo_folder
from tests.graph.graphs import CONTROL_FLOW


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build")
    export_user_model(root / "net.onnx")
    photo_folder(root / "calib", count=6)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    target = open_target(str(path))
    with target.runner as runner:
        return next(iter(runner.infer({target.input_name: x}).values()))


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 32, 40)).astype(np.float32)


def test_precision_path_names() -> None:
    assert precision_path("out/model.int8.ort.onnx", "int8") == Path("out/model.int8.onnx")
    assert precision_path("model.plan", "fp16") == Path("model.fp16.onnx")
    assert precision_path("model.fp16.onnx", "fp16") == Path("model.fp16.graph.onnx")


def test_auto_backend_says_why() -> None:
    backend, note = resolve_backend(None)
    if not tensorrt_status().ready:
        assert backend.name == "onnxruntime" and "default here" in note and "TensorRT is" in note
    with pytest.raises(ConfigConflict, match="unknown backend"):
        resolve_backend("coreml")


def test_fp32_artifact_and_sidecar(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.ort.onnx"
    result = build_artifact(workdir / "net.onnx", out)
    sidecar = read_sidecar(out)
    assert sidecar is not None and sidecar == result.sidecar
    assert (sidecar.backend, sidecar.precision) == ("onnxruntime", "fp32")
    assert sidecar.source_onnx_sha256 == sha256_file(workdir / "net.onnx")
    assert sidecar.artifact_sha256 == sha256_file(out)
    assert sidecar.device["cpu"] and sidecar.build_options["optimization_level"] == "extended"
    assert sidecar.model["model"] == "tests.fixtures.precision_models:precision_net"
    assert result.precision_onnx is None and not precision_path(out, "fp32").exists()
    assert read_metadata(onnx.load(str(out))) is not None  # the optimized model keeps its metadata
    np.testing.assert_allclose(_outputs(out, _x()), _outputs(workdir / "net.onnx", _x()), atol=1e-4)


def test_fp16_artifact(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.fp16.ort.onnx"
    result = build_artifact(workdir / "net.onnx", out, precision=PRECISIONS["fp16"],
                            calibration=CalibrationOptions(data=str(workdir / "calib")),
                            keeps={"keep_fp32": ["ConvTranspose"]})
    graph = tmp_path / "net.fp16.onnx"
    assert result.precision_onnx == graph and graph.is_file()
    meta = read_metadata(onnx.load(str(graph)))
    assert meta is not None and meta.precision == "fp16"
    sidecar = result.sidecar
    assert sidecar.precision == "fp16" and sidecar.calibration_sha256
    assert sidecar.precision_report["precision_onnx_sha256"] == sha256_file(graph)
    assert [k["op_type"] for k in sidecar.precision_report["kept_fp32"]] == ["ConvTranspose"]
    assert sidecar.build_options["calibration"]["overflow_scan"] == "6 input(s)"
    target = open_target(str(out))
    assert target.precision == "fp16" and target.kind == "artifact"
    reference, got = _outputs(workdir / "net.onnx", _x()), _outputs(out, _x())
    assert np.abs(got - reference).max() < 1e-2 * np.abs(reference).max()


def test_int8_artifact_with_cache(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.int8.ort.onnx"
    options = CalibrationOptions(data=str(workdir / "calib"), method="percentile", percentile=99.99)
    first = build_artifact(workdir / "net.onnx", out, precision=PRECISIONS["int8"], calibration=options)
    calibration = first.sidecar.build_options["calibration"]
    assert calibration["cache_hit"] is False and Path(calibration["cache"]).is_file()
    assert first.report["quantized_nodes"] == 6 and first.report["qdq_layout"] == "inputs+outputs"
    graph = onnx.load(str(tmp_path / "net.int8.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 6
    second = build_artifact(workdir / "net.onnx", out, precision=PRECISIONS["int8"], calibration=options, force=True)
    assert second.sidecar.build_options["calibration"]["cache_hit"] is True
    assert second.sidecar.precision_report["precision_onnx_sha256"] == first.report["precision_onnx_sha256"]
    reference, got = _outputs(workdir / "net.onnx", _x()), _outputs(out, _x())
    cosine = float(np.sum(reference * got) / (np.linalg.norm(reference) * np.linalg.norm(got)))
    assert cosine > 0.98


def test_int8_accuracy_budget(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.int8.ort.onnx"
    result = build_artifact(workdir / "net.onnx", out, precision=PRECISIONS["int8"],
                            calibration=CalibrationOptions(data=str(workdir / "calib"), holdout=2),
                            accuracy_budget="cosine>=0.9995")
    budget = result.report["budget"]
    assert budget["reached"]["cosine"] >= 0.9995 and budget["budget"] == "cosine>=0.9995"
    kept = [k["name"] for k in result.report["kept_float"]]
    assert kept == budget["kept"] and len(kept) < 6
    assert result.sidecar.build_options["calibration"]["inputs"] == 4  # 6 images, 2 held out
    saved = json.loads((tmp_path / "net.int8.ort.onnx.deploykit.json").read_text())
    assert saved["precision_report"]["budget"]["kept"] == kept


def test_fp16_accuracy_budget_keeps_float32(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.fp16.ort.onnx"
    options = CalibrationOptions(data=str(workdir / "calib"), holdout=2)
    easy = build_artifact(workdir / "net.onnx", out, precision=PRECISIONS["fp16"], calibration=options,
                          accuracy_budget=["cosine>=0.5"])
    unrestricted = easy.report["budget"]["unrestricted"]["cosine"]
    assert easy.report["budget"]["kept"] == [] and 0.999 < unrestricted < 1.0
    wanted = unrestricted + (1.0 - unrestricted) / 2  # halve float16's error: some nodes must stay float32
    result = build_artifact(workdir / "net.onnx", out, precision=PRECISIONS["fp16"], calibration=options,
                            accuracy_budget=[f"cosine>={wanted!r}"], force=True)
    budget = result.report["budget"]
    assert budget["reached"]["cosine"] >= wanted and budget["kept"]
    kept = {k["name"] for k in result.report["kept_fp32"]}
    assert set(budget["kept"]) <= kept


def test_failures_are_clear(workdir: Path, tmp_path: Path) -> None:
    source = workdir / "net.onnx"
    with pytest.raises(CalibrationError, match="INT8 needs calibration data"):
        build_artifact(source, tmp_path / "a.onnx", precision=PRECISIONS["int8"])
    with pytest.raises(ConfigConflict, match="--fp16 builds only"):
        build_artifact(source, tmp_path / "a.onnx", precision=PRECISIONS["int8"], keeps={"keep_fp32": ["Conv"]})
    with pytest.raises(ConfigConflict, match="--int8 builds only"):
        build_artifact(source, tmp_path / "a.onnx", precision=PRECISIONS["fp16"], keeps={"keep_float": ["Conv"]})
    with pytest.raises(ConfigConflict, match="--fp16 and --int8"):
        build_artifact(source, tmp_path / "a.onnx", accuracy_budget="cosine>=0.9")
    (tmp_path / "exists.onnx").write_bytes(b"")
    with pytest.raises(OutputExists):
        build_artifact(source, tmp_path / "exists.onnx")
    if not tensorrt_status().ready:
        with pytest.raises(BackendUnavailable, match="--backend onnxruntime"):
            build_artifact(source, tmp_path / "a.plan", backend=backend_of("tensorrt"))
    with pytest.raises(CheckFailed, match="no assignment reaches"):
        build_artifact(source, tmp_path / "b.onnx", precision=PRECISIONS["int8"], accuracy_budget="cosine>=0.99999999",
                       calibration=CalibrationOptions(data=str(workdir / "calib"), max_kept=0))
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_local_functions_are_lowered_and_control_flow_is_reported(tmp_path: Path, precision: str) -> None:
    """A Conv inside a model-local function is converted/quantized like any other (the function is inlined for
    the pass); a Conv inside an If branch is FP16 too, and INT8 lists it as kept in float with the reason."""
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    options = CalibrationOptions(data=str(inputs))
    reports = {}
    for name in ("function", "if"):
        source = tmp_path / f"{name}.onnx"
        onnx.save(CONTROL_FLOW[name](), str(source))
        reports[name] = build_artifact(source, tmp_path / f"{name}.{precision}.ort.onnx", calibration=options,
                                       precision=PRECISIONS[precision], backend=BACKENDS["onnxruntime"]).report
    if precision == "fp16":
        assert reports["function"]["converted_nodes"] == 4 and reports["function"]["kept_fp32"] == []
        assert reports["if"]["kept_fp32"] == []  # h, read inside the branches, is float16 there too
    else:
        assert reports["function"]["quantized_nodes"] == 2 and reports["function"]["kept_float"] == []
        kept = {k["name"]: k["reason"] for k in reports["if"]["kept_float"]}
        assert set(kept) == {"t_conv", "e_conv"} and "inside branch's then_branch" in kept["t_conv"]
