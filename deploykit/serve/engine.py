"""The serving engine: the Triton Inference Server binary that nvidia-pytriton bundles (Triton 2.51 with its
Python backend), run on its own. PyTriton's Python proxy is not used (it fails on Python 3.11.7, its issue #51);
the server reads a model repository deploykit stages, whose artifact models are Python-backend models wrapping
deploykit's Runner (deploykit/serve/triton_runner.py).

What running the bundled server needs, and this module provides: the wheel's shared libraries and this
Python's shared libpython on LD_LIBRARY_PATH; a backend directory holding the Python backend with the stub for
this Python version; numpy < 2 (the bundled stub reads and writes tensors through numpy's 1.x C layout: with
numpy 2 it returns wrong values without an error, which is why nvidia-pytriton pins numpy < 2).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import BackendUnavailable, DeployKitError

INSTALL = "pip install 'deploykit[serve]'"


@dataclass(frozen=True)
class TritonBundle:
    binary: Path
    libraries: Path  # the wheel's shared libraries (libtritonserver, ...)
    python_backend: Path  # libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python version

    def stage_backends(self, folder: Path) -> Path:
        """A backend directory with the Python backend and this Python's stub; returns it."""
        python = folder / "backends" / "python"
        python.mkdir(parents=True)
        for item in self.python_backend.iterdir():
            if item.is_file():
                shutil.copyfile(item, python / item.name)
        shutil.copy2(self.stub, python / self.stub.name)  # copy2 keeps the executable bit
        return python.parent


def find_bundle() -> TritonBundle:
    """The bundled server, or a clear error naming what to install."""
    spec = importlib.util.find_spec("pytriton")  # located, not imported: its proxy needs packages we skip
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"deploykit serve runs the Triton server that nvidia-pytriton bundles: {INSTALL}")
    root = Path(next(iter(spec.submodule_search_locations)))
    server = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bundle = TritonBundle(binary=server / "bin" / "tritonserver", libraries=root.parent / "nvidia_pytriton.libs",
                          python_backend=server / "backends" / "python",
                          stub=server / "python_backend_stubs" / version / "triton_python_backend_stub")
    missing = [str(p) for p in (bundle.binary, bundle.libraries, bundle.python_backend, bundle.stub) if not p.exists()]
    if missing:
        raise BackendUnavailable(f"nvidia-pytriton at {root} lacks {', '.join(missing)} (no server for Python "
                                 f"{version}?); reinstall it: {INSTALL}")
    return bundle


def check_runtime() -> Path:
    """What the Python backend stub needs from this interpreter; returns the folder of its shared libpython."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise BackendUnavailable(f"the Python backend bundled with nvidia-pytriton needs numpy < 2 (with numpy "
                                 f"{np.__version__} it reads tensors wrongly); pip install 'numpy<2' ({INSTALL} "
                                 "pins it)")
    libdir = Path(str(sysconfig.get_config_var("LIBDIR") or ""))
    library = str(sysconfig.get_config_var("LDLIBRARY") or "")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not (libdir / library).exists():
        raise BackendUnavailable(f"Triton's Python backend loads libpython{sys.version_info.major}."
                                 f"{sys.version_info.minor} as a shared library, and this Python ({sys.executable}) "
                                 "has none: use a Python built with --enable-shared (pyenv: "
                                 "PYTHON_CONFIGURE_OPTS=--enable-shared; Debian/Ubuntu's python3 has it)")
    return libdir


def address(host: str, port: int) -> str:
    """host:port as URLs and gRPC write it: an IPv6 address in brackets ([::1]:8000)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = None  # None: no gRPC endpoint
    drain_s: int = 8  # in-flight requests get this long after SIGTERM
    ready_timeout_s: float = 120.0
    unload_s: int = 15  # after the drain, Triton's time to unload its models

    @property
    def exit_timeout_s(self) -> int:
        """Triton's --exit-timeout-secs (an int32): the drain, then the time to unload its models. Its timeout
        covers both: the Python-backend stubs take about 3 s to stop (2 idle cores), and with the timeout at
        --drain 1-3 Triton exited 1 with nothing in flight, which serve reported as requests cut off."""
        return min(self.drain_s + self.unload_s, 2**31 - 1)


_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+ +\d+ [^\]]*\] ")  # Triton's errors: E<MMDD> <time> <tid> <file:line>]
# Errors every start without a GPU logs (an ensemble's CUDA stream too): they crowded out the failure in a message
_NO_GPU = re.compile(r"CudaDriverHelper has not been initialized\.|unable to create stream for .*: CUDA driver "
                     r"version is insufficient for CUDA runtime version")


class ServerProcess:
    """A running tritonserver; `stop()` sends SIGTERM (Triton drains in-flight requests) and waits."""

    def __init__(self, process: subprocess.Popen[bytes], settings: ServerSettings, log: Path) -> None:
        self.process, self.settings, self.log = process, settings, log
        self.stubs: dict[int, str] = {}  # its models' Python stubs once ready (stubs())

    @property
    def url(self) -> str:
        return f"http://{address(self.settings.host, self.settings.http_port)}"

    def ended(self) -> str:
        """How the server process ended, for a message: its status, and the signal that killed it."""
        status = self.process.returncode
        if status is not None and status < 0:
            name = signal.Signals(-status).name if -status in signal.valid_signals() else f"signal {-status}"
            oom = " (the kernel's OOM killer sends it when memory runs out)" if -status == signal.SIGKILL else ""
            return f"was killed by {name}{oom}"
        return f"exited with status {status}"

    def log_tail(self, lines: int = 15) -> str:
        """Triton's error lines (what failed and why: a model's Python stub that cannot import, say), each to its
        first line; else the log's last lines. The last lines alone were the shutdown after the failure."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        errors = _errors(text)
        if errors:
            return "\n".join(errors[:lines])
        return "\n".join(line for line in text[-lines:] if not line.startswith(("|", "+")))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DeployKitError(f"the Triton server {self.ended()} while loading the models:\n"
                                     f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        self.stubs = stubs(self.process.pid)
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise DeployKitError(f"the Triton server was not ready after {self.settings.ready_timeout_s:g} s:\n"
                             f"{self.log_tail()}")

    def failure(self) -> str | None:
        """What ended while serving, for a message, or None: the server, or one of its models' Python stubs. Triton
        neither restarts a stub that died (killed, out of memory, a crash in a runtime) nor stops being ready: it
        answered each request to that model with 500 "Stub process 'seg_0_0' is not healthy" for good, and at
        SIGTERM waited its whole exit timeout for the model to unload."""
        if self.process.poll() is not None:
            ended = f"the Triton server {self.ended()} while serving; start serve again"
        elif dead := sorted({model for pid, model in self.stubs.items() if not _alive(pid)}):
            ended = (f"the Python stub of model {', '.join(dead)} ended while serving (killed, out of memory, or a "
                     "crash in it), and Triton does not restart it: serve stops; start it again (a supervisor "
                     "restarting `deploykit serve` does)")
        else:
            return None
        said = ""
        with contextlib.suppress(OSError):  # its errors, if it logged any: its last lines said "Started HTTPService"
            said = "\n".join(_errors(self.log.read_text(encoding="utf-8", errors="replace").splitlines())[:15])
        return ended + (f". Triton's errors:\n{said}" if said else "")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.settings.exit_timeout_s + 1)  # Triton gives up after that itself
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Triton's python-backend stubs (the image steps) run in its session and outlive a server that was
        # killed or crashed, re-parented to init: end whatever of the session is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def _errors(log: list[str]) -> list[str]:
    """Triton's error lines in `log`, each once and to its first line, but those every start without a GPU logs."""
    return [error for error in dict.fromkeys(_ERROR_LINE.sub("", line).split("\\n")[0].strip('" ')
                                             for line in log if _ERROR_LINE.match(line))
            if not _NO_GPU.fullmatch(error)]


def stubs(server: int) -> dict[int, str]:
    """The model each Python-backend stub of the Triton server `server` runs, by process id: a stub's command line
    names its model.py (models/NAME/VERSION/model.py). Empty where /proc does not list children."""
    found = {}
    for children in Path(f"/proc/{server}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # a thread or child that ended meanwhile
            for pid in children.read_text().split():
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if len(argv) > 1 and argv[0].endswith(b"triton_python_backend_stub"):
                    found[int(pid)] = Path(os.fsdecode(argv[1])).parent.parent.name
    return found


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie no longer does)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _end_with_parent(parent: int) -> Callable[[], None]:
    """What Triton's process runs before exec: the kernel kills it when deploykit dies, even by SIGKILL
    (its Python stubs exit when it does); without this, a killed `serve` left the server and its stubs running
    for good, on ports no one used."""
    def arrange() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # deploykit died before the line above took effect
            os._exit(1)
    return arrange


SHARED_MEMORY = Path("/dev/shm")  # where Linux keeps shm_open's regions, each a file
_REGION_OWNER = re.compile(r"deploykit-(\d+)-")  # region_prefix(): the serve process that owns a region


def region_prefix(owner: int) -> str:
    """The names of the Python backend's shared-memory regions of the server that process `owner` (a serve) runs
    begin with this. Triton, or its stubs after it, remove them on the way out; a serve killed outright with its
    server and stubs (the OOM killer, a container's or unit's SIGKILL) left them in RAM for good, nobody's."""
    return f"deploykit-{owner}-"


def remove_orphan_regions(folder: Path = SHARED_MEMORY) -> None:
    """Remove the shared-memory regions whose owner (region_prefix) no longer runs; never those of a serve that
    runs, nor regions deploykit did not name (another user's Triton)."""
    for region in folder.glob("deploykit-*"):
        owner = _REGION_OWNER.match(region.name)
        if owner and not _alive(int(owner.group(1))):
            with contextlib.suppress(OSError):  # removed meanwhile by another serve starting
                region.unlink()


def start_server(repository: Path, workdir: Path, settings: ServerSettings) -> ServerProcess:
    """Start the bundled tritonserver on `repository`; logs go to workdir/server.log."""
    bundle = find_bundle()
    libpython = check_runtime()
    remove_orphan_regions()
    backends = bundle.stage_backends(workdir)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(bundle.libraries), str(libpython), env.get("LD_LIBRARY_PATH", "")) if p)
    # The stub embeds Python without a program path: it finds `python3` on PATH and takes that interpreter's
    # prefix and site-packages (it ignores PYTHONPATH). This interpreter first, so that the models see this
    # environment's packages (a venv's: deploykit, numpy < 2, the runtimes), not the base installation's.
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    grpc = (["--allow-grpc", "true", "--grpc-address", settings.host, "--grpc-port", str(settings.grpc_port)]
            if settings.grpc_port else ["--allow-grpc", "false"])
    command = [str(bundle.binary), "--model-repository", str(repository), "--backend-directory", str(backends),
               "--http-address", settings.host, "--http-port", str(settings.http_port), *grpc,
               "--allow-metrics", "false", "--exit-timeout-secs", str(settings.exit_timeout_s),
               "--strict-readiness", "true", "--disable-auto-complete-config", "--exit-on-error", "true",
               f"--backend-config=python,shm-region-prefix-name={region_prefix(os.getpid())}"]
    log = workdir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True,  # our Ctrl-C reaches it through stop(), once
                                   preexec_fn=_end_with_parent(os.getpid()))
    return ServerProcess(process, settings, log)
