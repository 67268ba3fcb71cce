"""Every backend checks on open that the sidecar belongs to the artifact (issue 18, item 2): its schema version,
the backend it names, the file kind, and the sha256 of the artifact and of its companions; one line says which
differs. And `package --triton` copies an ONNX model's external data and opens the copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from deploykit.backends.base import backend_of
from deploykit.build import build_artifact
from deploykit.cli import cli
from deploykit.errors import InputError
from deploykit.io.sidecar import sidecar_path
from deploykit.precision.table import PRECISIONS
from deploykit.targets.resolve import open_target
from tests.fakes.fixtures import TrtDouble, trt_double  # noqa: F401 - the TensorRT double as a fixture

openvino = pytest.importorskip("openvino", reason="the OpenVINO rows need the openvino extra")


@pytest.fixture(scope="module")
def built(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("built")
    made = {}
    for name, backend, precision in (("a.ort.onnx", "onnxruntime", "fp32"), ("b.fp16.ort.onnx", "onnxruntime", "fp16"),
                                     ("c.xml", "openvino", "fp32"), ("d.fp16.xml", "openvino", "fp16")):
        made[name] = build_artifact(tiny_onnx, folder / name, backend=backend_of(backend),
                                    precision=PRECISIONS[precision]).path
    return made


def _copy(artifact: Path, folder: Path, name: str | None = None) -> Path:
    """The artifact with its sidecar and companions, under another folder (and name)."""
    target = folder / (name or artifact.name)
    shutil.copyfile(artifact, target)
    shutil.copyfile(sidecar_path(artifact), sidecar_path(target))
    if artifact.suffix == ".xml":
        shutil.copyfile(artifact.with_suffix(".bin"), target.with_suffix(".bin"))
    return target


def _edit_sidecar(artifact: Path, **changes: object) -> None:
    data = json.loads(sidecar_path(artifact).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    sidecar_path(artifact).write_text(json.dumps(data))


def test_an_intact_artifact_opens(built: dict[str, Path], tmp_path: Path) -> None:
    for artifact in built.values():
        with open_target(str(_copy(artifact, tmp_path))).runner as runner:
            assert runner.infer({"input": np.zeros((1, 3, 64, 64), np.float32)})


@pytest.mark.parametrize("artifact, other", [("a.ort.onnx", "b.fp16.ort.onnx"), ("c.xml", "d.fp16.xml")])
def test_another_artifacts_sidecar_is_refused(built: dict[str, Path], artifact: str, other: str,
                                              tmp_path: Path) -> None:
    copy = _copy(built[artifact], tmp_path)
    shutil.copyfile(sidecar_path(built[other]), sidecar_path(copy))
    with pytest.raises(InputError, match=r"does not match its sidecar .*\(sha256 differs\)"):
        open_target(str(copy))


def test_a_replaced_companion_is_refused(built: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(built["c.xml"], tmp_path)
    shutil.copyfile(built["d.fp16.xml"].with_suffix(".bin"), copy.with_suffix(".bin"))
    with pytest.raises(InputError, match=r"c\.bin does not match the sidecar c\.xml\.deploykit\.json"):
        open_target(str(copy))


@pytest.mark.parametrize("schema, says", [(2, "newer than this deploykit reads"), (None, "schema version None"),
                                          ("1", "schema version '1'")])
def test_a_sidecar_of_another_schema_is_refused(built: dict[str, Path], schema: object, says: str,
                                                tmp_path: Path) -> None:
    copy = _copy(built["a.ort.onnx"], tmp_path)
    _edit_sidecar(copy, schema=schema)
    with pytest.raises(InputError, match=says):
        open_target(str(copy))


def test_a_sidecar_naming_another_backend_is_refused(built: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(built["a.ort.onnx"], tmp_path)
    _edit_sidecar(copy, backend="openvino")
    with pytest.raises(InputError, match=r"says it is a openvino artifact \(\.xml\), but the file is named a\.ort"):
        open_target(str(copy))
    _edit_sidecar(copy, backend="onnxruntime", artifact_sha256=None)
    with pytest.raises(InputError, match="lacks or garbles artifact_sha256"):
        open_target(str(copy))


def test_a_tensorrt_engine_checks_its_sidecar_too(trt_double: TrtDouble, tiny_onnx: Path,  # noqa: F811
                                                  tmp_path: Path) -> None:
    first = build_artifact(tiny_onnx, tmp_path / "e.plan", backend=backend_of("tensorrt")).path
    second = build_artifact(tiny_onnx, tmp_path / "f.fp16.plan", backend=backend_of("tensorrt"),
                            precision=PRECISIONS["fp16"]).path
    shutil.copyfile(sidecar_path(second), sidecar_path(first))
    with pytest.raises(InputError, match=r"e\.plan does not match its sidecar"):
        open_target(str(first))


def test_package_copies_external_data_and_checks_the_copy_loads(tiny_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(model, str(folder / "net.onnx"), save_as_external_data=True, location="net.onnx.data",
              size_threshold=0)
    assert (folder / "net.onnx.data").is_file()
    result = CliRunner().invoke(cli, ["package", "--triton", str(folder / "net.onnx"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    version = tmp_path / "r" / "net" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "net.onnx.data"]
    (folder / "net.onnx.data").unlink()  # without its data the model cannot be packaged
    missing = CliRunner().invoke(cli, ["package", "--triton", str(folder / "net.onnx"), "--out",
                                       str(tmp_path / "r2")])
    assert missing.exit_code == 2 and "net.onnx.data, which is not beside it" in missing.stderr, missing.output
    assert not (tmp_path / "r2").exists()


def test_package_refuses_a_mismatched_sidecar(built: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(built["a.ort.onnx"], tmp_path)
    shutil.copyfile(sidecar_path(built["b.fp16.ort.onnx"]), sidecar_path(copy))
    result = CliRunner().invoke(cli, ["package", "--triton", str(copy), "--out", str(tmp_path / "repo")])
    assert result.exit_code == 2 and "does not match its sidecar" in result.stderr
    assert not (tmp_path / "repo").exists()
