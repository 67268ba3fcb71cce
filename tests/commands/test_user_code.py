"""User code through every command that runs it (issue 18, item 6): whatever a user's forward raises,
SystemExit included, is exit 2 naming their file and line in export, parity, bench and deploy; a model that
changes its input in place runs in PyTorch on a copy, so the runtime compared or timed with it reads the
caller's array unchanged."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from deploykit.backends.torch import TorchRunner
from deploykit.cli import cli
from deploykit.errors import UserCodeError
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.zoo.sources import load_model
from tests.fixtures import user_models

FIXTURES = "tests.fixtures.user_models"
SHAPE = "1,3,32,32"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def exit_line() -> str:
    lines, start = inspect.getsourcelines(user_models.ExitingModel)
    return f"user_models.py:{start + next(i for i, line in enumerate(lines) if 'sys.exit(3)' in line)})"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user-code") / "tiny.onnx"
    assert onnx_from_torch(load_model(f"{FIXTURES}:tiny_segmenter"), path, input_shape=(1, 3, 32, 32),
                           simplify=False).passed
    return path


def _command(name: str, tiny_onnx: Path, out: Path) -> list[str]:
    model = f"{FIXTURES}:exiting_model"
    return {
        "export": ["export", model, "--input-shape", SHAPE, "-o", str(out / "m.onnx")],
        "parity": ["parity", model, str(tiny_onnx), "--random", "1", "--input-shape", SHAPE],
        "bench": ["bench", model, "--input-shape", SHAPE, "--iterations", "2", "--warmup", "0"],
        "deploy": ["deploy", model, "--input-shape", SHAPE, "--precisions", "fp32", "--out", str(out / "d")],
    }[name]


@pytest.mark.parametrize("command", ["export", "parity", "bench", "deploy"])
def test_sys_exit_in_a_forward_is_exit_2_with_the_users_line_in_every_command(command: str, tiny_onnx: Path,
                                                                              tmp_path: Path) -> None:
    result = invoke(*_command(command, tiny_onnx, tmp_path))
    assert result.exit_code == 2, (result.exit_code, result.output)
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("deploykit: error: your model tests.fixtures.user_models:exiting_model"), error
    assert "raised SystemExit: 3" in error and error.endswith(exit_line()), error
    assert "Traceback" not in result.output


def test_the_torch_runner_leaves_the_callers_array_unchanged() -> None:
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    before = feed["input"].copy()
    with TorchRunner(user_models.in_place_on_input()) as runner:
        first = runner.infer(feed)["output"]
        second = runner.infer(feed)["output"]
    np.testing.assert_array_equal(feed["input"], before)
    np.testing.assert_array_equal(first, second)  # the second call saw the same input as the first


def test_the_torch_runner_names_the_user_or_leaves_deploykits_own_errors_alone() -> None:
    feed = {"input": np.zeros((1, 3, 16, 16), np.float32)}
    with TorchRunner(user_models.exiting_model(), user_code="your model m:f") as runner, \
            pytest.raises(UserCodeError, match=r"^your model m:f \(on input 1x3x16x16\) raised SystemExit: 3"):
        runner.infer(feed)
    with TorchRunner(user_models.exiting_model()) as runner, pytest.raises(SystemExit):
        runner.infer(feed)  # no user_code: not labelled as the user's (deploykit's own models)


def test_an_in_place_model_passes_parity_against_its_export(tmp_path: Path) -> None:
    model = f"{FIXTURES}:in_place_on_input"
    exported = invoke("export", model, "--input-shape", SHAPE, "--no-simplify", "-o", str(tmp_path / "m.onnx"))
    assert exported.exit_code == 0, exported.output
    result = invoke("parity", model, str(tmp_path / "m.onnx"), "--random", "2", "--input-shape", SHAPE, "--json")
    assert result.exit_code == 0, result.output
    (candidate,) = json.loads(result.stdout)["candidates"]
    (output,) = candidate["outputs"]
    assert candidate["passed"] and output["metrics"]["max_abs"] < 1e-4


def test_an_in_place_model_benches_in_torch_and_onnx_runtime() -> None:
    result = invoke("bench", f"{FIXTURES}:in_place_on_input", "--backend", "torch", "--backend", "onnxruntime",
                    "--input-shape", SHAPE, "--iterations", "3", "--warmup", "0", "--no-roofline", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(r["backend"] for r in json.loads(result.stdout)["results"]) == ["onnxruntime", "torch"]
