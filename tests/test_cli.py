"""CLI behaviour for good and bad input: exit codes, one-line messages, no tracebacks, no half-written files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import onnx
import pytest
import torch
from click.testing import CliRunner

from deploykit.cli import COMMANDS, cli
from deploykit.io.metadata import read_metadata

USER = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    from tests.fixtures.user_models import tiny_segmenter

    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny_segmenter().state_dict()}, path)
    return path


def _assert_one_line_error(result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_help_lists_every_command_with_an_example(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name}" in result.output
        assert cli.get_command(click.Context(cli), name) is not None, name
    assert result.output.count("e.g. deploykit ") == len(COMMANDS)


def test_export_user_model_end_to_end(runner: CliRunner, tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "m.onnx"
    result = runner.invoke(cli, ["export", USER, "--weights", str(checkpoint), "--input-shape", "1,3,64,64",
                                 "--set", "num_classes=3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "cosine" in result.output
    model = onnx.load(str(out))
    meta = read_metadata(model)
    assert meta is not None and meta.model == USER and meta.options == {"num_classes": 3}
    assert meta.weights.startswith("tiny.pth sha256:")
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2] == "height" and dims[3] == "width"


def test_export_static(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "s.onnx"
    result = runner.invoke(cli, ["export", USER, "--input-shape", "2,3,48,40", "--static", "-o", str(out)])
    assert result.exit_code == 0, result.output
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 48, 40]


def test_unknown_model(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", "resnet9000", "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "unknown model 'resnet9000'")


def test_unimportable_factory(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", "no_such_pkg.mod:factory", "--input-shape", "1,3,32,32",
                                 "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "cannot import 'no_such_pkg.mod'")


def test_factory_returning_non_module(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", "tests.fixtures.user_models:not_a_module", "--input-shape",
                                 "1,3,32,32", "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "not a torch.nn.Module")


def test_unreadable_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "x.onnx"
    result = runner.invoke(cli, ["export", USER, "--weights", str(bad), "--input-shape", "1,3,32,32", "-o", str(out)])
    _assert_one_line_error(result, "cannot read checkpoint")
    assert not out.exists()


def test_missing_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", USER, "--weights", str(tmp_path / "none.pth"), "--input-shape",
                                 "1,3,32,32", "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "does not exist")


def test_checkpoint_that_does_not_fit(runner: CliRunner, tmp_path: Path, checkpoint: Path) -> None:
    result = runner.invoke(cli, ["export", USER, "--weights", str(checkpoint), "--set", "width=16",
                                 "--input-shape", "1,3,32,32", "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "wrongly shaped: ")
    assert "stem.0.weight (checkpoint [8, 3, 3, 3], model [16, 3, 3, 3])" in result.output


@pytest.mark.parametrize("shape", ["1,3,64", "1,3,a,64", "1x3x0x64", "-1,3,64,64"])
def test_bad_input_shape(runner: CliRunner, tmp_path: Path, shape: str) -> None:
    result = runner.invoke(cli, ["export", USER, "--input-shape", shape, "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "N,C,H,W")


def test_unknown_option(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", USER, "--set", "depth=3", "--input-shape", "1,3,32,32",
                                 "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "rejected options")


def test_set_needs_key_value(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", USER, "--set", "width", "--input-shape", "1,3,32,32",
                                 "-o", str(tmp_path / "x.onnx")])
    _assert_one_line_error(result, "KEY=VALUE")


def test_unwritable_output_folder(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["export", USER, "--input-shape", "1,3,32,32",
                                 "-o", str(tmp_path / "missing" / "x.onnx")])
    _assert_one_line_error(result, "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write read-only folders")
def test_read_only_output_folder(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    result = runner.invoke(cli, ["export", USER, "--input-shape", "1,3,32,32", "-o", str(folder / "x.onnx")])
    _assert_one_line_error(result, "not writable")


def test_existing_output_needs_force(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    out.write_bytes(b"keep me")
    args = ["export", USER, "--input-shape", "1,3,32,32", "-o", str(out)]
    result = runner.invoke(cli, args)
    _assert_one_line_error(result, "--force")
    assert out.read_bytes() == b"keep me"
    assert runner.invoke(cli, [*args, "--force"]).exit_code == 0
    assert onnx.load(str(out)).graph.node


def test_unexpected_exception_exits_3_and_debug_shows_traceback(runner: CliRunner, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import deploykit.commands.doctor

    def boom() -> None:
        raise ZeroDivisionError("kaput")

    monkeypatch.setattr(deploykit.commands.doctor, "probe_machine", boom)
    result = runner.invoke(cli, ["doctor"])
    assert result.exit_code == 3
    assert "rerun with --debug" in result.output and "Traceback" not in result.output
    debug = runner.invoke(cli, ["--debug", "doctor"])
    assert isinstance(debug.exception, ZeroDivisionError)


@pytest.mark.parametrize("package, command", [("onnxruntime", "doctor"), ("torch", "lint"), ("onnx", "bench")])
def test_a_dependency_that_cannot_be_imported_is_named_not_called_a_bug(tmp_path: Path, package: str,
                                                                       command: str) -> None:
    """A broken environment (a package deploykit needs missing, or a wheel without its library) is the user's to
    repair: one line naming the package and exit status 2, not "a bug in deploykit" (it was exit 3)."""
    blocked = f"import sys; sys.modules[{package!r}] = None; from deploykit.cli import main; main()"
    args = {"doctor": ["doctor", "--json"], "lint": ["lint", str(tmp_path / "m.onnx")], "bench": ["bench", "kernels"]}
    done = subprocess.run([sys.executable, "-c", blocked, *args[command]], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"deploykit: error: {package} cannot be imported") and "a bug" not in lines[0]


def test_deploykit_s_own_failed_import_is_still_a_bug() -> None:
    from deploykit.errors import broken_dependency

    assert broken_dependency(ImportError("cannot import name 'x'", name="deploykit.graph")) is None
    assert broken_dependency(ModuleNotFoundError("No module named 'torch'", name="torch.cuda")) == "torch"
    assert broken_dependency(ValueError("torch")) is None


def test_doctor_json(runner: CliRunner) -> None:
    import json

    result = runner.invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "CPUExecutionProvider" in data["onnxruntime_providers"]
    assert data["backends"]["tensorrt"]["state"] in {"not installed", "unusable", "ready"}
    assert data["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert data["cores"] >= 1


def test_saved_builder_options_apply_whichever_format_matches() -> None:
    from deploykit.zoo.sources import load_model

    loaded = load_model("msinet", weights="benchmarks/checkpoints/msinet_small.pt")
    assert loaded.options == {"width": 0.125} and loaded.load_report is not None
    assert loaded.load_report.left_random == ()


@pytest.mark.parametrize(("args", "named"), [
    (["bench", "--compare"], "deploykit bench run"),  # `bench TARGET...` is `bench run TARGET...`
    (["--debug", "bench", "run", "--model"], "deploykit bench run"),
    (["bench", "kernels", "--nope"], "deploykit bench kernels"),
    (["doctor", "--evidence"], "deploykit doctor"),
    (["--nope"], "deploykit"),
])
def test_a_usage_error_points_at_the_help_of_the_command_it_is_about(args: list[str], named: str) -> None:
    result = CliRunner().invoke(cli, args, prog_name="deploykit")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("deploykit: error: ") and f"see `{named} --help`" in result.stderr, result.stderr
