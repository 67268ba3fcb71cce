"""deploykit's ONNX Runtime INT8 artifact against onnxruntime.quantization.quantize_static and FP32, on this CPU.

    python benchmarks/bench_ort_int8.py --out-dir /tmp/ortint8 \
        --model deeplabv3plus_mobilenetv2 --weights benchmarks/checkpoints/deeplabv3plus_mobilenetv2_small.pt \
        --set width_multiplier=0.35
    python benchmarks/bench_ort_int8.py --out-dir /tmp/ortint8-full --model deeplabv3plus_resnet50   # random weights

Issue 15 items 1 and 3. One export (static 1x3x513x513), three models timed round-robin in one run (medians,
so a shared CPU disturbs all three alike; ratios are what to read):
- "fp32": the exported ONNX model (ONNX Runtime applies its "all" optimizations at load, as for every target);
- "deploykit int8": deploykit.build.build_artifact(precision="int8", backend="onnxruntime"), calibrated on the
  first 16 images of benchmarks/data/calib;
- "ort int8": quantize_static on the same 16 preprocessed images: QDQ, per-channel, MinMax, QUInt8 activations,
  QInt8 weights (ONNX Runtime's recommended CPU recipe, its quantization guide).
Agreement is pixel agreement of the argmax with fp32 on benchmarks/data/heldout. `float_convs` counts the
convolutions still running in float after ONNX Runtime's optimizations (its profiler's node events).
The functions are importable (benchmarks/bench_cpu_peers.py may reuse them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from deploykit.backends.base import backend_of
from deploykit.evaluate import session_options
from deploykit.precision.table import PRECISIONS

CALIB = Path(__file__).parent / "data" / "calib"
HELDOUT = Path(__file__).parent / "data" / "heldout"
CALIB_N = 16
FLOAT_CONVS = ("Conv", "FusedConv", "ConvTranspose")
INT8_CONVS = ("QLinearConv", "ConvInteger", "QLinearConvTranspose")


def _images(folder: Path, model: Path, n: int | None) -> list[np.ndarray]:
    import onnx

    from deploykit.io.images import iter_folder
    from deploykit.io.metadata import read_metadata

    meta = read_metadata(onnx.load(str(model), load_external_data=False))
    assert meta is not None and meta.preprocessing is not None and meta.input_size is not None
    size = (int(meta.input_size[0]), int(meta.input_size[1]))
    return list(iter_folder(folder, meta.preprocessing, size, limit=n))


def export(name: str, folder: Path, *, weights: str | None, options: Mapping[str, Any]) -> Path:
    """The zoo model `name` exported at its benchmark input size (static shape) to folder/model.onnx."""
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.targets.resolve import open_target
    from deploykit.zoo import get_model_spec

    spec = get_model_spec(name)
    opened = open_target(name, options=dict(options), weights=weights)
    assert opened.loaded is not None
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "model.onnx"
    result = onnx_from_torch(opened.loaded, out, input_shape=(1, 3, *spec.input_size), dynamic=False, force=True)
    if not result.passed:
        raise SystemExit(f"{name} does not export faithfully")
    return out


def deploykit_int8(fp32: Path, out: Path, threads: int | None = None) -> Path:
    from deploykit.build import build_artifact
    from deploykit.precision.passes import CalibrationOptions

    calibration = CalibrationOptions(data=str(CALIB), n=CALIB_N, use_cache=False)
    build_artifact(fp32, out, precision=PRECISIONS["int8"], backend=backend_of("onnxruntime"), calibration=calibration,
                   threads=threads,
                   force=True)
    return out


def relower(artifact: Path, threads: int | None = None) -> None:
    """Recompile a deploykit ORT artifact from the precision graph kept beside it (the current lowering)."""
    from deploykit.backends.onnxruntime.compile import ort_model_from_onnx

    ort_model_from_onnx(artifact.with_suffix(".int8.onnx"), artifact, force=True, threads=threads)


def ort_int8(fp32: Path, out: Path) -> Path:
    """quantize_static with ONNX Runtime's CPU recipe on the same calibration images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    images = _images(CALIB, fp32, CALIB_N)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {name: item.astype(np.float32)}

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def _session(path: Path, threads: int, profile: str | None = None) -> ort.InferenceSession:
    options = session_options(threads, optimization="all")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def profile_ops(path: Path, x: np.ndarray, threads: int = 2, runs: int = 3) -> dict[str, Any]:
    """Per op type: node count and share of the time, from ONNX Runtime's profiler; plus the float convs."""
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(path, threads, profile=str(Path(tmp) / "ort"))
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    time_by: Counter[str] = Counter()
    names: dict[str, set[str]] = {}
    for event in nodes:
        op = event["args"]["op_name"]
        time_by[op] += event["dur"]
        names.setdefault(op, set()).add(event["name"])
    total = sum(time_by.values()) or 1
    ops = {op: {"nodes": len(names[op]), "share": round(time_by[op] / total, 3)} for op in time_by}
    floats = sum(len(names.get(op, ())) for op in FLOAT_CONVS)
    ints = sum(len(names.get(op, ())) for op in INT8_CONVS)
    return {"float_convs": floats, "int8_convs": ints, "ops": dict(sorted(ops.items(), key=lambda i: -i[1]["share"]))}


def time_round_robin(paths: Mapping[str, Path], x: np.ndarray, *, threads: int = 2, rounds: int = 15,
                     warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each model, timed round-robin by deploykit's timing core (deploykit.bench.interleave:
    rotating order, untimed pauses, so load changes hit all alike)."""
    from deploykit.bench.interleave import TimingConfig, time_interleaved

    sessions = {label: _session(path, threads) for label, path in paths.items()}

    def step(session: Any) -> Any:
        feed = {session.get_inputs()[0].name: x}
        return lambda _i: session.run(None, feed)
    run = time_interleaved({label: step(s) for label, s in sessions.items()},
                           TimingConfig(warmup_s=0.0, iterations=rounds, min_warmup_iterations=warmup))
    return {label: statistics.median(t.samples_ms) for label, t in run.timings.items()}


def agreement(paths: Mapping[str, Path], reference: str, images: Sequence[np.ndarray], threads: int = 2
              ) -> dict[str, float]:
    """Share of pixels whose argmax class equals the reference model's, over `images`."""
    labels: dict[str, list[np.ndarray]] = {}
    for label, path in paths.items():
        session = _session(path, threads)
        name = session.get_inputs()[0].name
        labels[label] = [session.run(None, {name: x})[0].argmax(axis=1) for x in images]
    ref = labels[reference]
    return {label: float(np.mean([np.mean(a == b) for a, b in zip(ref, got, strict=True)]))
            for label, got in labels.items() if label != reference}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="deeplabv3plus_mobilenetv2")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="zoo model option")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--reuse", action="store_true", help="keep models already in --out-dir")
    parser.add_argument("--relower", action="store_true",
                        help="with --reuse: recompile deploykit's artifact from its kept precision graph")
    return parser.parse_args(argv)


def _option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    out: Path = args.out_dir
    fp32 = out / "model.onnx"
    if not (args.reuse and fp32.exists()):
        export(args.model, out, weights=args.weights, options=dict(_option(s) for s in args.set))
    paths = {"fp32": fp32, "deploykit int8": out / "model-int8-ort.onnx", "ort int8": out / "model-qdq-ort.onnx"}
    if not (args.reuse and paths["deploykit int8"].exists()):
        deploykit_int8(fp32, paths["deploykit int8"], threads=args.threads)
    elif args.relower:
        relower(paths["deploykit int8"], threads=args.threads)
    if not (args.reuse and paths["ort int8"].exists()):
        ort_int8(fp32, paths["ort int8"])
    heldout = _images(HELDOUT, fp32, None)
    result: dict[str, Any] = {"model": args.model, "weights": args.weights, "threads": args.threads}
    from deploykit.environment import cpu_flags, cpu_model

    result["cpu"] = cpu_model()
    result["vnni"] = sorted(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})
    result["profile"] = {label: profile_ops(path, heldout[0], args.threads) for label, path in paths.items()}
    result["agreement"] = agreement(paths, "fp32", heldout, args.threads)
    result["median_ms"] = time_round_robin(paths, heldout[0], threads=args.threads, rounds=args.rounds)
    ms = result["median_ms"]
    result["ratios"] = {"deploykit int8 / ort int8": ms["deploykit int8"] / ms["ort int8"],
                        "fp32 / deploykit int8": ms["fp32"] / ms["deploykit int8"],
                        "fp32 / ort int8": ms["fp32"] / ms["ort int8"]}
    text = json.dumps(result, indent=2)
    (out / "bench_ort_int8.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
