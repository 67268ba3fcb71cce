"""engine_from_onnx under the tensorrt double (10.x and 11.x profiles): what it asks TensorRT for, and what it
writes. Nothing here is a TensorRT figure: the double validates and serialises, it does not optimise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploykit.backends.tensorrt.build import TensorRTBuildOptions, engine_from_onnx
from deploykit.errors import BackendUnavailable, BuildError, OutputExists
from deploykit.io.digests import sha256_file
from deploykit.io.sidecar import read_sidecar, sidecar_path
from tests.fakes.fixtures import TrtDouble
from tests.fakes.tensorrt_double import SimulatedGpu
from tests.graph import graphs


def test_build_writes_engine_and_sidecar(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.plan"
    sidecar = engine_from_onnx(tiny_onnx, out)
    assert json.loads(json.dumps(sidecar.to_dict())) == read_sidecar(out).to_dict()  # type: ignore[union-attr]
    assert sidecar.backend == "tensorrt" and sidecar.precision == "fp32"
    assert sidecar.backend_version == trt_double.module.__version__ and sidecar.backend_version.endswith("+testdouble")
    assert sidecar.device["compute_capability"] == "8.6" and "simulated" in sidecar.device["gpu"]
    assert sidecar.source_onnx_sha256 == sha256_file(tiny_onnx)
    assert sidecar.artifact_sha256 == sha256_file(out)
    assert sidecar.model["input_size"] == [64, 64] and sidecar.model["model"].endswith("tiny_segmenter")
    assert sidecar.build_options["profile"] == {"input": {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64],
                                                          "max": [4, 3, 128, 128]}}
    build = trt_double.state.builds[-1]
    assert build["strongly_typed"] and build["flags"] == 0  # no precision (or any other) builder flag
    assert build["profile"]["input"] == [[1, 3, 32, 32], [1, 3, 64, 64], [4, 3, 128, 128]]
    assert build["optimization_level"] == 3 and not build["timing_cache"]


def test_build_options_reach_the_builder(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    options = TensorRTBuildOptions.from_cli(opt_shape=["input:2x3x96x96"], max_shape=["4x3x192x160"],
                                            workspace_mib=256, optimization_level=5, version_compatible=True,
                                            hardware_compatibility="ampere+")
    sidecar = engine_from_onnx(tiny_onnx, tmp_path / "m.plan", options)
    build = trt_double.state.builds[-1]
    assert build["workspace"] == 256 << 20 and build["optimization_level"] == 5
    assert build["version_compatible"] and build["hardware"] == "AMPERE_PLUS"
    assert build["flags"] == 1 << int(trt_double.module.BuilderFlag.VERSION_COMPATIBLE)
    assert build["profile"]["input"] == [[1, 3, 48, 48], [2, 3, 96, 96], [4, 3, 192, 160]]
    assert sidecar.build_options["version_compatible"] and sidecar.build_options["hardware_compatibility"] == "ampere+"


def test_timing_cache_is_read_and_updated(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    options = TensorRTBuildOptions(timing_cache=str(cache))
    built = engine_from_onnx(tiny_onnx, tmp_path / "a.plan", options)
    first = json.loads(cache.read_bytes())
    assert first["entries"] and trt_double.state.timing_cache_hits == 0
    assert built.build_options["timing_cache_record"]["status"] == "new"
    messages: list[str] = []
    again = engine_from_onnx(tiny_onnx, tmp_path / "b.plan", options, progress=messages.append)
    assert trt_double.state.timing_cache_hits == len(first["entries"])  # every entry reused
    assert any(m.startswith(f"read timing cache {cache}") for m in messages)
    record = again.build_options["timing_cache_record"]
    assert record["status"] == "read" and record["read_entries"] == record["written_entries"] == len(first["entries"])


def test_a_corrupt_timing_cache_is_left_alone(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a cache")
    messages: list[str] = []
    built = engine_from_onnx(tiny_onnx, tmp_path / "a.plan", TensorRTBuildOptions(timing_cache=str(cache)),
                             progress=messages.append)
    assert any("left as it is" in m for m in messages) and cache.read_bytes() == b"not a cache"
    assert built.build_options["timing_cache_record"]["status"] == "refused"


def test_a_timing_cache_from_another_gpu_is_said_and_kept(trt_double: TrtDouble, tiny_onnx: Path,
                                                          tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    options = TensorRTBuildOptions(timing_cache=str(cache))
    engine_from_onnx(tiny_onnx, tmp_path / "a.plan", options)
    theirs = cache.read_bytes()
    trt_double.set_gpu(SimulatedGpu("NVIDIA L4 (simulated by the test double)", (8, 9)))
    messages: list[str] = []
    engine_from_onnx(tiny_onnx, tmp_path / "b.plan", options, progress=messages.append)
    assert cache.read_bytes() == theirs  # the other GPU's timings are not overwritten
    assert any("made on another GPU or TensorRT version" in m and "left as it is" in m for m in messages)


def test_tensorrt_warnings_are_shown_and_recorded(trt_double: TrtDouble, tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    huge = numpy_helper.from_array(np.array([1e39, 1, 2, 3], np.float64), "big")  # beyond float32's range
    nodes = [helper.make_node("Cast", ["big"], ["bigf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Add", ["x", "bigf"], ["y"], name="add")]
    path = tmp_path / "double_weights.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [huge]),
                                opset_imports=[helper.make_opsetid("", 18)]), path)
    messages: list[str] = []
    sidecar = engine_from_onnx(path, tmp_path / "m.plan", progress=messages.append)
    shown = [m for m in messages if m.startswith("TensorRT warning: ")]
    assert shown and "out of range. Clamping to" in shown[0]
    assert sidecar.build_options["tensorrt_warnings"] == [m.removeprefix("TensorRT warning: ") for m in shown]


def test_parser_errors_name_the_node(trt_double: TrtDouble, tmp_path: Path) -> None:
    path = tmp_path / "crop.onnx"
    onnx.save(graphs.resize(transform="tf_crop_and_resize"), path)
    options = TensorRTBuildOptions.from_cli(opt_shape=["1x3x8x8"], lint=False)
    with pytest.raises(BuildError, match=r"node up1 \(Resize\): UNSUPPORTED_NODE: .*tf_crop_and_resize"):
        engine_from_onnx(path, tmp_path / "crop.plan", options)
    assert not (tmp_path / "crop.plan").exists()


def test_lint_errors_stop_the_build_before_tensorrt(trt_double: TrtDouble, tmp_path: Path) -> None:
    path = tmp_path / "crop.onnx"
    onnx.save(graphs.resize(transform="tf_crop_and_resize"), path)
    with pytest.raises(BuildError, match=r"up1 \(Resize\): coordinate_transformation_mode 'tf_crop_and_resize'"):
        engine_from_onnx(path, tmp_path / "crop.plan", TensorRTBuildOptions.from_cli(opt_shape=["1x3x8x8"]))
    assert trt_double.state.builds == []


def test_cubic_resize_builds_and_antialias_is_ignored(trt_double: TrtDouble, tmp_path: Path) -> None:
    """onnx-tensorrt's Resize importer takes mode "cubic" (kCUBIC) and never reads antialias: both build."""
    for name, model in (("cubic", graphs.resize(mode="cubic")), ("aa", graphs.resize(antialias=1))):
        onnx.save(model, tmp_path / f"{name}.onnx")
        engine_from_onnx(tmp_path / f"{name}.onnx", tmp_path / f"{name}.plan",
                         TensorRTBuildOptions.from_cli(opt_shape=["1x3x8x8"]))
        assert (tmp_path / f"{name}.plan").exists()


def test_unpooling_is_rewritten_and_matches_onnx_runtime(trt_double: TrtDouble, tmp_path: Path) -> None:
    from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
    from deploykit.backends.tensorrt.build import TensorRTRunner

    path, out = tmp_path / "unpool.onnx", tmp_path / "unpool.plan"
    onnx.save(graphs.unpooling(), path)
    sidecar = engine_from_onnx(path, out, TensorRTBuildOptions.from_cli(opt_shape=["x:1x3x16x16"]))
    assert sidecar.build_options["graph_rewrites"] == ["unpooling"]
    feed = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    with OnnxRuntimeRunner(path) as ort_runner, TensorRTRunner.from_artifact(out) as trt_runner:
        np.testing.assert_array_equal(trt_runner.infer(feed)["y"], ort_runner.infer(feed)["y"])


def test_no_gpu_is_backend_unavailable(trt_double_no_gpu: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"cannot construct a builder.*GPU"):
        engine_from_onnx(tiny_onnx, tmp_path / "m.plan")
    assert list(tmp_path.iterdir()) == []


def test_not_installed_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                              tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    with pytest.raises(BackendUnavailable, match=r"deploykit\[tensorrt\]"):
        engine_from_onnx(tiny_onnx, tmp_path / "m.plan")


def test_existing_output_needs_force(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.plan"
    out.write_bytes(b"old")
    with pytest.raises(OutputExists):
        engine_from_onnx(tiny_onnx, out)
    assert trt_double.state.builds == [] and out.read_bytes() == b"old"
    engine_from_onnx(tiny_onnx, out, force=True)
    assert out.read_bytes() != b"old" and sidecar_path(out).is_file()


def test_failed_build_writes_nothing(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    trt_double.set_gpu(SimulatedGpu("Tesla T4 (simulated)", (7, 5)))
    with pytest.raises(BuildError, match="Ampere"):
        engine_from_onnx(tiny_onnx, tmp_path / "m.plan", TensorRTBuildOptions(hardware_compatibility="ampere+"))
    assert list(tmp_path.iterdir()) == []
