"""Exit status by meaning, the same in every command (issue 22, item 1): 0 done, 1 a check failed, 2 bad input,
3 a bug in deploykit, 130 / 143 after SIGINT / SIGTERM; --json output carries the same outcome.

Each row is a real command line; a bug (or an interrupt) is made by replacing the one library call the command
makes with one that raises. Every row runs with and without --json where the command has it.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.errors import OUTCOMES, Terminated
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.zoo.sources import load_model
from tests.graph import graphs

USER = "tests.fixtures.user_models:tiny_segmenter"
SHAPE = ("--input-shape", "1,3,64,64")
BY_STATUS = {o.exit_status: o.name for o in OUTCOMES.values()}
# The one library call each command makes, in its deploykit.commands module (replaced to raise in the bug and
# interrupt rows).
CALLS = {"doctor": "doctor.probe_machine", "models": "models.list_models", "export": "export.onnx_from_torch",
         "build-engine": "build.build_artifact", "parity": "parity.run_parity", "bench": "bench.run_bench",
         "deploy": "deploy.run_deploy", "lint": "lint.lint_onnx", "package": "package.write_repository"}
DEPLOY = ("deploy", USER, *SHAPE, "--out", "{t}/d", "--precisions", "fp32,fp16", "--calib-data", "{d}/calib.npz",
          "--bench-seconds", "0.01", "--threads", "1")


@dataclass(frozen=True)
class Row:
    id: str
    words: tuple[str, ...]  # {d}: the fixture folder, {t}: this row's own folder
    status: int
    raises: Callable[[str], BaseException] | None = None  # replace the command's library call with one raising this
    json: bool = True


def row(id: str, status: int, words: str, raises: Callable[[str], BaseException] | None = None,
        json: bool = True) -> Row:
    return Row(id, tuple(words.replace("{USER}", USER).split()), status, raises, json)


ROWS = [
    row("doctor-done", 0, "doctor"),
    row("models-done", 0, "models deeplabv3plus_mobilenetv2"),
    row("models-bad-input", 2, "models no_such_model"),
    row("export-done", 0, "export {USER} --input-shape 1,3,64,64 --no-simplify -o {t}/x.onnx"),
    row("export-check-failed", 1, "export tests.fixtures.outcome_models:noisy --input-shape 1,3,32,32 "
                                  "--no-simplify -o {t}/x.onnx"),
    row("export-bad-input", 2, "export {USER} --input-shape 1,3,64 -o {t}/x.onnx"),
    row("build-done", 0, "build-engine {d}/net.onnx --fp16 --no-calib-cache --calib-data {d}/calib.npz "
                         "-o {t}/x.fp16.ort.onnx"),
    row("build-check-failed-budget", 1, "build-engine {d}/net.onnx --int8 --calib-data {d}/calib.npz "
                                        "--no-calib-cache --accuracy-budget cosine>=0.99999999 --max-float 0 "
                                        "-o {t}/x.int8.ort.onnx"),
    row("build-bad-input", 2, "build-engine {d}/net.onnx --int8 -o {t}/x.onnx"),
    row("parity-done", 0, "parity {USER} {d}/net.onnx --random 1 --input-shape 1,3,64,64"),
    row("parity-check-failed", 1, "parity {USER} {d}/net.onnx --random 1 --input-shape 1,3,64,64 "
                                  "--gate cosine<0.5"),
    row("parity-bad-input", 2, "parity {USER} {t}/none.onnx"),
    row("bench-done", 0, "bench {d}/net.onnx --iterations 2 --no-roofline"),
    row("bench-bad-input", 2, "bench {d}/net.onnx --iterations 0"),
    row("lint-done", 0, "lint {d}/net.onnx"),
    row("lint-check-failed", 1, "lint {d}/crop_and_resize.onnx"),
    row("lint-bad-input", 2, "lint {t}/none.onnx"),
    row("package-done", 0, "package --triton {d}/net.onnx --out {t}/repo"),
    row("package-bad-input", 2, "package --triton {d}/net.onnx --out {t}/repo --instances 0"),
    row("parity-bad-input-impossible-gate", 2, "parity {USER} {d}/net.onnx --random 1 --input-shape 1,3,64,64 "
                                               "--gate cosine>1.5"),
    row("export-done-chatty-user-code", 0, "export tests.fixtures.chatty_module:chatty --input-shape 1,3,32,32 "
                                           "--no-simplify -o {t}/x.onnx"),
    row("export-bad-input-chatty-user-code", 2, "export tests.fixtures.chatty_module:chatty_raising "
                                                "--input-shape 1,3,32,32 -o {t}/x.onnx"),
    row("deploy-bad-input", 2, "deploy {USER} --out {t}/d --require int8 --precisions fp32"),
    *(row(f"{name}-bug", 3, words, RuntimeError) for name, words in [
        ("doctor", "doctor"), ("models", "models"), ("export", "export {USER} --input-shape 1,3,64,64 -o {t}/x.onnx"),
        ("build-engine", "build-engine {d}/net.onnx -o {t}/x.onnx"), ("parity", "parity {USER} {d}/net.onnx"),
        ("bench", "bench {d}/net.onnx"), ("deploy", "deploy {USER} --out {t}/d"), ("lint", "lint {d}/net.onnx"),
        ("package", "package --triton {d}/net.onnx --out {t}/repo")]),
    row("build-interrupted", 130, "build-engine {d}/net.onnx -o {t}/x.onnx", KeyboardInterrupt),
    row("deploy-terminated", 143, "deploy {USER} --out {t}/d", Terminated),
    row("parity-terminated", 143, "parity {USER} {d}/net.onnx", Terminated),
    row("export-hung-up", 129, "export {USER} --input-shape 1,3,64,64 -o {t}/x.onnx",
        partial(Terminated, signum=signal.SIGHUP)),
    row("bench-quit", 131, "bench {d}/net.onnx", partial(Terminated, signum=signal.SIGQUIT)),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    d = tmp_path_factory.mktemp("outcomes")
    assert onnx_from_torch(load_model(USER), d / "net.onnx", input_shape=(1, 3, 64, 64), simplify=False).passed
    onnx.save(graphs.resize(transform="tf_crop_and_resize"), d / "crop_and_resize.onnx")  # TensorRT refuses
    np.savez(d / "calib.npz", x=np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    return d


def test_the_table_covers_every_command_and_outcome() -> None:
    """Every command's done, bad-input and bug rows (deploy's done and check-failed run once, below, as they
    take seconds), and every outcome."""
    commands = {r.words[0] for r in ROWS}
    assert commands == set(CALLS)
    for name in CALLS:
        assert {0, 2, 3} <= {r.status for r in ROWS if r.words[0] == name} or name in ("doctor", "deploy")
    assert {r.status for r in ROWS} == set(BY_STATUS)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_exit_status_by_meaning(case: Row, as_json: bool, fixtures: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    if as_json and not case.json:
        pytest.skip("no --json")
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    if case.raises is not None:
        module, _, name = f"deploykit.commands.{CALLS[case.words[0]]}".rpartition(".")
        error = case.raises

        def broken(*_args: object, **_kwargs: object) -> None:
            raise error("made to fail by the outcome table")

        monkeypatch.setattr(f"{module}.{name}", broken)
    args = [w.format(d=fixtures, t=tmp_path) for w in case.words] + (["--json"] if as_json else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == case.status, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    problems = [line for line in result.stderr.splitlines()  # chatty_module: what a user's code prints
                if line.strip() and not line.startswith(("…", "warning:", "chatty_module:"))]
    if case.status == 0:
        assert not problems, problems
    else:
        assert len(problems) == 1, result.stderr
        prefix = {1: "deploykit: check failed: ", 3: "deploykit: unexpected RuntimeError"}.get(case.status)
        assert problems[0].startswith(prefix or "deploykit: "), problems[0]
        if case.status == 3:
            assert "rerun with --debug" in problems[0]
    if as_json:
        data = json.loads(result.stdout)
        assert (data["outcome"], data["exit_status"]) == (BY_STATUS[case.status], case.status), data


def test_deploy_json_carries_its_outcome(fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Done when the verdict ships (here FP32: FP16 computes alike on a CPU and is not faster), and a check failed
    when --require names a precision the verdict did not ship; the second run resumes the first."""
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    args = [w.format(d=fixtures, t=tmp_path) for w in DEPLOY]
    done = CliRunner().invoke(cli, [*args, "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert (data["outcome"], data["exit_status"]) == ("done", 0) and data["verdict"]["ship"]
    shipped = data["verdict"]["precision"]
    other = "fp16" if shipped == "fp32" else "fp32"
    required = CliRunner().invoke(cli, [*args, "--json", "--require", other])
    assert required.exit_code == 1, required.output
    assert json.loads(required.stdout)["outcome"] == "check-failed"
    problems = [line for line in required.stderr.splitlines() if not line.startswith(("…", "warning:"))]
    assert len(problems) == 1 and problems[0].startswith(f"deploykit: check failed: --require {other}: the "
                                                         f"verdict ships model.{shipped}"), problems


def test_a_deploy_that_ships_nothing_is_a_failed_check(tmp_path: Path) -> None:
    from deploykit.commands.deploy import _failed_check
    from deploykit.pipeline.verdict import Rejected, Verdict

    nothing = Verdict(ship=None, rejected=(Rejected("model.fp32.ort.onnx", "fp32", "fails parity: ..."),))
    assert _failed_check(nothing, None, tmp_path).startswith("nothing to ship: no artifact passes every parity gate")
    shipped = Verdict(ship="model.fp32.ort.onnx", precision="fp32")
    assert _failed_check(shipped, None, tmp_path) == "" and _failed_check(shipped, "fp32", tmp_path) == ""
    assert _failed_check(shipped, "int8", tmp_path).startswith("--require int8: the verdict ships model.fp32")
    in_name = Verdict(ship="model.int8.ort.onnx", precision="int8", caveat="in name only: no node runs in INT8")
    assert _failed_check(in_name, None, tmp_path) == ""
    assert _failed_check(in_name, "int8", tmp_path) == ("--require int8: the verdict ships model.int8.ort.onnx, in "
                                                        "name only: no node runs in INT8")


def test_help_documents_the_exit_statuses() -> None:
    text = CliRunner().invoke(cli, ["--help"]).output
    for outcome in OUTCOMES.values():
        assert f"{outcome.exit_status} {outcome.name}" in text
    # serve's stop by a signal is its normal end (README, serve), the one exception to 129 / 130 / 131 / 143
    assert "serve ends on SIGINT, SIGTERM, SIGHUP or SIGQUIT after draining" in " ".join(text.split())
