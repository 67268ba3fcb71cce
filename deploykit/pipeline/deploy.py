"""`deploy`: export, build each precision, parity against PyTorch, bench, report — one folder, resumable.

Each step records the hash of its inputs (deploykit.pipeline.steps); a rerun skips steps whose inputs and outputs
are unchanged and rebuilds their typed result from the JSON they wrote. A failing step stops the flow with a
DeployKitError and leaves finished steps' outputs intact. State is built once and handed on (`_Run`): the
PyTorch model is built once (and only when a step needs it), model.onnx is loaded once per run, each artifact is
opened once for parity and bench with the sidecar its build returned, and the per-layer step uses the parity
inputs.
Defaults, documented once here: every precision of deploykit.precision.table.PRECISIONS but FP16 where no backend
in play runs float16 natively (default_precisions); backend auto (see
deploykit.build); DEFAULT_BENCH_SECONDS timed seconds per contender after BENCH_WARMUP_S of warm-up each, PyTorch
eager and every artifact timed round-robin in one run;
parity inputs: --inputs, else the calibration folder, else deploykit.parity.inputs' sample photographs.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import onnx

import deploykit
from deploykit.backends.base import Backend, backend_of
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.run import BenchReport
from deploykit.build import BuildResult, build_artifact
from deploykit.calib.data import DEFAULT_CALIB_N
from deploykit.calib.data import check_spec as check_calib_spec
from deploykit.environment import package_version
from deploykit.errors import CheckFailed, ConfigConflict, InputError, OutputExists
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.export.results import ExportResult
from deploykit.io.digests import sha256_file
from deploykit.io.images import check_images, images_cannot_feed, list_images
from deploykit.io.model_files import read_onnx
from deploykit.io.output_checks import remove_output
from deploykit.io.outputs import write_json
from deploykit.io.reads import ReadSet
from deploykit.parity.compare import ParityResult, ParitySettings, run_parity
from deploykit.parity.inputs import InputSet, check_given, resolve_inputs
from deploykit.parity.localize import localize
from deploykit.pipeline.report import write_report
from deploykit.pipeline.results import (
    DeployResult,
    LayerError,
    LayersResult,
    StepLog,
    build_in,
    build_record,
    parity_from_record,
)
from deploykit.pipeline.steps import RECORD, StepRecord
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import BASELINE, PRECISIONS, Precision, precision_of
from deploykit.runner import Target
from deploykit.targets.bench import run_bench
from deploykit.targets.race import Race, choose_backend
from deploykit.targets.resolve import open_target, source_label, torch_target
from deploykit.types import Progress, Task
from deploykit.zoo.sources import (
    LoadedModel,
    check_source_size,
    is_factory_path,
    load_model,
    user_code_base,
    user_code_fingerprint,
)

# Per contender: 4 contenders round-robin take 8 s, about 20 rounds of the demo's model with the pauses, enough
# for intervals that tell INT8 from FP32 (trtexec times 3 s, one engine at a time).
DEFAULT_BENCH_SECONDS = 2.0
BENCH_WARMUP_S = 0.5
CALIB_KEYWORDS = ("synthetic", "photos")  # --calib-data values that name no folder
PICTURES = "pictures.npz"  # what the parity run kept for the report's pictures (parity.pictured)
T = TypeVar("T")


@dataclass(frozen=True)
class DeployOptions:
    """What to deploy. None means the library's default (module docstring)."""

    source: str
    out: Path
    options: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    allow_partial: bool = False
    trust_checkpoint: bool = False  # unpickle --weights in full (zoo.checkpoints.read_checkpoint)
    task: Task | None = None  # a user model's task (zoo models know theirs)
    precisions: tuple[str, ...] | None = None
    backend: str | None = None
    calib_data: str | None = None
    calib_n: int | None = None
    accuracy_budget: str | None = None
    inputs: str | None = None
    input_shape: tuple[int, int, int, int] | None = None
    bench_seconds: float | None = None
    threads: int | None = None
    rerun: bool = False  # ignore the step record and redo everything
    force: bool = False  # write into an existing folder that holds files but no deploy (_check_out)
    require: str | None = None  # the precision that must ship (deploy --require): always built
    labels: str | None = None  # ground-truth masks for parity (parity --labels): miou_gt and miou_drop

    @property
    def chosen_precisions(self) -> tuple[str, ...]:
        return self.precisions if self.precisions is not None else tuple(PRECISIONS)

    @property
    def parity_folder(self) -> str | None:
        return self.inputs or (self.calib_data if self.calib_data not in (None, *CALIB_KEYWORDS) else None)


def _check(opts: DeployOptions) -> None:
    unknown = [p for p in opts.chosen_precisions if p not in PRECISIONS]
    if unknown or not opts.chosen_precisions:
        raise ConfigConflict(f"--precisions {','.join(opts.chosen_precisions)}: choose from {','.join(PRECISIONS)}")
    asked = [*(opts.precisions or ()), *([opts.require] if opts.require else [])]
    if not opts.calib_data and (starved := [p for p in dict.fromkeys(asked) if PRECISIONS[p].needs_data]):
        raise ConfigConflict(f"{', '.join(starved)} needs calibration data: give --calib-data DIR (your images), "
                             "'photos' or 'synthetic'")
    _check_out(opts)
    if opts.calib_data and opts.calib_data not in CALIB_KEYWORDS and not Path(opts.calib_data).exists():
        raise InputError(f"--calib-data {opts.calib_data} does not exist; give a folder of images or an .npz")
    if opts.calib_data:
        check_calib_spec(opts.calib_data)
    if opts.inputs:
        check_given(Path(opts.inputs))
    check_source_size(opts.source, opts.input_shape, opts.options, opts.weights)
    channels = opts.input_shape[1] if opts.input_shape else 3
    reads = [("--inputs", opts.parity_folder)] + ([("--calib-data", opts.calib_data)] if "int8" in
                                                  opts.chosen_precisions else [])
    for flag, given in reads:  # images and photographs are RGB; arrays and noise take the model's channels
        if channels != 3 and given != "synthetic" and not str(given or "").endswith((".npz", ".npy")):
            raise images_cannot_feed(f"--input-shape has {channels} channels", channels, flag)
    # Every image the run will read decodes now, not when its step comes minutes later.
    if opts.parity_folder and Path(opts.parity_folder).is_dir():
        check_images(list_images(opts.parity_folder))
    if opts.calib_data and opts.calib_data != opts.parity_folder and Path(opts.calib_data).is_dir():
        check_images(list_images(opts.calib_data)[: opts.calib_n or DEFAULT_CALIB_N])


def _check_out(opts: DeployOptions) -> None:
    """--out is a folder deploy may write into: new, empty, or a deploy's (its step record), which is resumed.
    A folder of other files is refused without --force: deploy writes model.onnx, report.md and more there, and
    silently replaced a user's files of those names. Hidden entries are not counted (deploy writes no hidden
    name but its record and temporary files, which a killed run may leave before its record)."""
    if opts.out.exists() and not opts.out.is_dir():
        raise InputError(f"--out {opts.out} is a file; give a folder")
    if opts.force or not opts.out.is_dir() or (opts.out / RECORD).is_file():
        return
    if others := sorted(p.name for p in opts.out.iterdir() if not p.name.startswith(".")):
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OutputExists(f"--out {opts.out} holds files ({shown}) and no deploy ({RECORD}): deploy would write "
                           "over files of its outputs' names; choose a new or empty folder, or pass --force to "
                           "write into this one")


UNTRAINED = ("untrained weights: no --weights given, so {what} keeps its builder's random initialisation "
             "(seeded 0); the task gates then measure ties between near-equal random scores, not the quality a "
             "trained model keeps; pass --weights CHECKPOINT for figures that mean something")


def untrained_note(opts: DeployOptions) -> str:
    """The warning deploy gives first and writes into its report when the model has no trained weights
    ("" when --weights is given). A user factory may load weights itself, so it is told so, not asserted."""
    if opts.weights:
        return ""
    if is_factory_path(opts.source):
        return UNTRAINED.format(what=f"{opts.source}, unless the factory loads trained weights itself,")
    return UNTRAINED.format(what=opts.source)


def _folder_fingerprint(path: str | None) -> Any:
    """A data folder's (or file's) content in step keys: each file's name and sha256. Sizes and whole-second
    modification times missed an image replaced by another of its size in the same second, or copied in with
    its time kept (cp -p, rsync -a, tar): a resumed deploy kept INT8 calibrated on the old images."""
    if not path or not Path(path).exists():
        return path
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root) if root.is_dir() else p.name), sha256_file(p)) for p in files]


def artifact_name(precision: Precision, backend: Backend) -> str:
    """model.<precision><the backend's artifact suffix>, e.g. model.int8.ort.onnx or model.fp16.plan."""
    return f"model.{precision.name}{backend.suffix}"


class _Run:
    """The state one deploy builds once and hands to its steps."""

    def __init__(self, opts: DeployOptions, backend: Backend, backend_note: str, say: Progress,
                 racer: Race | None) -> None:
        self.opts, self.backend, self.backend_note, self.say, self.racer = opts, backend, backend_note, say, racer
        self.onnx_path = opts.out / "model.onnx"
        self.label = source_label(opts.source, opts.options, opts.weights)
        self.builds: list[BuildResult] = []
        # What building the model reads beyond _model_inputs, seen as it is built: a resume checks them
        self.reads = ReadSet(user_code_base(opts.source),
                             keyed=frozenset({Path(opts.weights).resolve()} if opts.weights else ()))

    @functools.cached_property
    def loaded(self) -> LoadedModel:
        self.say(f"building {self.label}")
        with self.reads.watch():
            loaded = load_model(self.opts.source, options=self.opts.options, weights=self.opts.weights,
                                allow_partial=self.opts.allow_partial, trust_checkpoint=self.opts.trust_checkpoint,
                                task=self.opts.task)
        for note in loaded.weight_notes():
            self.say(note)
        return loaded

    @functools.cached_property
    def onnx_model(self) -> onnx.ModelProto:
        return read_onnx(self.onnx_path)

    @functools.cached_property
    def reference(self) -> Target:
        return torch_target(self.loaded, self.label, threads=self.opts.threads)

    @functools.cached_property
    def candidates(self) -> list[Target]:
        return [open_target(str(b.path), threads=self.opts.threads, sidecar=b.sidecar) for b in self.builds]

    @functools.cached_property
    def inputs(self) -> InputSet:
        return resolve_inputs([self.reference, *self.candidates], inputs=self.opts.parity_folder,
                              input_shape=self.opts.input_shape)

    def export(self) -> ExportResult:
        result = onnx_from_torch(self.loaded, self.onnx_path, input_shape=self.opts.input_shape, force=True,
                                 progress=self.say)
        if not result.passed:  # the advice names export's options (--exporter, --no-simplify...): deploy has none
            raise CheckFailed(f"the ONNX export of {self.opts.source} does not verify ({result.checks_text()}): "
                              f"{result.mismatch()}; those are options of `deploykit export {self.opts.source}`, "
                              "where an export that verifies can be found")
        write_json(self.opts.out / "export.json", result.to_dict(), force=True)
        return result

    def build(self, precision: Precision, artifact: Path, record: Path) -> BuildResult:
        opts = self.opts
        # With a racer, build-engine's own race picks each precision's backend (deploykit.targets.race).
        result = build_artifact(self.onnx_path, artifact, precision=precision, backend=self.backend,
                                backend_note=self.backend_note,
                                calibration=CalibrationOptions(data=opts.calib_data, n=opts.calib_n,
                                                               labels=opts.labels),
                                accuracy_budget=_budget(opts, precision), threads=opts.threads, force=True,
                                progress=self.say, source=self.onnx_model, racer=self.racer)
        write_json(record, build_record(result), force=True)
        return result

    def parity(self) -> ParityResult:
        result = run_parity(self.reference, self.candidates, self.inputs, ParitySettings(labels=self.opts.labels),
                            progress=self.say)
        pictures = self.opts.out / PICTURES
        if result.pictures is not None:
            result.pictures.save(pictures, force=True)
            result.pictures_file = PICTURES
        else:
            remove_output(pictures)  # a stale picture of other artifacts must not be drawn
        write_json(self.opts.out / "parity.json", result.to_dict(), force=True)
        return result

    def layers(self, parity: ParityResult) -> LayersResult:
        """Per-node error of the worst candidate against the FP32 ONNX, in graph order (for the report's plot),
        on the first parity input."""
        ranked = sorted(zip(self.builds, parity.candidates, strict=True), key=lambda pair: pair[1].worst_cosine())
        build, worst = ranked[0]
        result = LayersResult(candidate=worst.label, precision=build.precision)
        if build.precision_onnx is None:
            result.note = "the worst candidate is the FP32 graph itself; nothing to localise"
        else:
            x = next(iter(self.inputs.batches()))[:1]
            self.say(f"per-node error of {worst.label} against the FP32 graph")
            # Every node whose error exceeds 1e-5 is listed (localize keeps nodes above tolerance / 100).
            found = localize(self.onnx_path, build.precision_onnx, x, tolerance=1e-3, top_k=100_000)
            order = {node.name: i for i, node in enumerate(self.onnx_model.graph.node)}
            rows = sorted(found.top, key=lambda n: order.get(n.node, len(order)))
            result.nodes = [LayerError(n.node, n.op_type, n.module, n.error, n.growth, n.cosine) for n in rows]
        write_json(self.opts.out / "layers.json", result.to_dict(), force=True)
        return result

    def bench(self) -> BenchReport:
        """PyTorch eager and every artifact in one round-robin run (deploykit.bench.interleave)."""
        opts = self.opts
        config = TimingConfig(warmup_s=BENCH_WARMUP_S, duration_s=DEFAULT_BENCH_SECONDS if opts.bench_seconds is None
                              else opts.bench_seconds)
        report = run_bench([self.reference, *self.candidates], config=config, threads=opts.threads,
                           batches=bench_batches(opts.input_shape), input_shape=opts.input_shape, progress=self.say,
                           roofline=True, quick_peaks=True)
        write_json(opts.out / "bench.json", report.to_dict(), force=True)
        return report


def bench_batches(input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """Batch 1, which the verdict compares, and --input-shape's batch where it is larger: the throughput asked for."""
    return (1,) if input_shape is None or input_shape[0] <= 1 else (1, int(input_shape[0]))


def build_files(build: BuildResult) -> list[Path]:
    """The files a build step wrote: the artifact with its companions, its sidecar and its precision graph (the
    layers step reads it: a deleted one failed there as a bug)."""
    graph = [build.precision_onnx] if build.precision_onnx is not None else []
    return [*backend_of(build.backend).files(build.path), build.sidecar_path, *graph]


def _backend_note(asked: str | None, backend: Backend, note: str, racers: Sequence[Backend]) -> str:
    """Why these backends: a race among the ready CPU backends, or the table's pick (TensorRT where a builder
    can be constructed: `--backend auto` builds it without a CPU race)."""
    if racers:
        return (f"--backend auto: {', '.join(b.title for b in racers)} are ready here; each precision is built with "
                "every one of them and the fastest measured is kept (deploykit.targets.race)")
    if asked == "auto" and backend.device != "cpu":
        return f"{note}: --backend auto builds {backend.title} here, with no CPU race (nothing to measure it against)"
    return note


def default_precisions(opts: DeployOptions, backends: Sequence[Backend]) -> tuple[tuple[str, ...], str]:
    """The precisions to build and, when one is left out, why. Without --precisions: all, but FP16 only where a
    backend in play runs float16 natively (a GPU): a CPU runs an FP16 artifact as float32 kernels between casts
    (OpenVINO's CPU plugin reports f32 layers for it), so it can never be the faster artifact, and building,
    checking and timing it took a tenth of the demo."""
    if opts.precisions is not None:
        return opts.precisions, ""
    native = any(b.runs_float16 for b in backends)
    chosen = tuple(name for name, p in PRECISIONS.items() if name == opts.require
                   or ((native or not p.float16_compute) and (opts.calib_data or not p.needs_data)))
    why = []
    if slow := [name for name, p in PRECISIONS.items() if name not in chosen and p.float16_compute and not native]:
        why.append(f"{', '.join(slow)} not built: no backend here runs float16 natively "
                   f"({' and '.join(b.title for b in backends)} on a CPU {'runs' if len(backends) == 1 else 'run'} "
                   "it as float32 between casts, never faster "
                   f"than {BASELINE.name}); --precisions {','.join(PRECISIONS)} builds it")
    if starved := [name for name, p in PRECISIONS.items() if name not in chosen and p.needs_data]:
        why.append(f"{', '.join(starved)} not built: no --calib-data given (a folder of your images, 'photos' or "
                   "'synthetic' builds it)")
    return chosen, "; ".join(why)


def _budget(opts: DeployOptions, precision: Precision) -> str | None:
    return opts.accuracy_budget if precision.budget_in_deploy else None


def _build_inputs(opts: DeployOptions, precision: Precision) -> dict[str, Any]:
    """What a build of `precision` reads of the options, for its step key: only what it reads, so that
    --calib-n given to a deploy rebuilds FP16 and INT8, not FP32 (which has no graph pass). --threads was not
    in it: the CPU race times each backend at it (another count may pick another), the budget search and the
    compile run at it and the sidecar records it, so a rerun with another kept the old count's builds."""
    data = "calibration" in precision.options
    budget = _budget(opts, precision)
    return {"precision": precision.name, "threads": opts.threads,
            "calib": _folder_fingerprint(opts.calib_data) if data else None,
            "calib_n": opts.calib_n if data else None, "budget": budget,
            # a budget may be measured against the masks (miou_drop); without one the build never reads them
            "labels": _folder_fingerprint(opts.labels) if budget else None}


def _model_inputs(opts: DeployOptions) -> dict[str, Any]:
    """What building the PyTorch model reads, in the key of each step that builds it (export, parity, bench).
    --allow-partial and --trust-checkpoint were in no key: a rerun without the flag its checkpoint needs skipped
    every step and passed, where a fresh run refuses (exit 2)."""
    return {"source": opts.source, "options": opts.options, "code": user_code_fingerprint(opts.source),
            "weights": Path(opts.weights) if opts.weights else None, "allow_partial": opts.allow_partial,
            "trust_checkpoint": opts.trust_checkpoint, "task": opts.task}


def _versions() -> dict[str, str]:
    """The software every step's result depends on, in every step's key (torch's and ONNX's were in none)."""
    return {"deploykit": deploykit.__version__, "torch": package_version("torch"), "onnx": package_version("onnx")}


def _runtimes(backends: Sequence[Backend]) -> dict[str, str]:
    """The version of each backend in play, in the key of each step that builds or runs artifacts (all but
    export, which another backend leaves as it was): after an upgrade of ONNX Runtime a resumed deploy kept
    the old one's builds, parity figures and timings."""
    return {b.name: b.availability().version for b in backends}


def run_deploy(opts: DeployOptions, progress: Progress | None = None) -> DeployResult:
    """The whole flow; see the module docstring."""
    say = progress or (lambda _m: None)
    _check(opts)
    weights_note = untrained_note(opts)
    if weights_note:
        say(f"warning: {weights_note}")
    fresh = not opts.out.exists()
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create --out {opts.out}: {exc.strerror}; choose another folder") from exc
    record = StepRecord(opts.out)
    if opts.rerun:
        record.entries.clear()
    backend, backend_note, racer = choose_backend(opts.backend, layout_given=False)
    racers = racer.racers if racer else ()
    backend_note = _backend_note(opts.backend, backend, backend_note, racers)
    say(backend_note)
    precisions, left_out = default_precisions(opts, racers or (backend,))
    if left_out:
        say(left_out)
        backend_note = f"{backend_note}; {left_out}"
    steps: list[StepLog] = []
    run = _Run(opts, backend, backend_note, say, racer)
    versions, runtimes = _versions(), _runtimes(racers or (backend,))

    def step(name: str, inputs: dict[str, Any], outputs: Sequence[Path], action: Callable[[], T],
             load: Callable[[dict[str, Any]], T], produced: Callable[[T], Sequence[Path]] | None = None,
             reads: ReadSet | None = None) -> T:
        """Run or skip one step; its result is rebuilt from outputs[-1] (a JSON) when skipped. `produced`: the
        files it wrote besides `outputs`, known from its result; `reads`: run.reads where it builds the model."""
        started = time.perf_counter()
        say(f"[{name}] starting")
        files = (lambda result: [*produced(result), *outputs]) if produced else outputs
        try:
            outcome = record.run(name, {**inputs, "versions": versions}, files, action,
                                 lambda: load(_read(outputs[-1])), reads)
        except BaseException:
            if fresh and {p.name for p in opts.out.iterdir()} <= {RECORD}:  # (a user's model that raises)
                shutil.rmtree(opts.out, ignore_errors=True)  # nothing made yet: leave no folder behind
            raise
        steps.append(StepLog(name, outcome.skipped, time.perf_counter() - started))
        why = f": {outcome.changed_read}, which building the model read, changed since the last run" \
            if outcome.changed_read else ""
        say(f"[{name}] {'unchanged since the last run: skipped' if outcome.skipped else 'done'} "
            f"({steps[-1].seconds:.1f} s){why}")
        result: T = outcome.result
        return result

    source = _model_inputs(opts)
    # Parity feeds one image at a time at --input-shape's C,H,W; export reads its batch, bench times it beside batch 1.
    fed = {"input_size": opts.input_shape[1:] if opts.input_shape else None}
    export = step("export", {**source, "input_shape": opts.input_shape}, [run.onnx_path, opts.out / "export.json"],
                  run.export, ExportResult.from_dict, reads=run.reads)
    for precision in (precision_of(name) for name in precisions):
        artifact = opts.out / artifact_name(precision, backend)
        record_file = opts.out / f"build.{precision.name}.json"
        run.builds.append(step(
            f"build-{precision.name}",
            {"onnx": run.onnx_path, "backend": backend.name, "race": [b.name for b in racers], "runtimes": runtimes,
             **_build_inputs(opts, precision)},
            [record_file], functools.partial(run.build, precision, artifact, record_file),
            functools.partial(build_in, out=opts.out),
            produced=lambda build: build_files(build)))
    artifacts = {"artifacts": [b.path for b in run.builds], "runtimes": runtimes}
    parity = step("parity", {**artifacts, **source, **fed, "inputs": _folder_fingerprint(opts.parity_folder),
                             "labels": _folder_fingerprint(opts.labels)},
                  [opts.out / PICTURES, opts.out / "parity.json"], run.parity,
                  functools.partial(parity_from_record, out=opts.out), reads=run.reads)
    layers = step("layers", {"onnx": run.onnx_path, **artifacts, "parity": opts.out / "parity.json"},
                  [opts.out / "layers.json"], lambda: run.layers(parity), LayersResult.from_dict)
    bench = step("bench", {**artifacts, "seconds": opts.bench_seconds, "threads": opts.threads, **source,
                           **fed, "batches": bench_batches(opts.input_shape)},
                 [opts.out / "bench.json"], run.bench, BenchReport.from_dict, reads=run.reads)
    result = DeployResult(out=opts.out, model=opts.source, options=opts.options, weights=opts.weights,
                          backend=backend.name, backend_note=backend_note, export=export, builds=run.builds,
                          parity=parity, layers=layers, bench=bench, steps=steps, weights_note=weights_note,
                          require=opts.require)

    record.prune([s.name for s in steps])
    say("writing the report")
    write_report(result, opts.out)
    return result


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
