"""FP32 vs FP16 vs INT8 with ONNX Runtime on this CPU: latency (medians, one interleaved run) and agreement.

For DeepLabv3+ (MobileNetV2), DeepLabv3+ (ResNet-50) and MSI-Net, at each model's default input size:
export to ONNX, build FP32 / FP16 / INT8 ONNX Runtime artifacts with `deploykit build-engine`'s library
(INT8: minmax calibration, the default, on benchmarks/data/calib), then in one process time the three artifacts
round-robin (so machine load hits all three alike) and compare FP16 and INT8 with FP32 on real images: the four
scikit-image photographs plus benchmarks/data/heldout (generated from photographs by train_small.py).
Weights: the small trained checkpoints of benchmarks/train_small.py where they exist (their own widths), and
the paper-width models with random weights (said in the "weights" column); random weights make near-tied
class scores, so their agreement is a lower bound.

Run: python benchmarks/precision_table.py [--runs 20] [--threads 2] [--only NAME] [--weights both|trained|random]
     [--quick]
Writes benchmarks/results/precision_table.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from deploykit.backends.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from deploykit.build import build_artifact  # noqa: E402
from deploykit.calib.precision import CalibrationOptions  # noqa: E402
from deploykit.environment import probe  # noqa: E402
from deploykit.export import onnx_from_torch  # noqa: E402
from deploykit.images import iter_folder, preprocess, sample_photographs  # noqa: E402
from deploykit.parity.metrics import numeric_metrics, task_metrics  # noqa: E402
from deploykit.report import markdown_table  # noqa: E402
from deploykit.sources import load_model  # noqa: E402
from deploykit.zoo import get_model_spec  # noqa: E402

MODELS = ("deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50", "msinet")
CHECKPOINTS = ROOT / "checkpoints"
DATA = ROOT / "data"


@dataclass(frozen=True)
class Variant:
    model: str
    weights: str  # "random (paper width)" or "trained small (...)"
    options: dict[str, Any]
    checkpoint: Path | None
    size: tuple[int, int]


def variants(names: tuple[str, ...], quick: bool, weights: str) -> list[Variant]:
    out: list[Variant] = []
    for name in names:
        spec = get_model_spec(name)
        size = spec.test_input_size if quick else spec.input_size
        checkpoint = CHECKPOINTS / f"{name}_small.pt"
        if checkpoint.is_file() and weights in ("both", "trained"):
            options = dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["options"])
            shown = ", ".join(f"{k}={v}" for k, v in options.items())
            out.append(Variant(name, f"trained small ({shown})", options, checkpoint, size))
        if weights in ("both", "random"):
            options = dict(spec.test_options) if quick else {}
            out.append(Variant(name, "random" + (" (test width)" if quick else " (paper width)"), options, None,
                               size))
    return out


def images(variant: Variant, limit: int | None) -> list[np.ndarray]:
    """The four parity photographs and the generated held-out images, preprocessed for the model."""
    spec = get_model_spec(variant.model)
    batch = [preprocess(photo, spec.preprocessing, variant.size) for photo in sample_photographs()]
    if (DATA / "heldout").is_dir():
        batch += list(iter_folder(DATA / "heldout", spec.preprocessing, variant.size))
    return batch[:limit]


def build(variant: Variant, workdir: Path, budget: list[str], say: Any) -> dict[str, Path]:
    loaded = load_model(variant.model, options=variant.options,
                        weights=str(variant.checkpoint) if variant.checkpoint else None)
    source = workdir / "model.onnx"
    say(f"{variant.model} [{variant.weights}]: export at {variant.size[0]}x{variant.size[1]}")
    result = onnx_from_torch(loaded, source, input_shape=(1, 3, *variant.size), dynamic=False, force=True)
    if not result.passed:
        raise SystemExit(f"{variant.model}: export does not match PyTorch; see `deploykit export`")
    calib = CalibrationOptions(data=str(DATA / "calib") if (DATA / "calib").is_dir() else "photos")
    paths = {}
    for precision in ("fp32", "fp16", "int8"):
        say(f"{variant.model}: build {precision}")
        built = build_artifact(source, workdir / f"model.{precision}.ort.onnx", precision=precision,
                               backend="onnxruntime", calibration=calib if precision == "int8" else None,
                               accuracy_budget=budget if precision == "int8" else None, force=True)
        paths[precision] = built.path
    paths["source"] = source
    return paths


def measure(paths: dict[str, Path], inputs: list[np.ndarray], task: str, runs: int, threads: int
            ) -> dict[str, Any]:
    """Median latency per precision from interleaved runs, and FP16/INT8 agreement with FP32."""
    runners = {p: OnnxRuntimeRunner(paths[p], threads=threads) for p in ("fp32", "fp16", "int8")}
    for runner in runners.values():
        runner.__enter__()
    try:
        name = runners["fp32"].input_specs()[0].name
        outputs = {p: [next(iter(r.infer({name: x}).values())) for x in inputs] for p, r in runners.items()}
        feed = {name: inputs[0]}
        for runner in runners.values():  # warm-up
            runner.infer(feed)
        times: dict[str, list[float]] = {p: [] for p in runners}
        for _ in range(runs):
            for precision, runner in runners.items():
                started = time.perf_counter()
                runner.infer(feed)
                times[precision].append(time.perf_counter() - started)
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    reference = np.concatenate(outputs["fp32"])
    result: dict[str, Any] = {"median_ms": {p: 1000 * float(np.median(t)) for p, t in times.items()}}
    for precision in ("fp16", "int8"):
        candidate = np.concatenate(outputs[precision])
        metrics = task_metrics(task, reference, candidate)
        metrics["cosine"] = numeric_metrics(reference, candidate).cosine
        result[precision] = metrics
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="Timed runs per precision (interleaved).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=MODELS, action="append", default=None)
    parser.add_argument("--quick", action="store_true", help="Tiny test variants (a smoke run).")
    parser.add_argument("--weights", choices=["both", "trained", "random"], default="both",
                        help="Which variants: the trained small checkpoints, the random paper-width models, or both.")
    parser.add_argument("--images", type=int, default=None, help="Use at most this many agreement images.")
    parser.add_argument("--accuracy-budget", action="append", default=[], help="INT8 budget, as build-engine.")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "precision_table.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def say(message: str) -> None:
        print(f"… {message}", file=sys.stderr, flush=True)

    rows, records = [], []
    for variant in variants(tuple(args.only or MODELS), args.quick, args.weights):
        task = get_model_spec(variant.model).task
        with tempfile.TemporaryDirectory(prefix="precision-table-") as tmp:
            paths = build(variant, Path(tmp), args.accuracy_budget, say)
            inputs = images(variant, args.images)
            say(f"{variant.model}: {len(inputs)} agreement images, {args.runs} timed runs per precision")
            result = measure(paths, inputs, task, args.runs, args.threads)
        ms = result["median_ms"]
        key = "pixel_agreement" if task == "segmentation" else "cc"
        rows.append([variant.model, variant.weights, f"{variant.size[0]}x{variant.size[1]}", round(ms["fp32"], 1),
                     round(ms["fp16"], 1), round(ms["int8"], 1), round(ms["int8"] / ms["fp32"], 3),
                     f"{key} {result['fp16'][key]:.4f}", f"{key} {result['int8'][key]:.4f}",
                     round(result["int8"]["cosine"], 4)])
        records.append({"model": variant.model, "weights": variant.weights, "options": variant.options,
                        "input_size": list(variant.size), "images": len(inputs), **result})
    headers = ["model", "weights", "input", "FP32 ms", "FP16 ms", "INT8 ms", "INT8/FP32", "FP16 vs FP32",
               "INT8 vs FP32", "INT8 cosine"]
    table = markdown_table(headers, rows)
    print(table)
    env = probe()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "runs": args.runs, "threads": args.threads,
                                    "cpu": env.cpu, "cores": env.cores, "versions": env.versions,
                                    "rows": records, "markdown": table}, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
