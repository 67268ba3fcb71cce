"""OpenVINO through the one backend table: build, targets (with and without a sidecar), bench, Triton packaging
and doctor reach it through its entry only (companions, triton_backend, self_describing)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploykit.backends.base import BACKENDS, backend_of, self_described
from deploykit.build import build_artifact, precision_path
from deploykit.errors import BuildError
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import PRECISIONS

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'deploykit[openvino]')")

ENTRY = backend_of("openvino")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def built(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "tiny.int8.xml"
    build_artifact(tiny_onnx, out, precision=PRECISIONS["int8"], backend=ENTRY,
                   calibration=CalibrationOptions(data="synthetic", n=4), threads=1)
    return out


def test_entry_and_paths() -> None:
    assert precision_path("m.int8.xml", "int8") == Path("m.int8.onnx")
    assert ENTRY.files("a/m.fp32.xml") == [Path("a/m.fp32.xml"), Path("a/m.fp32.bin")]
    assert self_described("m.xml") is ENTRY and self_described("m.onnx") is None
    assert ENTRY.servable and not ENTRY.triton_platform and ENTRY.availability().ready


def test_build_writes_ir_bin_graph_and_sidecar(built: Path) -> None:
    from deploykit.io.sidecar import read_sidecar

    sidecar = read_sidecar(built)
    assert sidecar is not None and sidecar.backend == ENTRY.name and sidecar.precision == "int8"
    assert built.with_suffix(".bin").is_file() and (built.parent / "tiny.int8.onnx").is_file()
    assert sidecar.build_options["runtime_precisions"]["Convolution"].keys() <= {"u8", "i8"}
    assert sidecar.build_options["compile_options"]["INFERENCE_PRECISION_HINT"] == "f32"


def _output(target: str) -> tuple[Any, np.ndarray]:
    from deploykit.targets.resolve import open_target

    opened = open_target(target, threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with opened.runner:
        return opened, next(iter(opened.runner.infer({opened.input_name: x}).values()))


def test_artifact_and_bare_ir_open_alike(built: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.xml"
    shutil.copyfile(built, bare)
    shutil.copyfile(built.with_suffix(".bin"), bare.with_suffix(".bin"))
    with_sidecar, out = _output(str(built))
    without, again = _output(str(bare))
    assert with_sidecar.runner.backend == without.runner.backend == ENTRY.name
    assert without.precision == "int8" and without.task == with_sidecar.task == "segmentation"
    assert without.input_size == (64, 64) and without.metadata is not None
    np.testing.assert_array_equal(out, again)


def test_bench_times_an_ir_by_its_own_backend(built: Path) -> None:
    from contextlib import ExitStack

    from deploykit.targets.bench import open_bench_targets

    with ExitStack() as stack:
        targets, skipped = open_bench_targets(str(built), None, threads=1, model_options={}, stack=stack,
                                              progress=lambda _m: None)
        assert [t.backend for t in targets] == [ENTRY.name] and not skipped
        _, skipped = open_bench_targets(str(built), ["onnxruntime"], threads=1, model_options={}, stack=stack,
                                        progress=lambda _m: None)
        assert "bench it with --backend openvino" in skipped[0].reason


def test_triton_repository_names_the_backend_and_copies_the_bin(built: Path, tmp_path: Path) -> None:
    from deploykit.package.repository import write_repository

    pytest.importorskip("tritonclient", reason="validating config.pbtxt needs tritonclient")
    [packaged] = write_repository([built], tmp_path / "repo")
    model = packaged.model
    config = (tmp_path / "repo" / model.name / "config.pbtxt").read_text()
    assert 'backend: "openvino"' in config and "platform" not in config
    assert 'default_model_filename: "model.xml"' in config
    assert sorted(p.name for p in (tmp_path / "repo" / model.name / "1").iterdir()) == ["model.bin", "model.xml"]
    built.with_suffix(".bin").rename(tmp_path / "moved.bin")
    try:
        with pytest.raises(Exception, match=r"no tiny\.int8\.bin beside it"):
            write_repository([built], tmp_path / "repo2")
    finally:
        (tmp_path / "moved.bin").rename(built.with_suffix(".bin"))


def test_a_failed_build_leaves_no_bin(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = ENTRY.load()

    def half_written(graph: Path, out: Path, options: None, **_: Any) -> Any:
        out.with_suffix(".bin").write_bytes(b"weights")
        raise BuildError("the CPU plugin failed")

    monkeypatch.setattr(module, "compile", half_written)
    out = tmp_path / "t.xml"
    with pytest.raises(BuildError, match="CPU plugin"):
        build_artifact(tiny_onnx, out, backend=ENTRY, threads=1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == []


def test_doctor_lists_it() -> None:
    from deploykit.doctor.machine import probe_machine

    assert probe_machine().backends[ENTRY.name].ready
    assert ENTRY.name in BACKENDS
