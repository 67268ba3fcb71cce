"""Which INT8 accuracy-recovery step gives how much (issue 20), and deploykit's TensorRT-form INT8 graph against
NVIDIA ModelOpt's on the same model; every figure is agreement with PyTorch eager on benchmarks/data/heldout.

    python benchmarks/int8_recovery.py --out-dir benchmarks/results
    python benchmarks/int8_recovery.py --modelopt-python /path/to/modelopt-venv/bin/python --out-dir ...

The models are bench_cpu_peers.py's (the trained DeepLabv3+ MobileNetV2 at 513x513 and MSI-Net at 240x320 from
benchmarks/checkpoints, exported with static shapes), calibrated on the same first 16 images of
benchmarks/data/calib. Each configuration is built three ways and scored:
- TensorRT form: the graph `build-engine --backend tensorrt` writes and TensorRT would compile (symmetric INT8;
  by default the float remainder in FP16 and depthwise/grouped convolutions kept in FP16), run by ONNX Runtime
  as TensorRT computes it (deploykit.evaluate.session_as_written). Not a TensorRT measurement;
- ONNX Runtime: the artifact `build-engine --backend onnxruntime` writes (UINT8 activations on the observed
  ranges; 7-bit weights on CPUs without VNNI, depthwise convs excepted), run by ONNX Runtime;
- OpenVINO: the IR `build-engine --backend openvino` writes, run by OpenVINO's CPU plugin.
The configurations add one step at a time to plain INT8 (minmax ranges, nearest rounding, no recovery); MSE
ranges and the defaults stand alone, and the last rows take the other range methods (and --calib-method auto)
with the default recovery steps (bias correction is off by default after entropy ranges; one row asks for it).
Where the build chooses the range method (the defaults: auto for TensorRT; auto), a cell names the method kept.
With --modelopt-python (a Python with nvidia-modelopt[onnx] installed, in a virtual environment of its own:
never a dependency of deploykit), ModelOpt's ONNX quantizer (`python -m modelopt.onnx.quantization`, CPU
calibration) quantizes the same model.onnx on the same 16 images, with its default settings and with max
calibration and an FP32 remainder; its graphs are scored in the same TensorRT form, beside deploykit's
TensorRT graphs, one of them with the convolutions ModelOpt's default graph leaves in float left float too
(--keep-float: the same placement). Figures differ by CPU only through the ONNX Runtime and OpenVINO rows'
weight width (VNNI or not).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import bench_cpu_peers as peers  # noqa: E402

from deploykit.backends.base import backend_of  # noqa: E402
from deploykit.calib.adaround import AdaRound  # noqa: E402
from deploykit.calib.bias_correction import BiasCorrection  # noqa: E402
from deploykit.calib.distill import Distillation  # noqa: E402
from deploykit.precision.passes import CalibrationOptions  # noqa: E402
from deploykit.precision.recovery import EQUALIZE, RecoveryOptions  # noqa: E402
from deploykit.precision.table import precision_of  # noqa: E402
from deploykit.report.format import markdown_table  # noqa: E402

MODELS = ("deeplabv3plus_mobilenetv2", "msinet")
PLAIN = RecoveryOptions(bias_correction=BiasCorrection(False), equalization=EQUALIZE["none"], rounding=None)
BIAS = replace(PLAIN, bias_correction=BiasCorrection())
CLE_RELU = replace(BIAS, equalization=EQUALIZE["relu"])
CLE_ALL = replace(BIAS, equalization=EQUALIZE["relu+relu6"])
ADAROUND = replace(CLE_ALL, rounding=AdaRound())
# (label, range method (None: the backend's default), recovery): the ablation's rows
CONFIGS: tuple[tuple[str, str | None, RecoveryOptions], ...] = (
    ("plain INT8 (minmax, nearest, no recovery)", "minmax", PLAIN),
    ("+ bias correction", "minmax", BIAS),
    ("+ bias correction + CLE (ReLU pairs)", "minmax", CLE_RELU),
    ("+ bias correction + CLE (ReLU and ReLU6 pairs)", "minmax", CLE_ALL),
    ("+ bias correction + CLE (both) + AdaRound", "minmax", ADAROUND),
    ("MSE ranges, no recovery", "mse", PLAIN),
    ("deploykit's defaults (range method: auto for TensorRT, minmax on CPUs)", None, RecoveryOptions()),
    ("+ bias correction + CLE (ReLU6 pairs only)", "minmax", replace(BIAS, equalization=EQUALIZE["relu6"])),
    ("entropy ranges + bias correction + CLE (ReLU6 pairs only)", "entropy",
     replace(BIAS, equalization=EQUALIZE["relu6"])),
    ("entropy ranges, defaults (no bias correction after entropy)", "entropy", RecoveryOptions()),
    ("percentile ranges, defaults", "percentile", RecoveryOptions()),
    ("MSE ranges, defaults", "mse", RecoveryOptions()),
    ("--calib-method auto, defaults", "auto", RecoveryOptions()),
    ("+ bias correction + CLE (both) + AdaRound, asymmetric (inputs from the INT8 graph)", "minmax",
     replace(CLE_ALL, rounding=AdaRound(asymmetric=True))),
    ("deploykit's defaults + distillation (96 steps)", None, replace(RecoveryOptions(), distillation=Distillation())),
)
CHOSEN = (None, "auto")  # rows whose range method the build chooses: their cells name the method kept


def say(message: object) -> None:
    print(f"[int8_recovery] {message}", file=sys.stderr, flush=True)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--configs", default="", help="comma-separated row numbers (1-based) to run; default all")
    parser.add_argument("--modelopt-python", default="", help="a Python with nvidia-modelopt[onnx] (optional)")
    parser.add_argument("--skip-backends", default="", help="comma-separated: tensorrt, onnxruntime, openvino")
    parser.add_argument("--tiny", action="store_true", help="the zoo's tiny test variants (smoke test)")
    peers.data_options(parser, name="int8_recovery", threads=2)
    return parser.parse_args(argv)


def _scores(p: peers.Prepared, outputs: list[np.ndarray], reference: np.ndarray) -> dict[str, float]:
    from deploykit.metrics.scores import task_metrics

    return task_metrics(p.task, reference, np.concatenate([np.asarray(o, np.float32) for o in outputs]))


def tensorrt_form(graph: Any, p: peers.Prepared) -> list[np.ndarray]:
    """The graph's outputs on the held-out images as TensorRT computes it (deploykit.evaluate.session_as_written)."""
    from deploykit.evaluate import session_as_written

    session = session_as_written(graph.SerializeToString())
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x})[0] for x in p.heldout]


def _built(p: peers.Prepared, backend: str, method: str | None, recovery: RecoveryOptions, args: argparse.Namespace,
           keep_float: Sequence[str] = (), **extra: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Build with `backend` and run the artifact (TensorRT: its graph, in TensorRT form) on the held-out images;
    `keep_float` (TensorRT only) as --keep-float."""
    import onnx

    from deploykit.build import build_artifact
    from deploykit.targets.resolve import open_target

    suffix = {"tensorrt": ".int8.trt-form.onnx", "onnxruntime": ".int8.ort.onnx", "openvino": ".int8.xml"}[backend]
    out = p.folder / f"ablation{suffix}"
    options = CalibrationOptions(data=args.calib_data, n=args.calib_n, method=method, recovery=recovery, **extra)
    if backend == "tensorrt":  # no TensorRT here: the INT8 pass alone, as build-engine --backend tensorrt runs it
        from deploykit.io.digests import sha256_file
        from deploykit.io.metadata import read_metadata
        from deploykit.precision.passes import int8_graph

        source = onnx.load(str(p.onnx))
        result = int8_graph(source, read_metadata(source), sha256_file(p.onnx), options, keep_float=keep_float,
                            accuracy_budget=(), layout="inputs", backend=backend_of("tensorrt"), threads=args.threads,
                            progress=lambda _m: None)
        return tensorrt_form(result.model, p), result.report
    built = build_artifact(p.onnx, out, precision=precision_of("int8"), backend=backend_of(backend),
                           calibration=options, force=True,
                           threads=args.threads, progress=lambda _m: None)
    target = open_target(str(built.path), threads=args.threads, sidecar=built.sidecar)
    with target.runner as runner:
        outputs = [next(iter(runner.infer({target.input_name: x}).values())) for x in p.heldout]
    return outputs, built.report


def ablation(p: peers.Prepared, reference: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    chosen = {int(c) for c in args.configs.split(",") if c.strip()} or set(range(1, len(CONFIGS) + 1))
    skip = {b.strip() for b in args.skip_backends.split(",") if b.strip()}
    for number, (label, method, recovery) in enumerate(CONFIGS, start=1):
        if number not in chosen:
            continue
        row: dict[str, Any] = {"config": label, "method": method, "recovery": recovery.to_dict()}
        for backend in ("tensorrt", "onnxruntime", "openvino"):
            if backend in skip:
                continue
            started = time.perf_counter()
            try:
                outputs, report = _built(p, backend, method, recovery, args)
            except ImportError as exc:
                row[backend] = {"skipped": str(exc)}
                continue
            row[backend] = {**_scores(p, outputs, reference), "build_s": round(time.perf_counter() - started, 1),
                            "quantized": report.get("quantized_nodes"), "method": report["method"]["method"],
                            **({"method_choice": report["method_choice"]} if "method_choice" in report else {})}
            say(f"{p.name}: {label}: {backend} {row[backend]}")
        rows.append(row)
    return rows


def modelopt(p: peers.Prepared, reference: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """ModelOpt's ONNX INT8 quantizer on the same model and images, scored in TensorRT form."""
    import onnx

    if not args.modelopt_python:
        return []
    calib = p.folder / "calib16.npy"
    np.save(calib, np.concatenate(p.calib))
    rows = []
    for label, extra in (("ModelOpt, its defaults", []),
                         ("ModelOpt, max calibration, FP32 remainder", ["--calibration_method", "max",
                                                                       "--high_precision_dtype", "fp32"])):
        out = p.folder / f"modelopt-{len(rows)}.onnx"
        command = [args.modelopt_python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(p.onnx),
                   "--quantize_mode", "int8", "--calibration_data_path", str(calib), "--calibration_eps", "cpu",
                   "--output_path", str(out), *extra]
        say(f"{p.name}: {' '.join(command[1:])}")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.is_file():
            rows.append({"config": label, "failed": (done.stderr or done.stdout).strip().splitlines()[-1:]})
            continue
        outputs = tensorrt_form(onnx.load(str(out)), p)
        rows.append({"config": label, "command": " ".join(command[1:]), "tensorrt": _scores(p, outputs, reference)})
    floats = _float_convs(p.folder / "modelopt-0.onnx", onnx.load(str(p.onnx)))
    for label, method, grouped, keep in (
            ("deploykit, its TensorRT defaults", None, None, ()),
            ("deploykit, depthwise convs INT8 too", None, "int8", ()),
            ("deploykit, --calib-method minmax (the default before auto)", "minmax", None, ()),
            (f"deploykit, the {len(floats)} convs ModelOpt's default leaves float left float too", None, None, floats)):
        if label.endswith("float too") and not floats:
            continue
        outputs, report = _built(p, "tensorrt", method, RecoveryOptions(), args, keep_float=keep, grouped=grouped)
        rows.append({"config": label, "keep_float": list(keep),
                     "tensorrt": {**_scores(p, outputs, reference), "method": report["method"]["method"]}})
    return rows


def _float_convs(graph: Path, source: Any) -> list[str]:
    """The weighted nodes of `source` whose activation input ModelOpt's `graph` does not dequantize (its
    heuristics leave them float), by name; none when its graph is absent or names them otherwise."""
    import onnx

    if not graph.is_file():
        return []
    quantized = onnx.load(str(graph))
    dequantized = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weighted = {n.name for n in source.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")}
    return sorted(n.name for n in quantized.graph.node if n.name in weighted and n.input[0] not in dequantized)


def markdown(results: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = ["# INT8 accuracy recovery: which step gives how much", ""]
    for result in results:
        key = result["metric"]
        lines += [f"## {result['model']} at {result['input_size'][0]}x{result['input_size'][1]} ({result['weights']})",
                  "", f"{key.replace('_', ' ')} against PyTorch eager on {result['images']} held-out images:", ""]
        table = [[r["config"], *(_cell(r.get(b), key, chosen=r["method"] in CHOSEN)
                                 for b in ("tensorrt", "onnxruntime", "openvino"))] for r in result["ablation"]]
        lines += [markdown_table(["configuration", "TensorRT form", "ONNX Runtime artifact", "OpenVINO artifact"],
                                 table), ""]
        if result["modelopt"]:
            table = [[r["config"], _cell(r.get("tensorrt"), key, chosen=r["config"].startswith("deploykit"))
                      if "failed" not in r else f"failed: {r['failed']}"] for r in result["modelopt"]]
            lines += ["TensorRT form against NVIDIA ModelOpt's ONNX quantizer (same model.onnx, same 16 images):", "",
                      markdown_table(["graph", f"{key.replace('_', ' ')} (TensorRT form)"], table), ""]
    lines += ["## How it was measured", "",
              f"- Command: `{env['command']}` ({env['seconds']} s, {env['threads']} thread(s)).",
              f"- Load: 1-minute load average {env['load_average_before']:.2f} before, {env['load_average_after']:.2f} "
              "after, on 2 cores shared with other jobs (agreement does not depend on load; build seconds do).",
              f"- CPU: {env['cpu']}; flags: {', '.join(env['cpu_flags'])} (the ONNX Runtime and OpenVINO rows use "
              "7-bit weights on CPUs without VNNI, depthwise convs full range).",
              f"- Versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}.",
              "- TensorRT form: the graph run by ONNX Runtime as TensorRT computes it, not a TensorRT measurement.", ""]
    return "\n".join(lines)


def _cell(scores: dict[str, Any] | None, key: str, *, chosen: bool = False) -> str:
    """A score cell; `chosen`: also the range method the build kept."""
    if not scores:
        return "-"
    if "skipped" in scores:
        return "skipped"
    extra = f", mIoU {scores['miou']:.4f}" if "miou" in scores else f", KLD {scores['kld']:.4f}" if "kld" in scores \
        else ""
    return f"{scores[key]:.4f}{extra}" + (f" ({scores['method']})" if chosen and "method" in scores else "")


def main(argv: Sequence[str] | None = None) -> int:
    from deploykit.environment import cpu_flags, cpu_model, package_version

    args = _parse(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    peer_args = peers.study_args(args, tiny=args.tiny)
    weights = peers._weights(peer_args)
    results = []
    load_before, started = os.getloadavg()[0], time.perf_counter()
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        p = peers.prepare(name, peer_args, weights.get(name))
        eager = peers.torch_eager(p, args.threads)
        reference = np.concatenate([np.asarray(eager.run(x), np.float32) for x in p.heldout])
        eager.close()
        results.append({"model": name, "input_size": list(p.size), "weights": p.weights, "images": len(p.heldout),
                        "metric": peers.AGREEMENT[p.task], "ablation": ablation(p, reference, args),
                        "modelopt": modelopt(p, reference, args)})
    flags = cpu_flags()
    env = {"cpu": cpu_model(), "cpu_flags": [f for f in peers.SHOWN_FLAGS if f in flags],
           "versions": {n: package_version(n) or "absent" for n in ("deploykit", "onnxruntime", "openvino", "torch")},
           "command": " ".join(["python", "benchmarks/int8_recovery.py",
                                *(argv if argv is not None else sys.argv[1:])]),
           "threads": args.threads, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
           "seconds": round(time.perf_counter() - started, 1)}
    peers.publish(args.out_dir, args.name, {"environment": env, "results": results}, markdown(results, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
