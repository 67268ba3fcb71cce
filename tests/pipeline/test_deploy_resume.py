"""A resumed deploy redoes exactly what changed since the last run, and writes only into its own folder: the
ground-truth masks are an input of parity (and of a build with a budget), a data folder is keyed by content,
the precision graph is an output of its build, and a folder of other files is refused without --force."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from deploykit.backends import base
from deploykit.cli import cli
from deploykit.io import digests
from deploykit.pipeline.deploy import _folder_fingerprint
from tests.fixtures.user_models import tiny_segmenter

USER = "tests.fixtures.user_models:tiny_segmenter"


def _images(folder: Path, seed: int, *, masks: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in ("a", "b", "c"):
        shape = (64, 64) if masks else (64, 64, 3)
        Image.fromarray(rng.integers(0, 3 if masks else 255, shape, dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def _deploy(out: Path, data: Path, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["deploy", USER, "--input-shape", "1,3,64,64", "--out", str(out), "--precisions",
                                    "fp32,int8", "--calib-data", str(data / "calib"), "--calib-n", "2",
                                    "--bench-seconds", "0.01", "--threads", "1", "--json", *extra])


def _ran(result: Result) -> set[str]:
    assert result.exit_code == 0, result.output
    return {s["name"] for s in json.loads(result.stdout)["steps"] if not s["skipped"]}


def _miou_gt(result: Result) -> list[float]:
    return [c["outputs"][0]["metrics"]["miou_gt"] for c in json.loads(result.stdout)["parity"]["candidates"]]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The data (calib/, labels/, labels2/) and a finished deploy without --labels, copied by each test."""
    data = tmp_path_factory.mktemp("data")
    _images(data / "calib", 0)
    _images(data / "labels", 1, masks=True)
    _images(data / "labels2", 2, masks=True)
    out = tmp_path_factory.mktemp("deployed") / "out"
    assert _ran(_deploy(out, data))
    return data, out


@pytest.fixture
def resumed(deployed: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    data, out = deployed
    shutil.copytree(out, tmp_path / "out")
    return data, tmp_path / "out"


def test_labels_added_or_changed_rerun_parity(resumed: tuple[Path, Path]) -> None:
    """--labels added to a finished deploy once skipped parity, so the report had no mIoU against them; masks
    changed since kept the old figure."""
    data, out = resumed
    added = _deploy(out, data, "--labels", str(data / "labels"))
    assert _ran(added) == {"parity", "layers"}
    first = _miou_gt(added)
    changed = _deploy(out, data, "--labels", str(data / "labels2"))
    assert _ran(changed) == {"parity", "layers"}
    assert _miou_gt(changed) != first
    assert _ran(_deploy(out, data, "--labels", str(data / "labels2"))) == set()


def test_a_deleted_precision_graph_is_built_again(resumed: tuple[Path, Path]) -> None:
    """model.int8.onnx was no output of its build: deleted, the build was skipped and the next layers step
    failed on it as a bug (exit 3)."""
    data, out = resumed
    (out / "model.int8.onnx").unlink()
    (out / "layers.json").unlink()
    assert _ran(_deploy(out, data)) == {"build-int8", "layers"}
    assert (out / "model.int8.onnx").is_file()


def test_calibration_options_rebuild_only_the_precisions_that_calibrate(resumed: tuple[Path, Path]) -> None:
    """--calib-n was in every build's key: changed, FP32 (no graph pass, no calibration) was built again."""
    data, out = resumed
    ran = _ran(_deploy(out, data, "--calib-n", "3"))
    assert "build-int8" in ran and "build-fp32" not in ran and "export" not in ran


def test_an_image_replaced_with_its_size_and_time_kept_recalibrates(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration images were keyed by name, size and whole-second time: one replaced by another of its size
    with its time kept (cp -p, rsync -a) left INT8 calibrated on the old one."""
    folder = _images(tmp_path / "calib", 0)
    before = _folder_fingerprint(str(folder))
    stat = (folder / "a.png").stat()
    shutil.copyfile(folder / "b.png", folder / "a.png")
    os.utime(folder / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (folder / "a.png").stat().st_size == stat.st_size
    monkeypatch.setattr(digests, "_DIGESTS", {})  # the next deploy is a new process: no digest cached
    assert _folder_fingerprint(str(folder)) != before


def test_a_rerun_without_the_flag_its_checkpoint_needs_is_refused(resumed: tuple[Path, Path]) -> None:
    """--allow-partial was in no step's key: dropped on a rerun, every step was skipped and the deploy passed
    (exit 0) with a checkpoint a fresh run refuses (exit 2)."""
    data, out = resumed
    partial = out.parent / "backbone.pt"
    torch.save({k: v for k, v in tiny_segmenter().state_dict().items() if k.startswith("stem.")}, partial)
    assert _ran(_deploy(out, data, "--weights", str(partial), "--allow-partial"))
    refused = _deploy(out, data, "--weights", str(partial))
    assert refused.exit_code == 2 and "--allow-partial" in refused.stderr, refused.output


def test_another_runtime_version_redoes_every_step_that_runs_it(resumed: tuple[Path, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """deploykit's own version was in every step's key, the runtime's not: after an upgrade of ONNX Runtime a
    resumed deploy kept the builds, parity figures and timings the old one made."""
    data, out = resumed
    monkeypatch.setitem(base._PROBED, "onnxruntime", base.Availability("ready", "0.0.0+other"))
    assert _ran(_deploy(out, data)) == {"build-fp32", "build-int8", "parity", "layers", "bench"}


def test_another_thread_count_builds_again(resumed: tuple[Path, Path]) -> None:
    """--threads was no input of a build, which races backends, searches a budget and compiles at that count
    and records it in the sidecar: a rerun with another count kept the sidecars saying "threads": 1."""
    data, out = resumed
    again = _deploy(out, data, "--threads", "2")
    assert {"build-fp32", "build-int8", "bench"} <= _ran(again)
    sidecar = json.loads((out / "model.int8.ort.onnx.deploykit.json").read_text())
    assert sidecar["build_options"]["threads"] == 2


def test_a_dropped_precision_leaves_no_artifact_behind(resumed: tuple[Path, Path]) -> None:
    """int8 dropped from --precisions on a rerun: its artifact, sidecar, graph and record stayed in the folder
    beside this run's outputs, which a fresh run's folder does not hold; asked for again, it is built again."""
    data, out = resumed
    assert _ran(_deploy(out, data, "--precisions", "fp32")) == {"parity", "layers", "bench"}
    assert not list(out.glob("*int8*"))
    assert "build-int8" in _ran(_deploy(out, data))


def test_a_folder_of_other_files_is_refused_without_force(deployed: tuple[Path, Path], tmp_path: Path) -> None:
    """deploy once wrote report.md, model.onnx and the rest over a user's files of those names."""
    data, _ = deployed
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my report")
    refused = _deploy(out, data)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.count("\n") == 1 and "--force" in refused.stderr and "report.md" in refused.stderr
    assert [p.name for p in out.iterdir()] == ["report.md"] and (out / "report.md").read_text() == "my report"
    assert _ran(_deploy(out, data, "--force"))  # told to, it writes there


def test_a_folder_with_hidden_files_only_is_written(deployed: tuple[Path, Path], tmp_path: Path) -> None:
    """Hidden entries are not the user's outputs-to-be (deploy writes no hidden name but its record), and a run
    killed before its record leaves only hidden temporary files."""
    data, _ = deployed
    out = tmp_path / "hidden"
    out.mkdir()
    (out / ".DS_Store").write_text("x")
    assert _ran(_deploy(out, data))
