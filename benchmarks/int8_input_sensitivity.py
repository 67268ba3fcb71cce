"""How far the demo's FP32 model moves on its own (issue 20 item 4): the budget pixel_agreement>=0.99 on the 12
report images, set against what the trained DeepLabv3+ MobileNetV2 gives up without any INT8 arithmetic.

    python benchmarks/int8_input_sensitivity.py --out-dir benchmarks/results

Per report image (benchmarks/data/heldout), with the FP32 graph run by ONNX Runtime:
- the share of pixels whose top two class scores are less than 1 (and 0.3) apart: where any error flips a label;
- agreement of FP32 with itself when every input pixel moves by half (and one) gray level, a random sign per value
  (seed 0): changes smaller than the rounding an 8-bit image already carries;
- agreement when only the input tensor is quantized as the INT8 graph quantizes it (symmetric INT8 at the scale
  the INT8 pass chose for it, everything after in float).
"""

from __future__ import annotations

import argparse
import os
import sys
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
from deploykit.metrics.scores import task_metrics  # noqa: E402
from deploykit.precision.passes import CalibrationOptions, int8_graph  # noqa: E402
from deploykit.report.format import markdown_table  # noqa: E402

MODEL = "deeplabv3plus_mobilenetv2"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    peers.data_options(parser, name="int8_input_sensitivity", threads=os.cpu_count() or 1)
    return parser.parse_args(argv)


def _input_scale(model: Any) -> float:
    """The scale of the QuantizeLinear reading the graph input, in the INT8 pass's graph."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    first = model.graph.input[0].name
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == first)
    return float(numpy_helper.to_array(inits[node.input[1]]))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import onnx

    from deploykit.io.digests import sha256_file
    from deploykit.io.metadata import read_metadata

    peer_args = peers.study_args(args)
    p = peers.prepare(MODEL, peer_args, peers._weights(peer_args).get(MODEL))
    source = onnx.load(str(p.onnx))
    meta = read_metadata(source)
    assert meta is not None
    entry = backend_of("onnxruntime")
    built = int8_graph(source, meta, sha256_file(p.onnx), CalibrationOptions(data=args.calib_data, n=args.calib_n),
                       keep_float=(), accuracy_budget=(), layout=entry.qdq_layout, backend=entry,
                       threads=args.threads, progress=lambda _m: None)
    scale = _input_scale(built.model)
    session = session_from_onnx(source.SerializeToString(), threads=args.threads)
    name = session.get_inputs()[0].name
    low, high = meta.preprocessing.input_range
    gray = (high - low) / 255 / np.asarray(meta.preprocessing.std, np.float32).reshape(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    rows = []
    for index, x in enumerate(p.heldout):
        scores = session.run(None, {name: x})[0]
        top = np.sort(scores, axis=1)
        margin = top[:, -1] - top[:, -2]

        def agreement(changed: np.ndarray, reference: np.ndarray = scores) -> float:
            return float(task_metrics(p.task, reference, session.run(None, {name: changed.astype(np.float32)})[0])
                         ["pixel_agreement"])

        signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=x.shape)
        rows.append({"image": index, "margin<1": float((margin < 1).mean()), "margin<0.3": float((margin < 0.3).mean()),
                     "half gray level": agreement(x + 0.5 * signs * gray),
                     "one gray level": agreement(x + signs * gray),
                     "input INT8 only": agreement(np.clip(np.round(x / scale), -128, 127) * scale)})
    return {"model": MODEL, "weights": p.weights, "input_scale": scale, "rows": rows,
            "mean": {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}}


def main(argv: Sequence[str] | None = None) -> None:
    from deploykit.environment import cpu_flags, cpu_model

    args = _parse(argv)
    result = measure(args)
    flags = cpu_flags()
    result["cpu"] = f"{cpu_model()} ({', '.join(f for f in peers.SHOWN_FLAGS if f in flags)})"
    keys = [k for k in result["rows"][0] if k != "image"]
    table = markdown_table(["image", *keys], [[str(r["image"]), *(f"{r[k]:.4f}" for k in keys)] for r in result["rows"]]
                           + [["mean", *(f"{result['mean'][k]:.4f}" for k in keys)]])
    text = (f"# {MODEL}: FP32 against itself on the 12 report images\n\n{result['cpu']}; input INT8 scale "
            f"{result['input_scale']:.6g}. `python benchmarks/int8_input_sensitivity.py`\n\n{table}\n")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    peers.publish(args.out_dir, args.name, result, text)


if __name__ == "__main__":
    main()
