"""`deploy`: export, build each precision, parity against PyTorch, bench, report — one folder, resumable.

Each step records the hash of its inputs (deploykit.pipeline.steps); a rerun skips steps whose inputs and outputs
are unchanged. A failing step stops the flow with a DeployKitError and leaves finished steps' outputs intact.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deploykit
from deploykit.errors import ConfigConflict, InputError
from deploykit.io.outputs import write_json
from deploykit.pipeline.steps import StepRecord
from deploykit.types import Progress

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class DeployOptions:
    source: str
    out: Path
    options: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    allow_partial: bool = False
    precisions: tuple[str, ...] = PRECISIONS
    backend: str | None = None
    calib_data: str | None = None
    calib_n: int | None = None
    accuracy_budget: str | None = None
    inputs: str | None = None  # parity images; default: the calibration folder, else sample photographs
    input_shape: tuple[int, int, int, int] | None = None
    bench_seconds: float = 3.0
    threads: int | None = None
    rerun: bool = False  # ignore the step record and redo everything


@dataclass
class StepLog:
    name: str
    skipped: bool
    seconds: float


@dataclass
class DeployResult:
    out: Path
    summary: dict[str, Any]
    steps: list[StepLog]


def _check(opts: DeployOptions) -> None:
    unknown = [p for p in opts.precisions if p not in PRECISIONS]
    if unknown or not opts.precisions:
        raise ConfigConflict(f"--precisions {','.join(opts.precisions)}: choose from {','.join(PRECISIONS)}")
    if opts.out.exists() and not opts.out.is_dir():
        raise InputError(f"--out {opts.out} is a file; give a folder")
    if opts.calib_data and opts.calib_data not in ("synthetic", "photos") and not Path(opts.calib_data).exists():
        raise InputError(f"--calib-data {opts.calib_data} does not exist; give a folder of images or an .npz")
    if opts.inputs and not Path(opts.inputs).exists():
        raise InputError(f"--inputs {opts.inputs} does not exist; give a folder of images or an .npz")


def _folder_fingerprint(path: str | None) -> Any:
    """A cheap stand-in for a data folder's content in step keys: names, sizes and modification times."""
    if not path or not Path(path).exists():
        return path
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root) if root.is_dir() else p.name), p.stat().st_size, int(p.stat().st_mtime))
            for p in files]


def artifact_name(precision: str, backend: str) -> str:
    return f"model.{precision}.{'plan' if backend == 'tensorrt' else 'ort.onnx'}"


def run_deploy(opts: DeployOptions, progress: Progress | None = None) -> DeployResult:
    """The whole flow; see the module docstring."""
    from deploykit.build import resolve_backend

    say = progress or (lambda _m: None)
    _check(opts)
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create --out {opts.out}: {exc.strerror}; choose another folder") from exc
    record = StepRecord(opts.out)
    if opts.rerun:
        record.entries.clear()
    backend, backend_note = resolve_backend(opts.backend)
    say(backend_note)
    steps: list[StepLog] = []

    def step(name: str, inputs: dict[str, Any], outputs: Sequence[Path], action: Callable[[], Any],
             load: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        say(f"[{name}] starting")
        outcome = record.run(name, {**inputs, "deploykit": deploykit.__version__}, outputs, action, load)
        steps.append(StepLog(name, outcome.skipped, time.perf_counter() - started))
        say(f"[{name}] {'unchanged since the last run: skipped' if outcome.skipped else 'done'} "
            f"({steps[-1].seconds:.1f} s)")
        return outcome.result

    onnx_path = opts.out / "model.onnx"
    export_info = step("export", {"source": opts.source, "options": opts.options,
                                  "weights": Path(opts.weights) if opts.weights else None,
                                  "input_shape": opts.input_shape},
                       [onnx_path, opts.out / "export.json"],
                       lambda: _export(opts, onnx_path, say), lambda: _read(opts.out / "export.json"))
    builds = []
    for precision in opts.precisions:
        artifact = opts.out / artifact_name(precision, backend)
        record_file = opts.out / f"build.{precision}.json"
        builds.append(step(
            f"build-{precision}",
            {"onnx": onnx_path, "precision": precision, "backend": backend,
             "calib": _folder_fingerprint(opts.calib_data), "calib_n": opts.calib_n,
             "budget": opts.accuracy_budget if precision == "int8" else None},
            [artifact, record_file],
            functools.partial(_build, opts, onnx_path, artifact, precision, backend, say),
            functools.partial(_read, record_file),
        ))
    artifacts = [Path(b["path"]) for b in builds]
    parity = step("parity", {"artifacts": artifacts, "source": opts.source, "options": opts.options,
                             "inputs": _folder_fingerprint(opts.inputs or opts.calib_data)},
                  [opts.out / "parity.json"],
                  lambda: _parity(opts, artifacts, say), lambda: _read(opts.out / "parity.json"))
    layers = step("layers", {"onnx": onnx_path, "artifacts": artifacts, "parity": opts.out / "parity.json"},
                  [opts.out / "layers.json"],
                  lambda: _layers(opts, onnx_path, builds, parity, say), lambda: _read(opts.out / "layers.json"))
    bench = step("bench", {"artifacts": artifacts, "seconds": opts.bench_seconds, "threads": opts.threads,
                           "source": opts.source, "options": opts.options},
                 [opts.out / "bench.json"],
                 lambda: _bench(opts, artifacts, say), lambda: _read(opts.out / "bench.json"))
    summary = {"model": opts.source, "options": opts.options, "weights": opts.weights, "backend": backend,
               "backend_note": backend_note, "export": export_info, "builds": builds, "parity": parity,
               "layers": layers, "bench": bench,
               "steps": [{"name": s.name, "skipped": s.skipped, "seconds": round(s.seconds, 2)} for s in steps]}
    from deploykit.report.deploy import write_report

    say("writing the report")
    write_report(summary, opts.out)
    return DeployResult(out=opts.out, summary=summary, steps=steps)


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _export(opts: DeployOptions, onnx_path: Path, say: Progress) -> dict[str, Any]:
    from deploykit.errors import ExportError
    from deploykit.export import onnx_from_torch
    from deploykit.zoo.sources import load_model

    loaded = load_model(opts.source, options=opts.options, weights=opts.weights, allow_partial=opts.allow_partial)
    result = onnx_from_torch(loaded, onnx_path, input_shape=opts.input_shape, force=True, progress=say)
    info = {"path": str(onnx_path), "exporter": result.exporter, "opset": result.opset,
            "simplify_note": result.simplify_note, "seconds": round(result.seconds, 2),
            "checks": [{"input_shape": list(c.input_shape), "passed": c.passed,
                        "max_abs": max(m.max_abs for m in c.outputs.values()),
                        "cosine": min(m.cosine for m in c.outputs.values())} for c in result.checks]}
    if not result.passed:
        raise ExportError(f"the ONNX export of {opts.source} disagrees with PyTorch: {info['checks']}")
    write_json(opts.out / "export.json", info, force=True)
    return info


def _build(opts: DeployOptions, onnx_path: Path, artifact: Path, precision: str, backend: str,
           say: Progress) -> dict[str, Any]:
    from deploykit.build import build_artifact
    from deploykit.precision.passes import CalibrationOptions

    calibration = CalibrationOptions(data=opts.calib_data, n=opts.calib_n)
    result = build_artifact(onnx_path, artifact, precision=precision, backend=backend, calibration=calibration,
                            accuracy_budget=opts.accuracy_budget if precision == "int8" else None,
                            threads=opts.threads, force=True, progress=say)
    info = {"precision": precision, "backend": result.backend, "path": str(result.path),
            "precision_onnx": str(result.precision_onnx) if result.precision_onnx else str(onnx_path),
            "seconds": round(result.seconds, 2), "report": result.report}
    write_json(opts.out / f"build.{precision}.json", info, force=True)
    return info


def _parity(opts: DeployOptions, artifacts: Sequence[Path], say: Progress) -> dict[str, Any]:
    from deploykit.backends.targets import open_target
    from deploykit.parity.compare import ParitySettings, run_parity
    from deploykit.parity.inputs import resolve_inputs

    reference = open_target(opts.source, options=opts.options, weights=opts.weights,
                            allow_partial=opts.allow_partial, threads=opts.threads)
    candidates = [open_target(str(a), threads=opts.threads) for a in artifacts]
    folder = opts.inputs or (opts.calib_data if opts.calib_data not in (None, "synthetic", "photos") else None)
    inputs = resolve_inputs([reference, *candidates], inputs=folder, input_shape=opts.input_shape)
    result = run_parity(reference, candidates, inputs, ParitySettings(), progress=say)
    data = result.to_dict()
    write_json(opts.out / "parity.json", data, force=True)
    return data


def _layers(opts: DeployOptions, onnx_path: Path, builds: Sequence[dict[str, Any]], parity: dict[str, Any],
            say: Progress) -> dict[str, Any]:
    """Per-node error of the worst candidate against the FP32 ONNX, in graph order (for the report's plot)."""
    from deploykit.io.images import preprocess, sample_photographs
    from deploykit.io.metadata import read_metadata
    from deploykit.parity.localize import localize

    ranked = sorted(zip(builds, parity["candidates"], strict=True),
                    key=lambda pair: min(o["metrics"].get("cosine", 1.0) for o in pair[1]["outputs"]))
    worst_build, worst = ranked[0]
    candidate_onnx = Path(worst_build["precision_onnx"])
    data: dict[str, Any] = {"candidate": worst["label"], "precision": worst_build["precision"], "nodes": []}
    if candidate_onnx == onnx_path:
        data["note"] = "the worst candidate is the FP32 graph itself; nothing to localise"
    else:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        meta = read_metadata(model)
        size = opts.input_shape[2:] if opts.input_shape else (meta.input_size if meta else (512, 512))
        pre = meta.preprocessing if meta else None
        from deploykit.types import IMAGENET

        x = preprocess(sample_photographs(("astronaut",))[0], pre or IMAGENET, (int(size[0]), int(size[1])))
        say(f"per-node error of {worst['label']} against the FP32 graph")
        # Every node whose error exceeds 1e-5 is listed (localize keeps nodes above tolerance / 100).
        found = localize(onnx_path, candidate_onnx, x, tolerance=1e-3, top_k=100_000)
        order = {node.name: i for i, node in enumerate(model.graph.node)}
        rows = sorted(found.top, key=lambda n: order.get(n.node, len(order)))
        data["nodes"] = [{"node": n.node, "op_type": n.op_type, "module": n.module, "error": n.error,
                          "growth": n.growth, "cosine": n.cosine} for n in rows]
    write_json(opts.out / "layers.json", data, force=True)
    return data


def _bench(opts: DeployOptions, artifacts: Sequence[Path], say: Progress) -> dict[str, Any]:
    from deploykit.bench.harness import TimingConfig
    from deploykit.bench.run import run_bench

    config = TimingConfig(warmup_s=0.5, duration_s=opts.bench_seconds)
    shape = opts.input_shape
    reports = [run_bench(opts.source, backends=["torch"], config=config, threads=opts.threads,
                         model_options={"options": opts.options, "weights": opts.weights,
                                        "allow_partial": opts.allow_partial},
                         input_shape=shape, roofline=True, progress=say)]
    reports += [run_bench(str(a), config=config, threads=opts.threads, input_shape=shape, roofline=False,
                          progress=say) for a in artifacts]
    peaks = reports[0].peaks
    if peaks:
        from deploykit.bench.roofline import Peaks
        from deploykit.bench.run import apply_peaks

        for report in reports[1:]:
            known = set(Peaks.__dataclass_fields__)
            apply_peaks(report.results, Peaks(**{k: v for k, v in peaks.items() if k in known}))
    data = {"results": [r.to_dict() for report in reports for r in report.results],
            "skipped": [s for report in reports for s in report.to_dict()["skipped"]],
            "environment": reports[0].environment, "peaks": peaks, "config": reports[0].config,
            "notes": _distinct_notes(n for report in reports for n in report.notes)}
    write_json(opts.out / "bench.json", data, force=True)
    return data


def _distinct_notes(notes: Iterable[str]) -> list[str]:
    """One note per kind: the runs of one deploy repeat the same warning with slightly different figures."""
    seen: dict[str, str] = {}
    for note in notes:
        seen.setdefault(note.split("(")[0], note)
    return list(seen.values())
