"""Models whose input is not RGB (grayscale scans, RGB-D, multispectral): every command takes them with arrays
of their channel count, and says up front, in one line, that images cannot feed them. Before, export failed
("expected 3") on any such model, and parity's class damage on non-image inputs raised "no class maps were
compared"."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.cli import cli

FACTORY = "tests.fixtures.user_models:tiny_segmenter"


def _run(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """channels -> an exported model (export itself is the first property: it must pass for each)."""
    root = tmp_path_factory.mktemp("channels")
    models = {}
    for channels in (1, 2, 4):
        path = root / f"c{channels}.onnx"
        code, lines = _run("export", FACTORY, "--set", f"in_channels={channels}", "--input-shape",
                           f"1,{channels},32,32", "--task", "segmentation", "-o", path)
        assert code == 0, lines
        models[channels] = path
    return models


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channels=st.sampled_from([1, 2, 4]), count=st.integers(1, 3), height=st.integers(2, 5).map(lambda k: 8 * k),
       width=st.integers(2, 5).map(lambda k: 8 * k))
def test_parity_compares_arrays_of_the_models_channels(exported: dict[int, Path], tmp_path: Path, channels: int,
                                                       count: int, height: int, width: int) -> None:
    inputs = tmp_path / f"x{channels}_{count}_{height}_{width}.npy"
    np.save(inputs, np.random.default_rng(count).standard_normal((count, channels, height, width)).astype(np.float32))
    code, lines = _run("parity", FACTORY, "--set", f"in_channels={channels}", exported[channels], "--inputs", inputs)
    assert code == 0, lines
    name = exported[channels].name
    assert any(line.split()[0].endswith(name) and line.split()[-1] == "pass" for line in lines), lines


@pytest.mark.parametrize("channels", [1, 4])
def test_images_cannot_feed_them_and_each_command_says_so_first(exported: dict[int, Path], tmp_path: Path,
                                                               channels: int) -> None:
    model = exported[channels]
    (tmp_path / "built").mkdir()
    commands = [
        ("parity", FACTORY, "--set", f"in_channels={channels}", model),  # sample photographs by default
        ("build-engine", model, "--int8", "--calib-data", "photos", "-o", tmp_path / "built" / "x.onnx"),
        ("build-engine", model, "--fp16", "--calib-data", "photos", "--accuracy-budget", "cosine>=0.99", "-o",
         tmp_path / "built" / "x.onnx"),
        ("deploy", FACTORY, "--set", f"in_channels={channels}", "--input-shape", f"1,{channels},32,32", "--task",
         "segmentation", "--out", tmp_path / "out"),
        ("deploy", FACTORY, "--set", f"in_channels={channels}", "--input-shape", f"1,{channels},32,32", "--task",
         "segmentation", "--precisions", "fp32,int8", "--calib-data", "photos", "--out", tmp_path / "out"),
    ]
    for command in commands:
        code, lines = _run(*command)
        assert code == 2, lines
        assert lines[-1].startswith("deploykit: error: ") and f"{channels}" in lines[-1] and "RGB" in lines[-1]
        assert not any(re.search(r"parity \(inputs\)|\[export\]|calibrating", line) for line in lines), lines
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not any((tmp_path / "built").iterdir())


def test_int8_builds_and_deploys_on_arrays(exported: dict[int, Path], tmp_path: Path) -> None:
    arrays = tmp_path / "calib.npy"
    np.save(arrays, np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32))
    code, lines = _run("deploy", FACTORY, "--set", "in_channels=1", "--input-shape", "1,1,32,32", "--task",
                       "segmentation", "--precisions", "fp32,int8", "--calib-data", arrays, "--inputs", arrays,
                       "--bench-seconds", "0.5", "--out", tmp_path / "out")
    assert code == 0, lines
    assert (tmp_path / "out" / "model.int8.ort.onnx").is_file() and (tmp_path / "out" / "report.html").is_file()
