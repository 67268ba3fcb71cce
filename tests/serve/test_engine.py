"""The serving engine's preconditions fail with what to install, before anything starts."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.errors import BackendUnavailable, CheckFailed
from deploykit.serve import engine


def test_without_the_serve_extra_the_message_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"deploykit\[serve\]"):
        engine.find_bundle()
    result = CliRunner().invoke(cli, ["serve", "model.onnx"])
    assert result.exit_code == 2 and "deploykit[serve]" in result.output


def test_numpy_2_is_refused_before_the_stub_reads_wrong_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(BackendUnavailable, match="numpy < 2"):
        engine.check_runtime()


def test_a_python_without_a_shared_libpython_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "__version__", "1.26.4")
    real = sysconfig.get_config_var

    def static(name: str) -> Any:
        return 0 if name == "Py_ENABLE_SHARED" else real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", static)
    with pytest.raises(BackendUnavailable, match="enable-shared"):
        engine.check_runtime()


class _Front:
    def __init__(self, drained: bool) -> None:
        self.drained = drained

    def stop(self) -> bool:
        return self.drained


@pytest.mark.parametrize(("drained", "status_on_sigterm", "said"), [
    (True, 0, None),
    (False, 0, "cut off; give a longer --drain"),
    (False, 1, "cut off; give a longer --drain"),
    (True, 1, "exited with status 1 while stopping, with no request in flight")])
def test_a_drain_that_runs_out_is_a_failed_check_and_a_failing_triton_is_not_blamed_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drained: bool, status_on_sigterm: int,
        said: str | None) -> None:
    """Requests the fronts' drain cut off are a failed check (exit status 1), not a clean exit. Triton gets SIGTERM
    once the fronts have drained: when it then fails (a model whose Python stub died does not unload, and Triton
    exits 1 at its exit timeout), no request was in flight, and serve said "did not drain within --drain ... give a
    longer --drain". A stand-in process exits as Triton would on SIGTERM; a stand-in front says whether it
    drained."""
    from deploykit.errors import DeployKitError
    from deploykit.serve.server import Serving, run_until_signal

    stand_in = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                                 f"lambda *_: sys.exit({status_on_sigterm})); print(flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    assert stand_in.stdout is not None and stand_in.stdout.readline()  # its handler is in place
    (tmp_path / "log").write_text('E1206 19:23:50.448563 1159 main.cc:535] "failed to stop server: Internal - Exit '
                                  'timeout expired. Exiting immediately."\n')
    serving = Serving(engine.ServerProcess(stand_in, engine.ServerSettings(drain_s=1), tmp_path / "log"), [],
                      tmp_path / "work", (_Front(drained),))
    real_signal = signal.signal
    sent: list[int] = []

    def signalled_at_once(signum: int, handler: Any) -> Any:  # the user's SIGTERM, as soon as serve listens
        previous = real_signal(signum, handler)
        if signum == signal.SIGTERM and callable(handler) and not sent:  # not again as serve restores the old one
            sent.append(signum)
            handler(signum, None)
        return previous

    monkeypatch.setattr(signal, "signal", signalled_at_once)
    if said is None:
        assert run_until_signal(serving) == 0
    else:
        with pytest.raises(CheckFailed if not drained else DeployKitError) as raised:
            run_until_signal(serving)
        assert said in str(raised.value)
        assert drained is ("--drain" not in str(raised.value))
        assert not drained or "Exit timeout expired" in str(raised.value)
    assert stand_in.poll() == status_on_sigterm


def test_stopping_a_server_that_will_not_stop_leaves_none_of_its_session_behind(tmp_path: Path) -> None:
    """Triton runs in a session of its own (start_new_session) with a python-backend stub per image step; a
    server killed after its drain ran out left those stubs running, re-parented to init. A stand-in that ignores
    SIGTERM and has a child stands for both."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import signal, subprocess, sys, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                                 "print(child.pid, flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, start_new_session=True)
    assert stand_in.stdout is not None
    child = int(stand_in.stdout.readline())
    engine.ServerProcess(stand_in, engine.ServerSettings(drain_s=0, unload_s=0), tmp_path / "log").stop()
    for _ in range(50):  # the child is gone once SIGKILL is delivered; a zombie until init reaps it
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        raise AssertionError("the server's child outlived stop()")


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children first found through /proc/PID/task/*/children)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        for task in Path(f"/proc/{pending.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            pending.extend(children - found)
            found |= children
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_serve_killed_outright_takes_triton_and_its_stubs_along_and_the_next_run_removes_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL cannot be cleaned up after: Triton (in a session of its own) and its Python stubs kept running
    for good on ports no one used, and the staged repository stayed in $TMPDIR."""
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.io.outputs import scratch_folder
    from deploykit.zoo.sources import load_model
    from tests.serve.test_server import USER, start_server  # skips without the bundled server

    artifact = tmp_path / "seg.onnx"
    onnx_from_torch(load_model(USER, options={"num_classes": 2}), artifact, input_shape=(1, 3, 16, 16),
                    simplify=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    server = start_server([artifact])  # with its image steps: three Python stubs under Triton
    below = _descendants(server.process.pid)
    assert len(below) >= 2, below
    staged = [path for path in scratch.iterdir() if path.name.startswith("deploykit-serve-")]
    assert staged
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 20
    while not all(_gone(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in below if not _gone(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "Triton or its stubs outlived a killed serve"
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    with scratch_folder("deploykit-test-"):  # the next deploykit run in that $TMPDIR
        assert not any(path.exists() for path in staged), staged


@pytest.mark.parametrize(("kill", "says"), [(signal.SIGKILL, "was killed by SIGKILL (the kernel's OOM killer"),
                                            (signal.SIGSEGV, "was killed by SIGSEGV"), (None, "exited with status 3")])
def test_how_the_server_ended_is_said_in_words(kill: signal.Signals | None, says: str, tmp_path: Path) -> None:
    """A server that died while serving said only 'status -9'; the signal and its usual cause are named."""
    process = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0 if len(sys.argv) > 1 else 30);"
                                "sys.exit(3)", *(["now"] if kill is None else [])])
    if kill is not None:
        process.send_signal(kill)
    process.wait(timeout=30)
    assert engine.ServerProcess(process, engine.ServerSettings(), tmp_path / "log").ended().startswith(says)


def test_a_server_that_fails_to_load_says_triton_s_error_not_its_shutdown(tmp_path: Path) -> None:
    """The message quoted the log's last lines: Triton's unloading after the failure, not the failure (a
    Python stub's ModuleNotFoundError). Its error lines come first, each cut to its first line, without those
    every start without a GPU logs (an image ensemble's CUDA stream led serve's message at a failed stop)."""
    log = tmp_path / "log"
    stub = ("ModuleNotFoundError: No module named 'deploykit.io.std_streams'\\n\\nAt:\\n  /tmp/x/models/"
            "m_post/1/deploykit/io/images.py(24): <module>\\n")
    log.write_text(
        'E1206 14:16:59.173575 7761 server.cc:241] "CudaDriverHelper has not been initialized."\n'
        'E1206 14:16:59.980110 7761 ensemble_scheduler.cc:1551] "unable to create stream for m_image: CUDA driver '
        'version is insufficient for CUDA runtime version"\n'
        'I1206 14:17:00.180174 7761 model_lifecycle.cc:472] "loading: m_post:1"\n'
        f'E1206 14:17:00.574506 7761 backend_model.cc:692] "ERROR: Failed to create instance: {stub}"\n'
        f'E1206 14:17:00.574632 7761 model_lifecycle.cc:642] "failed to load \'m_post\' version 1: Internal: {stub}"\n'
        + 'I1206 14:17:04.055686 7761 server.cc:305] "Waiting for in-flight requests to complete."\n' * 20
        + "error: creating server: Internal - failed to load all models\n")
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(1)"])
    process.wait(timeout=30)
    said = engine.ServerProcess(process, engine.ServerSettings(), log).log_tail()
    assert said.splitlines() == [
        "ERROR: Failed to create instance: ModuleNotFoundError: No module named 'deploykit.io.std_streams'",
        "failed to load 'm_post' version 1: Internal: ModuleNotFoundError: No module named "
        "'deploykit.io.std_streams'"]


def test_a_server_killed_while_serving_is_named_without_its_startup_lines(tmp_path: Path) -> None:
    """Triton killed while serving (SIGKILL: the OOM killer) logs nothing: the message quoted its last lines,
    "Started GRPCInferenceService ..." and "Started HTTPService ...", which say nothing of the end."""
    from deploykit.errors import DeployKitError
    from deploykit.serve.server import Serving, run_until_signal

    log = tmp_path / "log"
    log.write_text('I1206 19:36:10.351539 12012 http_server.cc:4713] "Started HTTPService at 127.0.0.1:42261"\n')
    stand_in = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    serving = Serving(engine.ServerProcess(stand_in, engine.ServerSettings(drain_s=1), log), [], tmp_path / "work")
    with pytest.raises(DeployKitError) as raised:
        run_until_signal(serving)
    assert str(raised.value) == "the Triton server was killed by SIGKILL (the kernel's OOM killer sends it when " \
                                "memory runs out) while serving; start serve again"


def test_only_the_regions_of_serves_that_no_longer_run_are_removed(tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    names = {"gone": engine.region_prefix(ended.pid) + "1", "live": engine.region_prefix(os.getpid()) + "1",
             "foreign": "triton_python_backend_shm_region_1", "unnamed": "deploykit-x-1"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"")
    engine.remove_orphan_regions(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {names["live"], names["foreign"], names["unnamed"]}
