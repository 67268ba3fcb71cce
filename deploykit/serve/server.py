"""`deploykit serve` as a library call: stage a Triton model repository for the artifacts, start the bundled
Triton server on it (deploykit.serve.engine), and run until SIGTERM or Ctrl-C (or SIGHUP, SIGQUIT: every signal
deploykit.io.signals handles), which drain in-flight requests.

The repository is the one `package --triton` writes (the image ensemble and its steps included), except that
each artifact's own model is a Python-backend model running deploykit's Runner (deploykit/serve/triton_runner.py)
instead of Triton's ONNX Runtime / OpenVINO / TensorRT backends, which only NVIDIA's container has.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Protocol

from deploykit.environment import available_memory, check_memory
from deploykit.errors import (
    CheckFailed,
    ConfigConflict,
    DeployKitError,
    InputError,
    optional_import,
)
from deploykit.io.outputs import scratch_folder
from deploykit.io.signals import deferred, listening, restore
from deploykit.package.repository import Packaged, RepositoryOptions, describe_artifacts, stage
from deploykit.package.triton import INT32_MAX, TritonModel
from deploykit.serve.engine import (
    INSTALL,
    ServerProcess,
    ServerSettings,
    address,
    check_runtime,
    find_bundle,
    start_server,
)
from deploykit.serve.execute import max_elements_of
from deploykit.serve.front import FrontLimits, HttpFront
from deploykit.serve.grpc_front import GrpcFront
from deploykit.types import Progress

RUNNER_MODEL = Path(__file__).with_name("triton_runner.py")


@dataclass(frozen=True)
class ServeOptions:
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"  # loopback unless asked otherwise
    port: int = 8000  # 0: any free port
    grpc_port: int | None = None  # Triton's gRPC endpoint too, when given
    max_batch_size: int = 8
    max_queue_delay_us: int = 500
    instances: int = 1
    threads: int | None = None  # each instance's intra-op threads (default: the backend's)
    images: bool = True
    max_image_mb: float = 32.0
    max_input_mb: float = 256.0  # per input tensor, as float32
    drain_s: int = 8

    def repository(self) -> RepositoryOptions:
        return RepositoryOptions(max_batch_size=self.max_batch_size, instances=self.instances,
                                 max_queue_delay_us=self.max_queue_delay_us, images=self.images,
                                 max_image_bytes=int(self.max_image_mb * 2**20))


class Front(Protocol):
    """What clients reach (deploykit/serve/front.py, grpc_front.py); Triton listens on private ports."""

    def stop(self) -> bool:
        """Stop listening, drain, close; whether no request was cut off."""


@dataclass
class Serving:
    process: ServerProcess
    packaged: list[Packaged]
    workdir: Path
    fronts: tuple[Front, ...] = ()
    front_url: str = ""
    grpc_address: str | None = None
    scratch: contextlib.ExitStack | None = None  # holds the workdir (a scratch folder: dropping it removes it)

    @property
    def url(self) -> str:
        return self.front_url or self.process.url

    def stop(self) -> Stopped:
        """Stop taking requests, drain in-flight ones, stop Triton; how each ended (Triton's errors read before its
        folder goes)."""
        try:
            drained = all([front.stop() for front in self.fronts])  # each one stopped
            status = self.process.stop()
            return Stopped(drained, status, self.process.ended(), self.process.log_tail() if status else "")
        finally:
            if self.scratch is not None:
                self.scratch.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class Stopped:
    """How serve's stop went. The fronts drain before Triton gets SIGTERM: once they have, no request is in
    flight, and a failing Triton failed for its own reason (a model that would not unload: its Python stub hung
    or dead), which serve reported as requests cut off, asking for a longer --drain."""

    drained: bool  # no request was cut off
    status: int  # Triton's exit status
    ended: str  # ServerProcess.ended()
    errors: str = ""  # Triton's errors (ServerProcess.log_tail), when it failed


def runner_model(model: TritonModel, options: ServeOptions) -> TritonModel:
    """The artifact's Triton model as a Python-backend model running its deploykit Runner."""
    settings = {"artifact": str(model.source.resolve()), "threads": options.threads,
                "max_elements": max_elements_of(options.max_input_mb)}
    return replace(model, platform="", backend="python", file_name="model.py", source=RUNNER_MODEL,
                   kind="KIND_CPU", companions=(), parameters=(("deploykit", json.dumps(settings)),))


def _free_port(host: str, port: int, flag: str = "--port") -> int:
    """`port` if it can be bound on `host` (IPv4 or IPv6; any free one for 0), else a clear error naming `flag`
    before the server starts."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host} is not an address of this machine ({exc}); give one such as 127.0.0.1, "
                         "0.0.0.0, ::1 or ::") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no clash
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {address(host, port)} ({exc.strerror}); choose another {flag} or "
                             "--host") from None
        return int(probe.getsockname()[1])


def _check_inputs_fit(max_input_mb: float) -> None:
    """A JSON request may declare an input of the largest size the front lets through, in 8-byte values, and
    Triton allocates it before any model runs: one beyond memory ends the server (a 200-byte request did)."""
    free = available_memory() or 0
    check_memory(8 * max_elements_of(max_input_mb), f"--max-input-mb {max_input_mb:g}",
                 f"that request would end the server; give --max-input-mb {max(1, free // 2 // 2**20)} or less",
                 "one request's input as 8-byte values, which Triton allocates before any model runs")


def start(artifacts: Sequence[str], options: ServeOptions, progress: Progress | None = None) -> Serving:
    """Serve `artifacts`; returns once every model is ready (or raises with the server's log)."""
    say = progress or (lambda _msg: None)
    if not (options.instances >= 1 and 1 <= options.drain_s <= INT32_MAX and options.max_input_mb > 0):
        raise ConfigConflict(f"serve needs --instances >= 1, --drain 1..{INT32_MAX} and --max-input-mb > 0")
    options.repository().check()
    _check_inputs_fit(options.max_input_mb)
    find_bundle()
    check_runtime()  # both fail with what to install before any artifact is opened
    models = [runner_model(m, options) for m in describe_artifacts(artifacts, options.names, options.max_batch_size)]
    # An IPv6 --host is the fronts' (aiohttp, grpcio) to listen on: Triton itself, which reads any address as an
    # IPv4 one (triton-inference-server/server#5305), only ever listens on private IPv4 loopback ports.
    if options.grpc_port and options.grpc_port == options.port:
        raise InputError(f"--port and --grpc-port are both {options.port}; HTTP and gRPC need a port each")
    port = _free_port(options.host, options.port)
    grpc = _free_port(options.host, options.grpc_port, "--grpc-port") if options.grpc_port is not None else None
    private = [_free_port("127.0.0.1", 0) for _ in range(2)]  # Triton's own ports: only the fronts talk to them
    with contextlib.ExitStack() as scratch:  # a deploykit killed outright leaves it; the next run removes it
        workdir = scratch.enter_context(scratch_folder("deploykit-serve-"))
        repository = workdir / "models"
        repository.mkdir()
        packaged = stage(models, repository, options.repository())
        settings = ServerSettings(http_port=private[0], grpc_port=private[1] if grpc is not None else None,
                                  drain_s=options.drain_s)
        private_grpc = f" and gRPC port {settings.grpc_port}" if settings.grpc_port is not None else ""
        say(f"starting Triton with {sum(len(p.names) for p in packaged)} models on private HTTP port "
            f"{settings.host}:{settings.http_port}{private_grpc}, behind deploykit's front on "
            f"{address(options.host, port)}")
        process = start_server(repository, workdir, settings)
        fronts: list[Front] = []
        try:
            process.wait_ready()
            _open_fronts(fronts, options, settings, port, grpc)
        except BaseException:  # not ready, or SIGINT/SIGTERM while it starts: it runs in its own session, so
            with deferred():  # only stop() ends it; a second signal must not cut that short
                for front in fronts:
                    front.stop()
                process.stop()
            raise
        owned = scratch.pop_all()  # from here the Serving owns the folder: its stop() removes it
    return Serving(process, packaged, workdir, tuple(fronts), f"http://{address(options.host, port)}",
                   address(options.host, grpc) if grpc is not None else None, owned)


def _open_fronts(fronts: list[Front], options: ServeOptions, settings: ServerSettings, port: int,
                 grpc: int | None) -> None:
    """deploykit's HTTP (and gRPC) front on the user's address, passing safe requests on to Triton's private
    ports; each is appended to `fronts` once listening."""
    max_elements = max_elements_of(options.max_input_mb)
    # A body may carry a largest tensor as INT64 or as JSON text (about 8 bytes a value), or a batch of images.
    largest = max(8 * 4 * max_elements, max(1, options.max_batch_size) * int(options.max_image_mb * 2**20))
    limits = FrontLimits(max_elements=max_elements, max_body_bytes=largest + 2**20)
    optional_import("aiohttp", "deploykit serve's HTTP front", INSTALL)  # the serve extra brings both
    if grpc is not None:
        optional_import("grpc", "deploykit serve's gRPC front", INSTALL, "grpcio")
    try:  # gRPC first: clients (and deploykit's own tests) take HTTP's health/ready as every endpoint listening
        if grpc is not None:
            remote = GrpcFront(f"{settings.host}:{settings.grpc_port}", limits, options.drain_s)
            remote.start(options.host, grpc)
            fronts.append(remote)
        http = HttpFront(f"http://{settings.host}:{settings.http_port}", limits, options.drain_s)
        http.start(options.host, port)
        fronts.append(http)
    except OSError as exc:
        raise InputError(f"cannot listen on {options.host} ({exc.strerror or exc}); choose another --port, "
                         "--grpc-port or --host") from None


def run_until_signal(serving: Serving, progress: Progress | None = None) -> int:
    """Block until a signal that ends deploykit (SIGTERM, SIGINT, SIGHUP, SIGQUIT: then drain and stop) or until
    the server dies; its exit status (0), or CheckFailed when in-flight requests outlived --drain and were cut off,
    or DeployKitError (with Triton's log) when Triton failed, serving or stopping."""
    say = progress or (lambda _msg: None)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = listening(request_stop)
    try:
        while not stop.wait(0.2):
            if failure := serving.process.failure():
                raise DeployKitError(failure)
        drain = serving.process.settings.drain_s
        say(f"stopping: draining in-flight requests (up to {drain} s)")
        stopped = serving.stop()
        if not stopped.drained:
            raise CheckFailed(f"requests still in flight when --drain {drain} s ran out were cut off; give a longer "
                              "--drain")
        if stopped.status != 0:
            raise DeployKitError(f"the Triton server {stopped.ended} while stopping, with no request in flight: "
                                 f"a model did not unload (its Python stub hung or died?); Triton's log:\n"
                                 f"{stopped.errors}")
        return 0
    finally:
        restore(previous)
        serving.stop()
