"""The one backend table, `BACKENDS`, and what a backend reports (Availability, Compiled).

The backend protocol: a backend is a folder deploykit/backends/<name>/ whose `backend` module (imported lazily,
only when the entry is used) defines
- `availability() -> Availability`: whether it can run here, and why not (probe what fails, not the import:
  TensorRT imports without a driver but cannot construct a builder);
- `Options`: its typed compile-options dataclass (or None when it takes none), made by the command with
  `Options.from_cli(**given)` from its option group `OPTIONS` (CliOption: the CLI knows no backend's options,
  each backend owns a group, as Polygraphy's argument groups);
- `preflight(model, source) -> None`: raise a DeployKitError on a graph it cannot compile, before a slow
  precision pass (a no-op for most); an `Options` class may add `check_model(model) -> None`, raising on options
  the model contradicts (TensorRT's profile shapes), which runs there too;
- `as_deployed(model, *, threads, optimize, float_source) -> ModelProto`: the graph as its artifact would compute
  it (its INT8 lowering, and with `optimize` its graph optimizations), which the accuracy-budget search scores;
- `compile(graph, out, options, *, precision, force, threads, progress, float_source) -> Compiled`: the precision
  graph to the artifact at `out` (atomically); deploykit.build writes the sidecar from what it returns, once.
  `precision` names the precision the graph computes in (deploykit.precision.table.detect_precision's answer);
  `float_source` is the float model the precision graph was made from (the ModelProto the build has loaded; None
  for an fp32 build): a lowering may re-derive weights from it rather than from INT8 codes;
- `open(artifact, sidecar, *, providers, threads) -> Runner`: a Runner for a built artifact (not yet entered).
plus ONE `Backend` entry in `BACKENDS` below (or, from another package, an entry point `deploykit.backends`
naming one: deploykit.plugins) with its static facts: among them the files that travel with
the artifact (`companions`: OpenVINO's .bin beside its .xml), which the build checks and cleans up and Triton
packaging copies; Triton's `platform` or, for a backend Triton serves through a backend rather than a platform,
`triton_backend`; and whether the artifact carries the model's metadata itself (`self_describing`: a bare file
opens without a sidecar and its Runner's `metadata()` answers); what differs in how a backend computes (the
ONNX Runtime optimizations it lacks, which the accuracy-budget search leaves out when it scores its graphs),
its lint target, the precisions the kernel sweep times on it. Nothing else names a backend: commands, deploy,
targets, bench, Triton packaging and doctor ask this table (tests/test_one_house.py greps for literals).
Availability is probed once per process (`Backend.availability`; TensorRT's probe constructs a builder).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploykit.errors import BackendUnavailable, ConfigConflict
from deploykit.io.model_files import external_data_files
from deploykit.io.sidecar import Sidecar, sidecar_path, verify_sidecar
from deploykit.plugins import with_plugins
from deploykit.runner import Runner

State = Literal["ready", "unusable", "not installed"]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here: state, its version when installed, and why not."""

    state: State
    version: str = ""
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def describe(self) -> str:
        line = self.state + (f" ({self.version})" if self.version else "")
        return line + (f": {self.reason}" if self.reason else "")

    def to_dict(self) -> dict[str, str]:
        return {"state": self.state, "version": self.version, "reason": self.reason}


@dataclass(frozen=True)
class Compiled:
    """What a backend's compile step reports for the sidecar."""

    backend_version: str
    device: Mapping[str, Any]
    build_options: Mapping[str, Any]
    artifact_sha256: str = ""  # "" when the caller should hash the artifact itself
    notes: tuple[str, ...] = ()  # what the build tells the user besides progress (TensorRT's precision audit)


@dataclass(frozen=True)
class CliOption:
    """One option of a backend's command-line group (its module's `OPTIONS`); deploykit.commands turns it into
    a click option and passes the given values to the backend's `Options.from_cli` under `dest`."""

    flag: str  # "--min-shape"
    dest: str  # the from_cli keyword
    help: str
    kind: Literal["text", "int", "float", "file", "flag", "choice"] = "text"
    multiple: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    low: float | None = None  # bounds of an int or float
    high: float | None = None
    low_open: bool = False  # the low bound itself is not allowed


@dataclass(frozen=True)
class Backend:
    """One backend's entry: its module (see the module docstring for what it defines) and static facts."""

    name: str
    module: str  # deploykit module implementing the protocol, imported lazily
    summary: str
    title: str  # how reports name it
    reference: bool = False  # PyTorch eager: what every other backend is compared with; compiles nothing
    suffix: str = ""  # artifact file name suffix, e.g. ".ort.onnx"
    suffixes: tuple[str, ...] = ()  # every suffix that marks a file as this backend's artifact
    runs_onnx: bool = False  # runs a plain .onnx file without a build
    device: Literal["cpu", "gpu"] = "cpu"
    triton_platform: str = ""  # Triton's platform name ("" = not servable by Triton, or see triton_backend)
    triton_backend: str = ""  # Triton's backend name, for a backend Triton names with `backend:` not `platform:`
    companions: tuple[str, ...] = ()  # suffixes of the files beside the artifact that belong to it (".bin")
    self_describing: bool = False  # a bare artifact (no sidecar) opens; its Runner's metadata() has the facts
    triton_file: str = ""  # the file name Triton expects in a model version folder
    triton_kind: str = "KIND_CPU"
    qdq_layout: str = "inputs+outputs"  # default INT8 Q/DQ placement; see deploykit.calib.qdq
    calib_method: str = "minmax"  # INT8 range method when --calib-method is not given (deploykit.calib.methods)
    lint_target: str = ""  # the deploykit.graph.lint target its precision graphs are checked against ("": none)
    # ONNX Runtime optimizers it does not apply: scoring its graphs (accuracy budgets) leaves them out
    scored_without: tuple[str, ...] = ()
    kernel_precisions: tuple[str, ...] = ()  # what `bench kernels` times on it (deploykit.bench.kernel_graphs)
    artifact: str = "artifact"  # what its artifact is called in messages ("engine")
    ready_note: str = "found ready"  # why auto chose it
    auto_rank: int = 0  # `--backend auto` takes the ready backend of highest rank (0: never chosen by auto)
    # bench choices this backend answers to -> the execution providers to ask for (ONNX Runtime's CUDA EP)
    bench_choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def runs_float16(self) -> bool:
        """Whether it computes float16 natively (a GPU: TensorRT); a CPU backend runs float16 graphs as float32
        kernels between casts, so FP16 is never faster there (deploy's default precisions, INT8's remainder)."""
        return self.device == "gpu"

    @property
    def servable(self) -> bool:
        """Whether Triton serves this backend's artifacts."""
        return bool(self.triton_platform or self.triton_backend)

    def files(self, artifact: str | Path) -> list[Path]:
        """The artifact and its companions: what is checked, cleaned up, copied and moved together."""
        path = Path(artifact)
        return [path, *(path.with_suffix(s) for s in self.companions)]

    def check_artifact_name(self, out: Path) -> None:
        """Refuse a file name that says another backend's artifact (x.plan for ONNX Runtime), and for a backend
        with companions (OpenVINO's .bin, named after the .xml) any suffix but its own: once a sidecar is lost or a
        file is handed on, the name is what tells the files apart."""
        name = out.name.lower()
        if any(name.endswith(s) for s in self.suffixes):  # suffixes may have two parts (".ort.onnx")
            return
        owned = [(s, b) for b in BACKENDS.values() for s in (*b.suffixes, *b.companions) if name.endswith(s)]
        if not owned and not self.companions:
            return
        suffix, owner = max(owned, key=lambda pair: len(pair[0])) if owned else (out.suffix, None)
        said = f", a suffix of {owner.title}'s files" if owner is not None else ""
        renamed = out.name[: len(out.name) - len(suffix)] + self.suffix
        raise ConfigConflict(f"{out.name} ends in '{suffix}'{said}; name the {self.title} {self.artifact} "
                             f"{renamed} (its suffixes: {', '.join(self.suffixes)})")

    def load(self) -> Any:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise BackendUnavailable(f"the {self.name} backend cannot be loaded here: {exc}") from exc

    def availability(self) -> Availability:
        """Probed once per process (forget_availability() starts over, for tests that swap a package)."""
        if self.name not in _PROBED:
            probe: Callable[[], Availability] = self.load().availability
            _PROBED[self.name] = probe()
        return _PROBED[self.name]

    def options_group(self) -> tuple[CliOption, ...]:
        """Its command-line options (none for a backend without Options)."""
        return tuple(getattr(self.load(), "OPTIONS", ()))

    def options_from_cli(self, given: Mapping[str, Any]) -> object | None:
        """Its typed Options from the values given on the command line (None when none was given)."""
        if not given:
            return None
        made: object = self.load().Options.from_cli(**given)
        return made

    def check_options(self, options: object | None) -> None:
        """Fail clearly when another backend's options are given to this one."""
        wanted = getattr(self.load(), "Options", None)
        if options is not None and (wanted is None or not isinstance(options, wanted)):
            raise ConfigConflict(f"{type(options).__name__} options do not apply to --backend {self.name}")

    def preflight(self, model: Any, source: str, options: object | None = None) -> None:
        module = self.load()
        module.preflight(model, source)
        wanted: Any = getattr(module, "Options", None)
        if options is None and hasattr(wanted, "check_model"):
            options = wanted()  # the defaults compile will use
        check_model = getattr(options, "check_model", None)
        if check_model is not None:
            check_model(model)

    def as_deployed(self, model: Any, *, threads: int | None, optimize: bool, float_source: Any = None) -> Any:
        return self.load().as_deployed(model, threads=threads, optimize=optimize, float_source=float_source)

    def compile(self, graph: Path, out: Path, options: object | None, *, precision: str, force: bool,
                threads: int | None, progress: Callable[[str], None], float_source: Any = None) -> Compiled:
        self.check_options(options)
        compiled: Compiled = self.load().compile(graph, out, options, precision=precision, force=force,
                                                 threads=threads, progress=progress, float_source=float_source)
        return compiled

    def open(self, artifact: Path, sidecar: Sidecar | None, *, providers: Sequence[str] = ("cpu",),
             threads: int | None = None) -> Runner:
        """A Runner for `artifact`; with a sidecar, after checking that it belongs to the artifact (one line
        naming what differs when it does not: the backend, the file kind, or the sha256 of a file)."""
        if sidecar is not None:
            verify_sidecar(artifact, sidecar, backend=self.name, suffixes=self.suffixes,
                           companions=dict(zip(self.companions, self.files(artifact)[1:], strict=True)))
        runner: Runner = self.load().open(artifact, sidecar, providers=providers, threads=threads)
        return runner


_PROBED: dict[str, Availability] = {}


def forget_availability() -> None:
    """Probe again on the next `availability()` (a test that installs or removes a package)."""
    _PROBED.clear()


BACKENDS: dict[str, Backend] = with_plugins("deploykit.backends", Backend, {
    backend.name: backend
    for backend in (
        Backend("torch", "deploykit.backends.torch", "PyTorch eager on CPU (the reference)", "PyTorch",
                reference=True, bench_choices={"torch": ()}, kernel_precisions=("fp32",)),
        Backend("onnxruntime", "deploykit.backends.onnxruntime.backend",
                "ONNX Runtime (CPU; CUDA/TensorRT EPs with onnxruntime-gpu)", "ONNX Runtime",
                suffix=".ort.onnx", suffixes=(".onnx", ".ort"), runs_onnx=True, triton_platform="onnxruntime_onnx",
                triton_file="model.onnx", qdq_layout="inputs+outputs", auto_rank=1, artifact="optimized model",
                bench_choices={"onnxruntime": ("cpu",), "onnxruntime-cuda": ("cuda",)},
                kernel_precisions=("fp32", "fp16", "int8", "int8u8")),
        Backend("tensorrt", "deploykit.backends.tensorrt.backend", "TensorRT engines on NVIDIA GPUs", "TensorRT",
                suffix=".plan", suffixes=(".plan", ".engine", ".trt"), device="gpu", triton_platform="tensorrt_plan",
                triton_file="model.plan", triton_kind="KIND_GPU", qdq_layout="inputs", auto_rank=2, artifact="engine",
                # ONNX Runtime's WeightBiasQuantization turns a float bias into INT32 with scale input_scale x
                # weight_scale; TensorRT keeps biases float, and with float16 scales the pass underflows (trained
                # DeepLabv3+, percentile ranges, FP16 remainder, 4 held-out images: pixel agreement 0.878 with
                # the pass, 0.944 without it or with no optimization at all)
                lint_target="tensorrt", scored_without=("WeightBiasQuantization",),
                # NVIDIA ModelOpt is the peer here, and an engine build takes minutes anyway: auto's candidates
                # cost 4.3 s on DeepLabv3+ at 513x513 (INT8 pass 6.7 -> 11.0 s), and in TensorRT form it keeps
                # minmax there and entropy on MSI-Net, each model's better (benchmarks/results/int8_recovery.md)
                calib_method="auto",
                ready_note="found a working builder", bench_choices={"tensorrt": ()},
                kernel_precisions=("fp32", "fp16", "int8")),
        Backend("openvino", "deploykit.backends.openvino.backend",
                "OpenVINO IR on its CPU plugin (pip install 'deploykit[openvino]')", "OpenVINO",
                suffix=".xml", suffixes=(".xml",), companions=(".bin",), triton_backend="openvino",
                triton_file="model.xml", qdq_layout="inputs+outputs", auto_rank=1, artifact="IR",
                self_describing=True, bench_choices={"openvino": ()}),
    )
})
REFERENCE = next(b for b in BACKENDS.values() if b.reference)
ONNX_RUNNER = next(b for b in BACKENDS.values() if b.runs_onnx)  # what runs a plain .onnx file
COMPILERS = tuple(name for name, b in BACKENDS.items() if not b.reference)  # what build-engine can target
BENCH_CHOICES = {choice: b for b in BACKENDS.values() for choice in b.bench_choices}
FILE_SUFFIXES = tuple(dict.fromkeys(s for b in BACKENDS.values() for s in b.suffixes))


def artifact_files(path: str | Path) -> list[Path]:
    """Every file that belongs with the model file or artifact at `path`: itself, its sidecar, the companions
    of the backend whose artifacts end like it (OpenVINO's .bin), an ONNX file's external data, and the graph
    its sidecar says it was compiled from. What no output may replace, and what travels with it."""
    file = Path(path)
    companions = [c for b in BACKENDS.values() if file.suffix.lower() in b.suffixes for c in b.files(file)[1:]]
    built_from: list[Path] = []
    if sidecar_path(file).is_file():
        try:
            recorded = json.loads(sidecar_path(file).read_text(encoding="utf-8")).get("build_options", {})
            graph = str(recorded.get("onnx_path") or "")
            built_from = [p for p in (file.parent / graph, Path(graph)) if graph and p.is_file()]
        except (OSError, ValueError, AttributeError):
            pass  # an unreadable sidecar is reported by whatever opens the artifact
    return list(dict.fromkeys([file, sidecar_path(file), *companions, *external_data_files(file), *built_from]))


def self_described(path: str | Path) -> Backend | None:
    """The backend whose self-describing artifacts end like `path` (a bare OpenVINO .xml), else None."""
    suffix = Path(path).suffix.lower()
    return next((b for b in BACKENDS.values() if b.self_describing and suffix in b.suffixes), None)


def availabilities() -> dict[str, Availability]:
    """Every backend's availability here; a backend whose module cannot be loaded is "not installed"."""
    found = {}
    for name, entry in BACKENDS.items():
        try:
            found[name] = entry.availability()
        except BackendUnavailable as exc:
            found[name] = Availability("not installed", reason=str(exc))
    return found


def backend_of(name: str, *, what: str = "backend") -> Backend:
    """The entry for `name`, or a clear error listing the known ones."""
    if name not in BACKENDS:
        raise ConfigConflict(f"unknown {what} {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def require_ready(entry: Backend) -> Availability:
    """Its availability, or BackendUnavailable saying what to build with instead."""
    state = entry.availability()
    if not state.ready:
        fallback = max((b for b in BACKENDS.values() if b.auto_rank and b.device == "cpu"), key=lambda b: b.auto_rank)
        raise BackendUnavailable(f"{entry.title} is {state.state} here ({state.reason}); build with "
                                 f"--backend {fallback.name}, or on a machine where {entry.title} is ready")
    return state


def resolve_backend(backend: str | None) -> tuple[Backend, str]:
    """(backend, one-line reason). "auto" (the default) takes the ready backend of highest `auto_rank`:
    TensorRT only where a builder can be constructed, else ONNX Runtime (the embedded default)."""
    chosen = backend or "auto"
    if chosen != "auto":
        if chosen not in COMPILERS:
            raise ConfigConflict(f"unknown backend {chosen!r}; choose one of auto, {', '.join(COMPILERS)}")
        entry = BACKENDS[chosen]
        return entry, f"{entry.title} {require_ready(entry).version} (asked for)".replace("  ", " ")
    passed: list[str] = []
    for entry in sorted((b for b in BACKENDS.values() if b.auto_rank), key=lambda b: -b.auto_rank):
        state = entry.availability()
        if state.ready:
            if not passed:
                return entry, f"{entry.title} {state.version} ({entry.ready_note})".replace("  ", " ")
            return entry, f"{entry.title}, the default here: {'; '.join(passed)}"
        passed.append(f"{entry.title} is {state.state} ({state.reason})")
    raise BackendUnavailable(f"no backend can run here: {'; '.join(passed)}")
