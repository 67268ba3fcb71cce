"""Reproduce the README performance table: PyTorch eager vs ONNX Runtime fp32 / fp16 / int8, side by side in
one run on this CPU, for DeepLabv3+ (ResNet-50, ResNet-101, MobileNetV2, Xception-65 at 513x513) and MSI-Net
(240x320), with speed-ups, achieved GFLOP/s as a share of the machine's measured sgemm peak, and the INT8
(and FP16) agreement with fp32 on real photographs.

    python benchmarks/bench_models.py --out-dir benchmarks/results          # the full table (~30 min here)
    python benchmarks/bench_models.py --tiny --out-dir /tmp/bench-tiny      # smoke test on the tiny variants
    python benchmarks/bench_models.py --name trained --models deeplabv3plus_mobilenetv2,msinet \
        --weights deeplabv3plus_mobilenetv2=benchmarks/checkpoints/deeplabv3plus_mobilenetv2_small.pt \
        --weights msinet=benchmarks/checkpoints/msinet_small.pt --images benchmarks/data/heldout
                                                                            # trained weights (train_small.py)

Run the full table only on a quiet machine: other processes distort CPU timings badly (with as many threads
as cores, OpenMP barriers wait for descheduled threads). Each model is exported (static shape), built to
fp16 and int8 ONNX Runtime artifacts with deploykit.build.build_artifact (int8 calibrated on --calib-data),
and all four are timed in one round-robin run (deploykit.bench.interleave, as `deploykit bench A B ...`). Writes
OUT_DIR/bench_models.md and OUT_DIR/bench_models.json; the models and artifacts stay in OUT_DIR/<model>/.

Targets from issue 8 (2-core AVX2 machine), checked in the Markdown:
- separable models (MobileNetV2, Xception-65): ONNX Runtime fp32 at least 2.5x faster than PyTorch eager;
- dense models (ResNet-50/101, MSI-Net): ONNX Runtime fp32 at least 70% of the measured GEMM peak;
- INT8 at least 1.3x faster than fp32, with pixel agreement >= 99.5% (segmentation).
Without --weights the models keep their random initialisation: timings are unaffected, agreement figures
are then only indicative (trained weights give peakier, more robust class scores).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.base import BACKENDS, REFERENCE
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.load import LoadProbe
from deploykit.bench.roofline import Peaks
from deploykit.bench.run import apply_peaks, environment_manifest, measure_peaks_around
from deploykit.bench.runners import Skipped
from deploykit.errors import DeployKitError
from deploykit.io.outputs import write_json, write_text
from deploykit.precision.table import BASELINE, PRECISIONS, precision_of
from deploykit.report.format import markdown_table
from deploykit.targets.bench import run_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # --tiny: tests/fixtures/tiny.py
from tests.fixtures.tiny import TINY

MODELS = ("deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenetv2",
          "deeplabv3plus_xception65", "msinet")
SEPARABLE = {"deeplabv3plus_mobilenetv2", "deeplabv3plus_xception65"}
DENSE = {"deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "msinet"}
ORT = BACKENDS["onnxruntime"]
LOWERED = tuple(p.name for p in PRECISIONS.values() if p.lowered)  # fp16, int8
INT8 = next(p.name for p in PRECISIONS.values() if p.budget_in_deploy)
VARIANTS = (f"{REFERENCE.name} {BASELINE.name}", *(f"{ORT.name} {p}" for p in PRECISIONS))
SHOWN = {VARIANTS[0]: "PyTorch eager", **{f"{ORT.name} {p}": f"ORT {p}" for p in PRECISIONS}}
FP32, ORT_FP32, ORT_INT8 = VARIANTS[0], f"{ORT.name} {BASELINE.name}", f"{ORT.name} {INT8}"
AGREEMENT_KEYS = ("pixel_agreement", "miou", "cc", "kld", "sim")
EVAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "retina")
FULL_TIMING = TimingConfig(warmup_s=1.0, duration_s=10.0, min_iterations=10, min_warmup_iterations=2)
TINY_TIMING = TimingConfig(warmup_s=0.0, duration_s=0.0, iterations=5, min_warmup_iterations=1)


def say(message: object) -> None:  # a str or a deploykit.types.Progressed
    print(f"… {message}", file=sys.stderr, flush=True)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    parser.add_argument("--tiny", action="store_true", help="the tiny test variants, 5 iterations: a smoke test")
    parser.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                        help="a checkpoint for a model (repeatable)")
    parser.add_argument("--calib-data", default="photos", help="INT8 calibration data (see build-engine)")
    parser.add_argument("--calib-n", type=int, default=None, help="calibration inputs (default: build's)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per variant, all four round-robin (default 10)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="more agreement images, besides the scikit-image photographs")
    parser.add_argument("--accuracy-budget", action="append", default=[], metavar="METRIC>=X",
                        help="INT8 accuracy budget (see build-engine), e.g. pixel_agreement>=0.99")
    parser.add_argument("--name", default="bench_models", help="stem of the .md/.json written to --out-dir")
    parser.add_argument("--force", action="store_true", help="overwrite outputs")
    return parser.parse_args(argv)


def _weights(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        model, sep, path = pair.partition("=")
        if not sep:
            raise SystemExit(f"--weights {pair!r}: write MODEL=PATH")
        out[model] = path
    return out


def _prepare(name: str, folder: Path, args: argparse.Namespace, weights: str | None) -> dict[str, Any]:
    """Export the model and build its fp16 / int8 ONNX Runtime artifacts with the library calls deploy uses;
    returns the PyTorch target (built once) and the paths of the three ONNX Runtime models."""
    from deploykit.build import build_artifact
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.precision.passes import CalibrationOptions
    from deploykit.targets.resolve import source_label, torch_target
    from deploykit.zoo import get_model_spec
    from deploykit.zoo.sources import load_model

    spec = get_model_spec(name)
    options = dict(TINY[spec.name].options) if args.tiny else {}
    size = TINY[spec.name].input_size if args.tiny else spec.input_size
    loaded = load_model(name, options=options, weights=weights)
    opened = torch_target(loaded, source_label(name, options, weights), threads=args.threads)
    assert opened.loaded is not None
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    say(f"{name}: exporting at 1x3x{size[0]}x{size[1]}")
    exported = onnx_from_torch(opened.loaded, fp32, input_shape=(1, 3, *size), dynamic=False, force=True,
                               progress=say)
    if not exported.passed:
        raise DeployKitError(f"{name} does not export faithfully; see `deploykit export {name}`")
    paths = {ORT_FP32: fp32}
    calibration = CalibrationOptions(data=args.calib_data, n=2 if args.tiny else args.calib_n)
    for precision in LOWERED:
        out = folder / f"model-{precision}-ort.onnx"
        say(f"{name}: building the {precision} ONNX Runtime artifact")
        budget = args.accuracy_budget if PRECISIONS[precision].budget_in_deploy else None
        build_artifact(fp32, out, precision=precision_of(precision), backend=ORT, calibration=calibration,
                       accuracy_budget=budget, threads=args.threads, force=True, progress=say)
        paths[f"{ORT.name} {precision}"] = out
    return {"opened": opened, "paths": paths, "size": size, "options": options, "task": spec.task,
            "preprocessing": spec.preprocessing}


def _agreement(prepared: dict[str, Any], threads: int | None, images: str | None) -> dict[str, dict[str, float]]:
    """Task metrics of each ONNX Runtime variant against ONNX Runtime fp32 on real photographs (and --images)."""
    from deploykit.io.images import iter_folder, preprocess, sample_photographs
    from deploykit.metrics.scores import task_metrics
    from deploykit.targets.resolve import open_target

    batch = [preprocess(photo, prepared["preprocessing"], prepared["size"])
             for photo in sample_photographs(EVAL_PHOTOS)]
    if images:
        batch += list(iter_folder(images, prepared["preprocessing"], prepared["size"]))
    outputs: dict[str, np.ndarray] = {}
    for variant, path in prepared["paths"].items():
        opened = open_target(str(path), threads=threads)
        with opened.runner as runner:
            name = runner.input_specs()[0].name
            first = [next(iter(runner.infer({name: x.astype(runner.input_specs()[0].dtype)}).values()))
                     for x in batch]
        outputs[variant] = np.concatenate(first).astype(np.float32)
    reference = outputs.pop(ORT_FP32)
    return {variant: task_metrics(prepared["task"], reference, out) for variant, out in outputs.items()}


def bench_model(name: str, args: argparse.Namespace, weights: str | None, config: TimingConfig,
                skipped: list[Skipped]) -> dict[str, Any]:
    from deploykit.targets.resolve import open_target

    prepared = _prepare(name, args.out_dir / name, args, weights)
    shape = (1, 3, *prepared["size"])
    reference = prepared["opened"]
    targets = [reference, *(open_target(str(path), threads=args.threads) for path in prepared["paths"].values())]
    # One round-robin run; the model's multiply-adds are counted on it, whatever the graph's form.
    report = run_bench(targets, batches=[1], input_shape=shape, config=config, threads=args.threads,
                       roofline=False, progress=say, madds_of=reference)
    results = report.results
    skipped += report.skipped
    for result in results:
        result.target = reference.label
    say(f"{name}: agreement of fp16 / int8 with fp32 on {len(EVAL_PHOTOS)} photographs"
        + (f" and the images in {args.images}" if args.images else ""))
    agreement = _agreement(prepared, args.threads, args.images)
    return {"model": name, "input_size": list(prepared["size"]), "options": prepared["options"],
            "weights": weights or "random initialisation", "task": prepared["task"], "results": results,
            "agreement": agreement, "agreement_images": args.images, "int8_accuracy_budget": args.accuracy_budget}


def _median(row: dict[str, Any], variant: str) -> float | None:
    backend, precision = variant.split()
    found = [r for r in row["results"] if r.backend == backend and r.precision == precision]
    return found[0].latency.median if found else None


def _efficiency(row: dict[str, Any], variant: str) -> float | None:
    backend, precision = variant.split()
    found = [r for r in row["results"] if r.backend == backend and r.precision == precision]
    return found[0].efficiency_percent if found else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _checks(row: dict[str, Any]) -> list[str]:
    """The issue's targets for this model: 'met' / 'MISSED' lines."""
    name = row["model"]
    eager, fp32, int8 = (_median(row, v) for v in (FP32, ORT_FP32, ORT_INT8))
    lines = []
    if name in SEPARABLE:
        speedup = _ratio(eager, fp32)
        lines.append(_verdict(f"{name}: ONNX Runtime fp32 >= 2.5x eager", speedup, 2.5, "x"))
    if name in DENSE:
        lines.append(_verdict(f"{name}: ONNX Runtime fp32 >= 70% of the GEMM peak",
                              _efficiency(row, ORT_FP32), 70.0, "%"))
    lines.append(_verdict(f"{name}: INT8 >= 1.3x fp32", _ratio(fp32, int8), 1.3, "x"))
    agreement = row["agreement"].get(ORT_INT8, {})
    if "pixel_agreement" in agreement:
        lines.append(_verdict(f"{name}: INT8 pixel agreement >= 99.5%", 100 * agreement["pixel_agreement"],
                              99.5, "%"))
    return lines


def _verdict(what: str, value: float | None, target: float, unit: str) -> str:
    if value is None:
        return f"- {what}: not measured"
    shown = f"{value:.2f}x" if unit == "x" else f"{value:.1f}%"
    return f"- {what}: {shown}, {'met' if value >= target else 'MISSED'}"


def markdown(rows: list[dict[str, Any]], failures: dict[str, str], peaks: Peaks, env: dict[str, Any],
             tiny: bool, notes: list[str]) -> str:
    headers = ["model", "input", "GMAdds", *(f"{SHOWN[v]} ms" for v in VARIANTS), "ORT fp32 vs eager",
               "int8 vs fp32", "eager % peak", "ORT fp32 % peak", "int8 agreement"]
    table = []
    for row in rows:
        medians = [_median(row, v) for v in VARIANTS]
        madds = next((r.madds for r in row["results"] if r.madds), None)
        agreement = row["agreement"].get(ORT_INT8, {})
        agree = agreement.get("pixel_agreement", agreement.get("cc"))
        agree_text = (f"{100 * agree:.2f}% px" if "pixel_agreement" in agreement else f"CC {agree:.4f}") \
            if agree is not None else None
        table.append([row["model"], "x".join(map(str, row["input_size"])), madds / 1e9 if madds else None,
                      *medians, _x(_ratio(medians[0], medians[1])), _x(_ratio(medians[1], medians[3])),
                      _efficiency(row, FP32), _efficiency(row, ORT_FP32), agree_text])
    lines = ["# deploykit: PyTorch eager vs ONNX Runtime on this CPU", ""]
    if tiny:
        lines += ["**Tiny test variants (--tiny): a smoke test, not the README's figures.**", ""]
    agreement_rows = [[row["model"], variant.split()[1], *(metrics.get(k) for k in AGREEMENT_KEYS)]
                      for row in rows for variant, metrics in row["agreement"].items()]
    lines += [markdown_table(headers, table), "", "## Agreement with ONNX Runtime fp32", "",
              markdown_table(["model", "precision", *AGREEMENT_KEYS], agreement_rows), "",
              "## Targets (issue 8)", ""]
    lines += [line for row in rows for line in _checks(row)]
    lines += ["", "## How it was measured", "",
              f"- CPU: {env.get('cpu')}, {env.get('cores')} cores ({', '.join(env.get('cpu_flags', []))}); "
              f"threads: {env.get('threads_requested') or 'all cores'}; load average before/after: "
              f"{env.get('load_average_1m')}.",
              f"- Peaks measured in this run: sgemm {peaks.gemm_gflops:.1f} GFLOP/s, copy {peaks.copy_gbps:.1f} GB/s"
              " (% peak = 2 x multiply-adds / median latency / sgemm peak).",
              f"- Versions: {', '.join(f'{k} {v}' for k, v in env.get('versions', {}).items() if v != '-')}.",
              "- Latency: median of end-to-end runs at batch 1 over rotating inputs (deploykit bench's harness); "
              "agreement: ONNX Runtime fp16/int8 against ONNX Runtime fp32 on scikit-image photographs "
              f"({', '.join(EVAL_PHOTOS)})"
              + "".join(sorted({f" and the images in {r['agreement_images']}" for r in rows
                                if r.get("agreement_images")})) + ".",
              *sorted({f"- INT8 accuracy budget: {', '.join(r['int8_accuracy_budget'])}." for r in rows
                       if r.get("int8_accuracy_budget")}),
              *(f"- {name}: FAILED: {why}" for name, why in failures.items()),
              *(f"- Note: {note}" for note in notes)]
    weights = {row["weights"] for row in rows}
    lines.append(f"- Weights: {', '.join(sorted(weights))}.")
    return "\n".join(lines) + "\n"


def _x(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}x"


def _json(rows: list[dict[str, Any]], failures: dict[str, str], peaks: Peaks, env: dict[str, Any],
          skipped: list[Skipped], notes: list[str], tiny: bool) -> dict[str, Any]:
    return {"tiny": tiny, "peaks": peaks.to_dict(), "environment": env, "failures": failures, "notes": notes,
            "skipped": [s.__dict__ for s in skipped],
            "models": [{**{k: v for k, v in row.items() if k != "results"},
                        "results": [r.to_dict() for r in row["results"]], "targets": _checks(row)}
                       for row in rows]}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    config = TINY_TIMING if args.tiny else FULL_TIMING
    if args.duration is not None:
        config = TimingConfig(warmup_s=config.warmup_s, duration_s=args.duration, min_iterations=10)
    weights = _weights(args.weights)
    markdown_path, json_path = args.out_dir / f"{args.name}.md", args.out_dir / f"{args.name}.json"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in (markdown_path, json_path):
        if path.exists() and not args.force:
            raise SystemExit(f"{path} exists; pass --force to overwrite it")
    probe = LoadProbe()
    peaks_after = measure_peaks_around(args.threads, say, quick=args.tiny)
    rows: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    skipped: list[Skipped] = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            rows.append(bench_model(name, args, weights.get(name), config, skipped))
        except DeployKitError as exc:  # one model's failure must not lose the others' figures
            failures[name] = str(exc)
            say(f"{name} failed: {exc}")
    load = probe.stop()
    peaks, warning = peaks_after()
    for row in rows:
        apply_peaks(row["results"], peaks)
    env = environment_manifest(args.threads, load)
    notes = [w for w in (load.warning(), warning) if w]
    write_text(markdown_path, markdown(rows, failures, peaks, env, args.tiny, notes), force=args.force)
    write_json(json_path, _json(rows, failures, peaks, env, skipped, notes, args.tiny), force=args.force)
    say(f"wrote {markdown_path} and {json_path}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
