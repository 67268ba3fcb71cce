"""User models of the forms real code has, through `deploykit export` from outside: a forward with optional or
keyword-only parameters, a torch.compile'd model, operators an exporter cannot write, a scripted module, a
factory with required arguments. Each exports, or exits 2 with one line saying what to do and writes nothing;
nothing torch prints reaches stdout or stderr past that line."""

from __future__ import annotations

import inspect
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

from deploykit.cli import cli
from tests.fixtures import user_models

FIXTURES = "tests.fixtures.user_models"
SHAPE = ["--input-shape", "1,3,32,32"]


def _export(factory: str, out: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["export", f"{FIXTURES}:{factory}", *SHAPE, "-o", str(out), "--no-simplify",
                                      *extra])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("factory", ["optional_arguments", "compiled_model"])
def test_a_forward_with_optional_arguments_and_a_compiled_model_export_with_one_input(factory: str,
                                                                                      tmp_path: Path) -> None:
    code, _, errors = _export(factory, tmp_path / "m.onnx")
    assert code == 0, errors
    assert [i.name for i in onnx.load(str(tmp_path / "m.onnx")).graph.input] == ["input"]


@pytest.mark.parametrize(("factory", "extra", "says"), [
    ("keyword_argument", (), "needs keyword argument return_aux"),
    ("spectral_model", (), "try --exporter dynamo"),
    ("svd_model", ("--exporter", "dynamo"), "ONNX has no equivalent of this operator"),
    ("scripted_model", (), "return the torch.nn.Module from before scripting"),
    ("factory_with_required", (), "--set NAME=VALUE"),
    ("autocast_model", (), "computes in bfloat16 where the ONNX operator takes no such type"),
    ("random_forward", (), "gives different outputs for the same input in PyTorch itself"),
    ("model_and_transform", (), "returned a tuple (TinySegmenter, function), not a torch.nn.Module; return the "
                                "model alone"),
    ("count_alongside", (), "output output_1 is an int; expected tensors in a tensor, tuple, list, dict or "
                            "dataclass; the exported graph gives tensors only: return the tensors alone"),
    ("meta_model", (), "stem.0.weight is on the meta device"),
])
def test_what_cannot_export_is_one_line_saying_what_to_do(factory: str, extra: tuple[str, ...], says: str,
                                                          tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, output, errors = _export(factory, tmp_path / "m.onnx", *extra, "--json")
    native = capfd.readouterr()  # what torch wrote to the file descriptors themselves, past sys.stdout/stderr
    assert code == 2 and not (tmp_path / "m.onnx").exists()
    error = json.loads(output)["error"]
    assert says in error and "\n" not in error and errors.strip().splitlines()[-1] == f"deploykit: error: {error}"
    assert "graph(" not in native.out + native.err and "Traceback" not in errors


def test_an_operator_the_torchscript_exporter_lacks_exports_with_dynamo(tmp_path: Path) -> None:
    code, _, errors = _export("spectral_model", tmp_path / "m.onnx", "--exporter", "dynamo")
    assert code == 0, errors


def _branch_line() -> str:
    lines, start = inspect.getsourcelines(user_models.ValueBranch)
    return f"user_models.py:{start + next(i for i, line in enumerate(lines) if 'the line a user must see' in line)}"


@pytest.mark.parametrize(("command", "exit_code"), [("export", 1), ("export --exporter dynamo", 2), ("deploy", 1)])
def test_a_branch_on_a_tensors_value_is_named_by_its_line(command: str, exit_code: int, tmp_path: Path) -> None:
    """The trace keeps the branch its input took, so the second verification input disagrees (a check that
    failed, exit 1, in export and deploy alike); the dynamo exporter refuses the branch itself (exit 2)."""
    out = tmp_path / "out"
    target = ["--out", str(out), "--precisions", "fp32"] if command == "deploy" else ["-o", str(out)]
    result = CliRunner().invoke(cli, [*command.split(), f"{FIXTURES}:value_branch", *SHAPE, *target])
    assert result.exit_code == exit_code, result.output
    assert _branch_line() in result.stderr.strip().splitlines()[-1] and not out.exists()


def _line(cls: type, fragment: str = "the line a user must see") -> str:
    lines, start = inspect.getsourcelines(cls)
    return f"user_models.py:{start + next(i for i, line in enumerate(lines) if fragment in line)}"


@pytest.mark.parametrize("factory", ["interrupting_model", "interrupting_factory"])
def test_a_keyboard_interrupt_the_users_code_raises_is_theirs(factory: str, tmp_path: Path) -> None:
    code, _, errors = _export(factory, tmp_path / "m.onnx")
    where = _line(user_models.InterruptingModel) if factory == "interrupting_model" else \
        _line(user_models.interrupting_factory)  # type: ignore[arg-type]
    assert code == 2 and "raised KeyboardInterrupt" in errors and where in errors, errors


def test_ctrl_c_during_the_users_forward_is_still_an_interrupt(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "deploykit", "export", f"{FIXTURES}:waiting_model", *SHAPE, "-o",
         str(tmp_path / "m.onnx")], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the forward has started: the signal arrives inside the user's code
        if "forward started" in line:
            break
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130 and "interrupted" in rest and not (tmp_path / "m.onnx").exists()


def test_global_torch_settings_a_factory_makes_do_not_leak_into_the_export(tmp_path: Path) -> None:
    """A float64 default dtype left set made deploykit's float32 sample input float64, which the exporter fed to
    the model's float32 copy (exit 2, "Input type (double) and bias type (float) should be the same")."""
    before = (torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(),
              torch.are_deterministic_algorithms_enabled())
    try:
        code, _, errors = _export("sets_global_state", tmp_path / "m.onnx")
        after = (torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(),
                 torch.are_deterministic_algorithms_enabled())
    finally:
        torch.set_default_dtype(before[0])
        torch.set_grad_enabled(before[1])
        torch.set_num_threads(before[2])
        torch.use_deterministic_algorithms(before[3])
    assert code == 0, errors
    assert after == before


def test_a_model_left_in_training_mode_is_exported_in_eval_mode_and_export_says_so(tmp_path: Path) -> None:
    code, _, errors = _export("left_in_training_mode", tmp_path / "m.onnx")
    assert code == 0, errors
    assert "was in training mode: exported and verified in eval mode" in errors and "BatchNorm2d" in errors
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        expected = user_models.left_in_training_mode().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)


def test_a_thread_the_factory_leaves_running_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """Python waits for every non-daemon thread at exit: the export finished, then the process hung."""
    done = subprocess.run([sys.executable, "-m", "deploykit", "export", f"{FIXTURES}:starts_a_thread", *SHAPE, "-o",
                           str(tmp_path / "m.onnx"), "--no-simplify"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "not waiting for 1 thread the model's code started and left running (prefetch)" in done.stderr
    assert (tmp_path / "m.onnx").exists()
