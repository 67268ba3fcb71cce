"""How many convolutions must stay float for an INT8 budget (issue 20 item 4): pixel agreement of the demo's
trained DeepLabv3+ MobileNetV2 with its FP32 graph, by the number of convs kept in float, in two numeric forms.

    python benchmarks/int8_keep_curve.py --out-dir benchmarks/results

The nodes are kept in the order the budget search ranks them (its "single" sensitivities on the held-out
calibration images, deploykit.precision.budget), then the INT8 pass builds the graph with the first K kept
(--keep-float, the default recovery steps) and the CPU lowering (deploykit.graph.cpu_int8) is scored:
- "this CPU": the lowered graph run by ONNX Runtime's real kernels (7-bit weights on x86 CPUs without VNNI);
- "exact 8-bit": the lowered graph with full-range weights, run by ONNX Runtime with its optimizations off, so
  every Q/DQ pair is computed in float: what a VNNI CPU's exact u8 x s8 kernels give (no saturation, no 7 bits).
Agreement is with the FP32 graph on the demo's 12 report images (benchmarks/data/heldout) and on the calibration
folder's images beyond the first 16 (the search's held-out inputs, never calibrated on).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import bench_cpu_peers as peers  # noqa: E402

from deploykit.backends.base import backend_of  # noqa: E402
from deploykit.evaluate import session_from_onnx  # noqa: E402
from deploykit.graph.cpu_int8 import lower_for_cpu  # noqa: E402
from deploykit.graph.seven_bit import needs_seven_bit_weights  # noqa: E402
from deploykit.metrics.scores import task_metrics  # noqa: E402
from deploykit.precision.passes import CalibrationOptions, int8_graph  # noqa: E402
from deploykit.precision.recovery import recovery_options  # noqa: E402
from deploykit.report.format import markdown_table  # noqa: E402

MODEL = "deeplabv3plus_mobilenetv2"
BUDGET = "pixel_agreement>=0.999"  # met only near all kept: the search then ranks every node


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kept", default="0,7,14,21,28", help="comma-separated counts of convs kept in float")
    peers.data_options(parser, name="int8_keep_curve", threads=os.cpu_count() or 1)
    parser.add_argument("--distill", type=int, default=0, metavar="STEPS",
                        help="train the kept-K graphs with --int8-distill STEPS (the ranking build is untrained)")
    return parser.parse_args(argv)


def _agreement(session: Any, images: list[np.ndarray], references: list[np.ndarray], task: str) -> list[float]:
    name = session.get_inputs()[0].name
    return [float(task_metrics(task, ref, session.run(None, {name: x})[0])["pixel_agreement"])
            for x, ref in zip(images, references, strict=True)]


def curve(args: argparse.Namespace) -> dict[str, Any]:
    import onnx

    from deploykit.io.digests import sha256_file
    from deploykit.io.metadata import read_metadata

    peer_args = peers.study_args(args)
    p = peers.prepare(MODEL, peer_args, peers._weights(peer_args).get(MODEL))
    source = onnx.load(str(p.onnx))
    meta, sha, entry = read_metadata(source), sha256_file(p.onnx), backend_of("onnxruntime")
    reference = session_from_onnx(source.SerializeToString(), threads=args.threads)
    sets = {"report": p.heldout, "held_out": p.spare}
    references = {k: [reference.run(None, {reference.get_inputs()[0].name: x})[0] for x in v] for k, v in sets.items()}

    def build(kept: Sequence[str], budget: Sequence[str] = (), distill: int = 0) -> Any:
        options = CalibrationOptions(data=args.calib_data, n=args.calib_n,
                                     recovery=recovery_options(distill_steps=distill))
        return int8_graph(source, meta, sha, options, keep_float=kept, accuracy_budget=budget,
                          layout=entry.qdq_layout, backend=entry, threads=args.threads, progress=lambda _m: None)

    ranked = build((), (BUDGET,)).report["budget"]["sensitivity"]
    order = sorted(ranked, key=lambda n: -ranked[n])
    seven = needs_seven_bit_weights()
    rows = []
    for count in [int(k) for k in args.kept.split(",") if k.strip()]:
        result = build(order[:count], distill=args.distill)
        float_source = result.float_model or source
        forms = {"this CPU": (lower_for_cpu(result.model, seven_bit=seven, float_source=float_source).model, "all"),
                 "exact 8-bit": (lower_for_cpu(result.model, seven_bit=False, float_source=float_source).model,
                                 "disable")}
        row: dict[str, Any] = {"kept": count, "nodes": order[:count]}
        for form, (model, optimization) in forms.items():
            session = session_from_onnx(model.SerializeToString(), threads=args.threads, optimization=optimization)
            for key, images in sets.items():
                per = _agreement(session, images, references[key], p.task)
                row[f"{form}|{key}"] = {"mean": float(np.mean(per)), "per_input": per}
        say(f"{count} kept: " + ", ".join(f"{k} {v['mean']:.4f}" for k, v in row.items() if isinstance(v, dict)))
        rows.append(row)
    return {"model": MODEL, "weights": p.weights, "candidates": len(order), "seven_bit": seven, "distill": args.distill,
            "images": {k: len(v) for k, v in sets.items()}, "rows": rows}


def say(message: str) -> None:
    print(f"[int8_keep_curve] {message}", file=sys.stderr, flush=True)


def markdown(result: dict[str, Any], env: dict[str, Any]) -> str:
    report, held = result["images"]["report"], result["images"]["held_out"]
    table = [[str(r["kept"]), *(f"{r[f'{form}|{key}']['mean']:.4f}" for form in ("this CPU", "exact 8-bit")
                                for key in ("report", "held_out")),
              f"{min(r['exact 8-bit|report']['per_input']):.3f}"] for r in result["rows"]]
    width = "7-bit weights, depthwise full range (no VNNI)" if result["seven_bit"] else "full-range weights (VNNI)"
    return "\n".join([
        f"# Convs kept in float against INT8 pixel agreement ({result['model']}, {result['weights']})", "",
        markdown_table([f"convs kept (of {result['candidates']})", f"this CPU, {report} report images",
                        f"this CPU, {held} held-out", f"exact 8-bit, {report} report images",
                        f"exact 8-bit, {held} held-out", "exact 8-bit, worst report image"], table), "",
        "## How it was measured", "",
        f"- Command: `{env['command']}` ({env['seconds']} s).",
        f"- CPU: {env['cpu']}; flags: {', '.join(env['cpu_flags'])}; \"this CPU\" runs {width}.",
        "- Nodes kept in the budget search's ranking order; default recovery steps"
        + (f" and distillation ({result['distill']} steps)" if result.get("distill") else "")
        + "; agreement with the FP32 graph.",
        ""])


def main(argv: Sequence[str] | None = None) -> int:
    from deploykit.environment import cpu_flags, cpu_model

    args = _parse(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = curve(args)
    flags = cpu_flags()
    env = {"cpu": cpu_model(), "cpu_flags": [f for f in peers.SHOWN_FLAGS if f in flags],
           "command": " ".join(["python", "benchmarks/int8_keep_curve.py",
                                *(argv if argv is not None else sys.argv[1:])]),
           "seconds": round(time.perf_counter() - started, 1)}
    peers.publish(args.out_dir, args.name, {"environment": env, "result": result}, markdown(result, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
