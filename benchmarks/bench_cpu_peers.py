"""deploykit against every CPU peer, timed round-robin in one run: PyTorch eager, torch.compile, ONNX Runtime's
default session on model.onnx, deploykit's ONNX Runtime fp32 / int8 artifacts, ONNX Runtime's quantize_static
int8, OpenVINO fp32 (openvino.convert_model of model.onnx), OpenVINO running deploykit's own INT8 Q/DQ graph
(the openvino backend, both Q/DQ layouts) and OpenVINO + NNCF int8 (nncf.quantize), with medians and p90 and,
for every contender, its task agreement with PyTorch eager on benchmarks/data/heldout.

    python benchmarks/bench_cpu_peers.py --out-dir benchmarks/results                  # all three models
    python benchmarks/bench_cpu_peers.py --models deeplabv3plus_mobilenetv2 --rounds 10 --out-dir /tmp/peers
    python benchmarks/bench_cpu_peers.py --tiny --rounds 3 --out-dir /tmp/peers-tiny   # smoke test

Round-robin: each round runs every contender once on the same input (the inputs rotate over the held-out
images; the contenders' order rotates each round), so a burst of load elsewhere hits every contender alike
instead of whichever was being timed then. Every INT8 contender calibrates on the same --calib-n images of
--calib-data (deploykit takes the first N of the folder in name order; the peers are fed exactly those).
Peers that are not installed (openvino, nncf, ORT's quantizer, a compiler for torch.compile) are skipped with
a note. All OpenVINO contenders are compiled alike: PERFORMANCE_HINT LATENCY, --threads, and inference
precision f32, since on CPUs with AVX512_BF16 or AMX OpenVINO's default is bf16 (then also timed, as
"OpenVINO fp32 model, default hint", and kept out of the fp32 targets). Figures differ by CPU (VNNI, AVX-512,
AMX and the core count matter most); the Markdown records the CPU model and flags it ran on.

Targets (issues 15 and 20, ratios within one run): deploykit's fastest INT8 artifact within 10% of OpenVINO +
NNCF INT8 or faster, at equal or better agreement than NNCF's and ORT quantize_static's; deploykit's ORT INT8
artifact no slower than quantize_static's; deploykit's fastest FP32 artifact at least as fast as OpenVINO FP32
and ORT's default session. The TensorRT-form INT8 graph against NVIDIA ModelOpt's, and which accuracy-recovery
step gives how much, are benchmarks/int8_recovery.py's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.base import backend_of
from deploykit.bench.load import MachineLoad
from deploykit.io.outputs import write_json, write_text
from deploykit.precision.table import precision_of
from deploykit.report.format import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # --tiny: tests/fixtures/tiny.py
from tests.fixtures.tiny import TINY

ROOT = Path(__file__).resolve().parent
MODELS = ("deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50", "msinet")
CHECKPOINTS = {"deeplabv3plus_mobilenetv2": ROOT / "checkpoints" / "deeplabv3plus_mobilenetv2_small.pt",
               "msinet": ROOT / "checkpoints" / "msinet_small.pt"}
AGREEMENT = {"segmentation": "pixel_agreement", "saliency": "cc"}
SHOWN_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "amx_bf16", "amx_int8")
REFERENCE = "PyTorch eager"


def say(message: object) -> None:  # a str or a deploykit.types.Progressed
    print(f"[bench_cpu_peers] {message}", file=sys.stderr, flush=True)


@dataclass
class Contender:
    label: str
    precision: str
    by: str  # "deploykit" or "peer"
    run: Callable[[np.ndarray], np.ndarray]
    close: Callable[[], None] = lambda: None
    note: str = ""
    times_ms: list[float] = field(default_factory=list)


@dataclass
class Prepared:
    name: str
    task: str
    size: tuple[int, int]
    folder: Path
    onnx: Path
    loaded: Any
    calib: list[np.ndarray]
    heldout: list[np.ndarray]
    weights: str
    spare: list[np.ndarray]  # the --calib-data images beyond --calib-n: no contender calibrated on them


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    parser.add_argument("--weights", action="append", default=[], metavar="MODEL=FILE",
                        help="checkpoint per model (default: benchmarks/checkpoints/ for MobileNetV2 and MSI-Net)")
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per contender first")
    parser.add_argument("--skip", default="", help="comma-separated contender labels not to run")
    parser.add_argument("--int8-distill", type=int, default=None, metavar="STEPS",
                        help="deploykit's INT8 builds with build-engine --int8-distill STEPS (default: its default)")
    parser.add_argument("--tiny", action="store_true", help="the zoo's tiny test variants (smoke test)")
    data_options(parser, name="cpu_peers", threads=os.cpu_count() or 1)
    return parser.parse_args(argv)


def data_options(parser: argparse.ArgumentParser, *, name: str, threads: int) -> None:
    """The options this script shares with the INT8 studies (int8_recovery, int8_keep_curve,
    int8_input_sensitivity): threads, calibration and agreement images, where results go."""
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--calib-data", default=str(ROOT / "data" / "calib"))
    parser.add_argument("--calib-n", type=int, default=16)
    parser.add_argument("--images", default=str(ROOT / "data" / "heldout"), help="agreement (the report's) images")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "results")
    parser.add_argument("--name", default=name, help="OUT_DIR/NAME.md and NAME.json")


def study_args(args: argparse.Namespace, *, tiny: bool = False) -> argparse.Namespace:
    """What `prepare` reads, from a study's data_options: models exported under OUT_DIR/NAME."""
    return argparse.Namespace(tiny=tiny, threads=args.threads, out_dir=args.out_dir / args.name,
                              calib_data=args.calib_data, calib_n=args.calib_n, images=args.images, weights=[])


def _weights(args: argparse.Namespace) -> dict[str, str]:
    chosen = {} if args.tiny else {k: str(v) for k, v in CHECKPOINTS.items() if v.is_file()}
    for pair in args.weights:
        model, _, path = pair.partition("=")
        chosen[model] = path
    return chosen


def prepare(name: str, args: argparse.Namespace, weights: str | None) -> Prepared:
    """Load the model, export model.onnx (static shape) and preprocess the calibration and held-out images."""
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.io.images import iter_folder
    from deploykit.targets.resolve import open_target
    from deploykit.zoo import get_model_spec

    spec = get_model_spec(name)
    size = tuple(TINY[spec.name].input_size if args.tiny else spec.input_size)
    opened = open_target(name, options=dict(TINY[spec.name].options) if args.tiny else {}, weights=weights,
                         threads=args.threads)
    folder = args.out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    say(f"{name}: exporting at 1x3x{size[0]}x{size[1]} ({weights or 'random initialisation'})")
    exported = onnx_from_torch(opened.loaded, folder / "model.onnx", input_shape=(1, 3, *size), dynamic=False,
                               force=True, progress=say)
    if not exported.passed:
        raise SystemExit(f"{name} does not export faithfully; see `deploykit export {name}`")
    folder_images = list(iter_folder(args.calib_data, spec.preprocessing, size))
    heldout = list(iter_folder(args.images, spec.preprocessing, size))
    return Prepared(name, spec.task, size, folder, folder / "model.onnx", opened.loaded,
                    folder_images[:args.calib_n], heldout, _shown(weights) if weights else "random initialisation",
                    folder_images[args.calib_n:])


def _shown(path: str | os.PathLike[str]) -> str:
    """A path as the results show it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT.parent)) if resolved.is_relative_to(ROOT.parent) else str(path)


# --- contenders: each returns a Contender, or raises (the caller records a skip note) -------------------------

def _from_runner(label: str, precision: str, by: str, runner: Any, note: str = "") -> Contender:
    runner.__enter__()
    name = runner.input_specs()[0].name
    return Contender(label, precision, by, lambda x: next(iter(runner.infer({name: x}).values())),
                     lambda: runner.__exit__(None, None, None), note)


def torch_eager(p: Prepared, threads: int) -> Contender:
    from deploykit.backends.torch import TorchRunner

    return _from_runner(REFERENCE, "fp32", "peer", TorchRunner(p.loaded.module, threads=threads))


def torch_compiled(p: Prepared, threads: int) -> Contender:
    import torch

    from deploykit.backends.torch import outputs_as_tuple

    torch.set_num_threads(threads)
    compiled = torch.compile(p.loaded.module.eval())

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return outputs_as_tuple(compiled(torch.from_numpy(x)))[0].numpy()

    say(f"{p.name}: torch.compile (inductor) compiles on the first call")
    run(p.heldout[0])
    return Contender("torch.compile", "fp32", "peer", run, note="inductor, default mode")


def ort_default(p: Prepared, threads: int) -> Contender:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the only change from a default session: the same thread count
    session = ort.InferenceSession(str(p.onnx), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Contender("ORT default session", "fp32", "peer", lambda x: session.run(None, {name: x})[0],
                     note="model.onnx, default SessionOptions")


def _calibration(args: argparse.Namespace) -> Any:
    """deploykit's calibration options for this run (with --int8-distill when given)."""
    from deploykit.precision.passes import CalibrationOptions
    from deploykit.precision.recovery import recovery_options

    return CalibrationOptions(data=args.calib_data, n=args.calib_n,
                              recovery=recovery_options(distill_steps=getattr(args, "int8_distill", None)))


def _build(p: Prepared, precision: str, args: argparse.Namespace) -> Path:
    from deploykit.build import build_artifact

    out = p.folder / f"model-{precision}-ort.onnx"
    say(f"{p.name}: deploykit build-engine --backend onnxruntime --{precision}")
    build_artifact(p.onnx, out, precision=precision_of(precision), backend=backend_of("onnxruntime"),
                   threads=args.threads, force=True, calibration=_calibration(args), progress=say)
    return out


def deploykit_ort(precision: str) -> Callable[[Prepared, argparse.Namespace], Contender]:
    def make(p: Prepared, args: argparse.Namespace) -> Contender:
        from deploykit.targets.resolve import open_target

        target = open_target(str(_build(p, precision, args)), threads=args.threads)
        return _from_runner(f"deploykit ORT {precision}", precision, "deploykit", target.runner)
    return make


def ort_quantize_static(p: Prepared, args: argparse.Namespace) -> Contender:
    """ONNX Runtime's recommended CPU recipe: pre-processing, QDQ, per-channel S8 weights, U8 activations
    (S8S8 on x86 is slower), MinMax on the same images; reduce_range where the CPU has no VNNI."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from deploykit.graph.seven_bit import needs_seven_bit_weights

    name = ort.InferenceSession(str(p.onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(p.calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {name: item}

    pre = p.folder / "model-ort-pre.onnx"
    try:
        quant_pre_process(str(p.onnx), str(pre))
    except Exception as exc:  # the pre-processing is optional: quantize the model as exported
        say(f"{p.name}: quant_pre_process failed ({str(exc).splitlines()[0]}); quantizing model.onnx as is")
        pre = p.onnx
    out = p.folder / "model-int8-ort-quantize-static.onnx"
    say(f"{p.name}: onnxruntime.quantization.quantize_static on {len(p.calib)} images")
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=needs_seven_bit_weights())
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    return Contender("ORT quantize_static int8", "int8", "peer", lambda x: session.run(None, {name: x})[0],
                     note="QDQ, per-channel, U8S8, MinMax")


def _ov_compiled(model: Any, threads: int, hint: str | None = "f32") -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    options: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if hint:
        options["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(model, "CPU", options)
    request, output = compiled.create_infer_request(), compiled.output(0)
    return lambda x: request.infer({0: x}, share_inputs=True)[output]


def openvino_fp32(p: Prepared, threads: int) -> Contender:
    import openvino as ov

    return Contender("OpenVINO fp32", "fp32", "peer", _ov_compiled(ov.convert_model(str(p.onnx)), threads),
                     note="convert_model(model.onnx), f32 hint")


def openvino_default_hint(p: Prepared, threads: int) -> Contender:
    import openvino as ov

    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    if default == "f32":
        raise RuntimeError("OpenVINO's default inference precision here is f32: same as OpenVINO fp32")
    return Contender("OpenVINO fp32 model, default hint", default, "peer",
                     _ov_compiled(ov.convert_model(str(p.onnx)), threads, hint=None),
                     note=f"OpenVINO's default inference precision on this CPU is {default}")


def deploykit_openvino(layout: str | None) -> Callable[[Prepared, argparse.Namespace], Contender]:
    """deploykit's openvino backend (build-engine --backend openvino): fp32 (layout None) or INT8 with its Q/DQ
    graph in the given layout, with the INT8 pass's defaults (accuracy recovery, the CPU's weight width)."""
    def make(p: Prepared, args: argparse.Namespace) -> Contender:
        from deploykit.build import build_artifact

        tag = "fp32" if layout is None else f"int8-{layout.replace('+', '-')}"
        out = p.folder / f"model-{tag}-openvino.xml"
        say(f"{p.name}: deploykit build-engine --backend openvino --{tag}")
        built = build_artifact(p.onnx, out, precision=precision_of("fp32" if layout is None else "int8"),
                               backend=backend_of("openvino"),
                               qdq_layout=layout, threads=args.threads, force=True, progress=say,
                               calibration=_calibration(args))
        label = "deploykit OpenVINO fp32" if layout is None else f"deploykit OpenVINO int8 (Q/DQ {layout})"
        options = built.sidecar.build_options
        note = f"runtime precisions {options['runtime_precisions']}"
        if options.get("int8_lowering", {}).get("seven_bit_weights"):
            note += "; 7-bit weights, depthwise full range (no VNNI)"
        from deploykit.backends.openvino.runner import open_runner

        return _from_runner(label, "fp32" if layout is None else "int8", "deploykit",
                            open_runner(built.path, threads=args.threads), note)
    return make


def openvino_nncf(p: Prepared, threads: int) -> Contender:
    import nncf
    import openvino as ov

    say(f"{p.name}: nncf.quantize on {len(p.calib)} images")
    quantized = nncf.quantize(ov.convert_model(str(p.onnx)), nncf.Dataset(p.calib), subset_size=len(p.calib))
    return Contender("OpenVINO + NNCF int8", "int8", "peer", _ov_compiled(quantized, threads),
                     note=f"nncf {nncf.__version__} quantize, default preset, f32 hint")


def contenders(p: Prepared, args: argparse.Namespace, skipped: list[str]) -> list[Contender]:
    threads = args.threads
    makers: list[tuple[str, Callable[[], Contender]]] = [
        (REFERENCE, lambda: torch_eager(p, threads)),
        ("torch.compile", lambda: torch_compiled(p, threads)),
        ("ORT default session", lambda: ort_default(p, threads)),
        ("deploykit ORT fp32", lambda: deploykit_ort("fp32")(p, args)),
        ("deploykit ORT int8", lambda: deploykit_ort("int8")(p, args)),
        ("ORT quantize_static int8", lambda: ort_quantize_static(p, args)),
        ("OpenVINO fp32", lambda: openvino_fp32(p, threads)),
        ("OpenVINO fp32 model, default hint", lambda: openvino_default_hint(p, threads)),
        ("deploykit OpenVINO fp32", lambda: deploykit_openvino(None)(p, args)),
        ("deploykit OpenVINO int8 (Q/DQ inputs)", lambda: deploykit_openvino("inputs")(p, args)),
        ("deploykit OpenVINO int8 (Q/DQ inputs+outputs)", lambda: deploykit_openvino("inputs+outputs")(p, args)),
        ("OpenVINO + NNCF int8", lambda: openvino_nncf(p, threads)),
    ]
    chosen = []
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for label, make in makers:
        if label in skip:
            skipped.append(f"{p.name}: {label}: skipped (--skip)")
            continue
        try:
            chosen.append(make())
        except ImportError as exc:
            skipped.append(f"{p.name}: {label}: not installed ({exc})")
        except Exception as exc:  # a peer that fails here is reported, not fatal to the table
            skipped.append(f"{p.name}: {label}: failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})")
        if skipped and skipped[-1].startswith(f"{p.name}: {label}:"):
            say(skipped[-1])
    return chosen


# --- timing, agreement, results -------------------------------------------------------------------------------

def time_round_robin(entries: list[Contender], inputs: list[np.ndarray], rounds: int, warmup: int) -> MachineLoad:
    """deploykit's timing core (deploykit.bench.interleave): `warmup` untimed calls per contender, then one inference
    per contender per round on the round's input, the order rotating, with an untimed pause between contenders:
    without it the worker threads of the runtime that just ran (ONNX Runtime's intra-op pool, OpenMP) spin on and
    took the cores of the next one, and the same graph timed 15.7 and 37.2 ms in one run (MSI-Net, OpenVINO fp32
    of the same model.onnx). Fills every entry's times_ms; returns the machine's load meanwhile."""
    from deploykit.bench.interleave import TimingConfig, time_interleaved

    def step(entry: Contender) -> Callable[[int], object]:
        return lambda i: entry.run(inputs[i % len(inputs)])
    config = TimingConfig(warmup_s=0.0, iterations=rounds, min_warmup_iterations=warmup)
    run = time_interleaved({entry.label: step(entry) for entry in entries}, config, progress=say, label="contenders")
    for entry in entries:
        entry.times_ms = run.timings[entry.label].samples_ms
    return run.load


def agreement(p: Prepared, entries: list[Contender], images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Task metrics of every contender's outputs against PyTorch eager's on `images`."""
    from deploykit.metrics.scores import task_metrics

    if not images:
        return {}
    outputs = {e.label: np.concatenate([np.asarray(e.run(x), np.float32) for x in images]) for e in entries}
    reference = outputs.get(REFERENCE)
    if reference is None:
        return {}
    return {label: task_metrics(p.task, reference, out) for label, out in outputs.items() if label != REFERENCE}


def bench_model(name: str, args: argparse.Namespace, weights: str | None, skipped: list[str]) -> dict[str, Any]:
    p = prepare(name, args, weights)
    entries = contenders(p, args, skipped)
    try:
        say(f"{name}: agreement with PyTorch eager on {len(p.heldout)} held-out images and the {len(p.spare)} "
            "calibration images no contender calibrated on")
        agreed, spare = agreement(p, entries, p.heldout), agreement(p, entries, p.spare)
        say(f"{name}: {len(entries)} contenders, {args.warmup} warm-up calls each + {args.rounds} round-robin rounds")
        load = time_round_robin(entries, p.heldout[:4] or p.calib[:4], args.rounds, args.warmup)
    finally:
        for entry in entries:
            entry.close()
    key = AGREEMENT.get(p.task, "")
    rows = [{"contender": e.label, "precision": e.precision, "by": e.by, "note": e.note,
             "median_ms": float(np.median(e.times_ms)), "p90_ms": float(np.percentile(e.times_ms, 90)),
             "agreement": agreed.get(e.label, {}).get(key), "metrics": agreed.get(e.label, {}),
             "agreement_spare": spare.get(e.label, {}).get(key)}
            for e in entries]
    return {"model": name, "task": p.task, "input_size": list(p.size), "weights": p.weights,
            "agreement_metric": key, "agreement_images": len(p.heldout), "spare_images": len(p.spare), "rows": rows,
            "targets": targets(rows), "load": load.to_dict()}


def _best(rows: list[dict[str, Any]], by: str, precision: str) -> dict[str, Any] | None:
    found = [r for r in rows if r["by"] == by and r["precision"] == precision]
    return min(found, key=lambda r: r["median_ms"]) if found else None


def _row(rows: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["contender"] == label), None)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15 item 5 and issue 20 item 2, as ratios within this run; a target whose contenders are missing is
    not judged."""
    checks: list[dict[str, Any]] = []

    def check(what: str, ours: dict[str, Any] | None, theirs: dict[str, Any] | None, limit: float,
              agreement_too: bool = False) -> None:
        if ours is None or theirs is None:
            checks.append({"target": what, "verdict": "not judged (a contender is missing)"})
            return
        ratio = ours["median_ms"] / theirs["median_ms"]
        fast = ratio <= limit
        agree = (not agreement_too or ours["agreement"] is None or theirs["agreement"] is None
                 or ours["agreement"] >= theirs["agreement"])
        checks.append({"target": what, "ours": ours["contender"], "theirs": theirs["contender"],
                       "ratio": ratio, "agreement": [ours["agreement"], theirs["agreement"]] if agreement_too else None,
                       "agreement_spare": [ours.get("agreement_spare"), theirs.get("agreement_spare")]
                       if agreement_too else None,
                       "verdict": "met" if fast and agree else "MISSED"})

    nncf, fp32 = _row(rows, "OpenVINO + NNCF int8"), _best(rows, "deploykit", "fp32")
    fastest = _best(rows, "deploykit", "int8")
    check("fastest deploykit INT8 within 10% of OpenVINO + NNCF INT8, agreement >=", fastest, nncf, 1.10,
          agreement_too=True)
    static = _row(rows, "ORT quantize_static int8")
    if fastest is not None and static is not None:  # issue 20: as faithful as ORT's quantizer too (any speed)
        check("fastest deploykit INT8 at least as faithful as ORT quantize_static", fastest,
              dict(static, median_ms=fastest["median_ms"]), 1.0, agreement_too=True)
    check("deploykit ORT INT8 no slower than ORT quantize_static", _row(rows, "deploykit ORT int8"),
          _row(rows, "ORT quantize_static int8"), 1.0)
    check("fastest deploykit FP32 at least as fast as OpenVINO FP32", fp32, _row(rows, "OpenVINO fp32"), 1.0)
    check("fastest deploykit FP32 at least as fast as ORT's default session", fp32,
          _row(rows, "ORT default session"), 1.0)
    return checks


def environment(args: argparse.Namespace, load: dict[str, float]) -> dict[str, Any]:
    from deploykit.environment import cpu_flags, cpu_model, package_version

    flags = cpu_flags()
    return {"cpu": cpu_model(), "cpu_flags": [f for f in SHOWN_FLAGS if f in flags], "cores": os.cpu_count(),
            "threads": args.threads, "rounds": args.rounds, "warmup_rounds": args.warmup, "load_average": load,
            "calibration": f"first {args.calib_n} images of {_shown(args.calib_data)}",
            "agreement_images": _shown(args.images),
            "versions": {n: package_version(n) or "absent" for n in
                         ("deploykit", "torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy")}}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def markdown(results: list[dict[str, Any]], skipped: list[str], env: dict[str, Any]) -> str:
    lines = ["# deploykit against the CPU peers (one round-robin run)", ""]
    for result in results:
        rows = result["rows"]
        base = _row(rows, "ORT default session")
        lines += [f"## {result['model']} at {result['input_size'][0]}x{result['input_size'][1]} "
                  f"({result['weights']})", ""]
        table = [[r["contender"], r["precision"], f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
                  f"{base['median_ms'] / r['median_ms']:.2f}x" if base else "-",
                  *((_fmt(r["agreement"]), _fmt(r.get("agreement_spare"))) if r["contender"] != REFERENCE
                    else ("(reference)", "(reference)")), r["note"]]
                 for r in sorted(rows, key=lambda r: r["median_ms"])]
        metric = result["agreement_metric"].replace("_", " ")
        lines += [markdown_table(["contender", "precision", "median ms", "p90 ms", "vs ORT default",
                                  f"{metric} vs eager", f"same, {result.get('spare_images', 0)} unused calib images",
                                  "note"], table), ""]
        lines += [f"- {c['target']}: " + (f"{c['ours']} / {c['theirs']} = {c['ratio']:.2f}x"
                                          + (f", agreement {_fmt(c['agreement'][0])} vs {_fmt(c['agreement'][1])}"
                                             f" (unused calib images: {_fmt(c['agreement_spare'][0])} vs "
                                             f"{_fmt(c['agreement_spare'][1])})"
                                             if c.get("agreement") else "") + f", {c['verdict']}"
                                          if "ratio" in c else c["verdict"]) for c in result["targets"]]
        lines.append("")
    if skipped:
        lines += ["## Skipped", "", *[f"- {s}" for s in skipped], ""]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines += ["## How it was measured", "",
              f"- CPU: {env['cpu']}, {env['cores']} cores; flags: {', '.join(env['cpu_flags'])}; threads "
              f"{env['threads']}; load average before/after {env['load_average']}.",
              f"- {env['rounds']} timed round-robin rounds after {env['warmup_rounds']} warm-up calls per contender "
              "(deploykit.bench.interleave: rotating order, 50 ms untimed pause between contenders); median and "
              "p90 of single batch-1 inferences (numpy in, numpy out).",
              *(f"- {r['model']}: {MachineLoad.from_dict(r['load']).describe()} while timing." for r in results
                if r.get("load")),
              f"- INT8 calibration: the {env['calibration']} for every INT8 contender; agreement with PyTorch "
              f"eager on {env['agreement_images']} (the targets' verdicts) and on the calibration folder's other "
              "images (a second sample: one near-tie image moves the first by several thousandths).",
              f"- Versions: {versions}.",
              "- Figures differ by CPU (VNNI, AVX-512, AMX, core count) and by load: compare ratios within a run.",
              *([f"- Note: {env['note']}."] if env.get("note") else []), ""]
    return "\n".join(lines)


def publish(out_dir: Path, name: str, data: dict[str, Any], text: str) -> None:
    """OUT_DIR/NAME.json and NAME.md, and the Markdown on stdout (this script's and the INT8 benchmarks')."""
    write_json(out_dir / f"{name}.json", data, force=True)
    write_text(out_dir / f"{name}.md", text, force=True)
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights, skipped, results = _weights(args), [], []
    before = os.getloadavg()[0]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results.append(bench_model(name, args, weights.get(name), skipped))
    env = environment(args, {"before": before, "after": os.getloadavg()[0]})
    publish(args.out_dir, args.name, {"environment": env, "results": results, "skipped": skipped},
            markdown(results, skipped, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
