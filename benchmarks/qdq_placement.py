"""Q/DQ placement summary of the TensorRT-form INT8 graph for every zoo model, and its task agreement with FP32
when run through ONNX Runtime with an FP32 or an FP16 float remainder (--int8-float).

    python benchmarks/qdq_placement.py                 # tiny test variants (tests/fixtures/tiny.py)
    python benchmarks/qdq_placement.py --trained       # + the checkpoints in benchmarks/checkpoints
    python benchmarks/qdq_placement.py --trained --methods minmax,entropy,percentile

Per model: quantized weighted nodes, residual Adds reading a quantized skip, Concats sharing one scale, the Q/DQ
lint's findings (deploykit.graph.qdq_fusion) by rule, and agreement against the FP32 ONNX model on the images in
benchmarks/data/heldout (calibration: benchmarks/data/calib). ONNX Runtime simulates the INT8 graph, without its
WeightBiasQuantization pass (the TensorRT entry's scored_without); these are not TensorRT
figures. The tiny variants are untrained, so their agreement says little; the trained ones do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from deploykit.backends.base import backend_of  # noqa: E402
from deploykit.calib.data import calibration_data  # noqa: E402
from deploykit.export.onnx_from_torch import onnx_from_torch  # noqa: E402
from deploykit.graph.tensors import activations, index_graph  # noqa: E402
from deploykit.io.metadata import read_metadata  # noqa: E402
from deploykit.precision.budget import Evaluator  # noqa: E402
from deploykit.precision.passes import CalibrationOptions, input_shape, int8_graph  # noqa: E402
from deploykit.zoo import get_model_spec, list_models  # noqa: E402
from deploykit.zoo.sources import load_model  # noqa: E402
from tests.fixtures.tiny import TINY  # noqa: E402

TENSORRT = backend_of("tensorrt")
TRAINED = {"deeplabv3plus_mobilenetv2": (513, 513), "msinet": (240, 320)}  # as benchmarks/results/trained.md
TASK_KEYS = {"segmentation": ("pixel_agreement", "miou"), "saliency": ("cc", "kld")}


def _export(name: str, folder: Path, *, trained: bool) -> Path:
    spec = get_model_spec(name)
    if trained:
        recipe = json.loads((ROOT / "checkpoints" / "train_small.json").read_text())[name]["recipe"]
        weights = next((ROOT / "checkpoints").glob(f"{name}_small.pt"))
        loaded = load_model(name, options=recipe["options"], weights=weights)
        size = TRAINED[name]
    else:
        loaded, size = load_model(name, options=dict(TINY[spec.name].options)), TINY[spec.name].input_size
    path = folder / f"{name}{'.trained' if trained else ''}.onnx"
    onnx_from_torch(loaded, path, input_shape=(1, 3, *size), simplify=False, force=True)
    return path


def _row(name: str, path: Path, method: str, n: int) -> dict[str, Any]:
    source = onnx.load(str(path))
    meta = read_metadata(source)
    held = list(calibration_data(str(ROOT / "data" / "heldout"), input_shape=input_shape(source, meta),
                                 preprocessing=meta.preprocessing if meta else None))
    task = meta.task if meta else None
    evaluator = Evaluator(source.SerializeToString(), held, task, disabled_optimizers=TENSORRT.scored_without)
    row: dict[str, Any] = {"model": name, "input": "x".join(map(str, input_shape(source, meta) or ())),
                           "method": method}
    for remainder in ("fp32", "fp16"):
        options = CalibrationOptions(data=str(ROOT / "data" / "calib"), n=n, method=method, int8_float=remainder)
        result = int8_graph(source, meta, f"{path.name}-{path.stat().st_size}", options, keep_float=(),
                            accuracy_budget=(), layout="inputs", backend=TENSORRT, threads=None,
                            progress=lambda _m: None)
        scores = evaluator.score(result.model.SerializeToString())
        keys = TASK_KEYS.get(task or "", ())
        row[remainder] = {k: round(scores[k], 4) for k in (*keys, "cosine") if k in scores}
        if remainder == "fp32":
            report = result.report
            live = activations(source, index_graph(source))
            quantizers = {n.input[0] for n in result.model.graph.node if n.op_type == "QuantizeLinear"}
            data_ops = [n for n in source.graph.node if all(i in live for i in n.input if i)]
            row.update(quantized=report["quantized_nodes"], residual_adds=report["residual_adds_quantized"],
                       adds=sum(n.op_type == "Add" and len(n.input) == 2 for n in data_ops),
                       shared_concats=report["shared_scale_concats"],
                       int8_concats=sum(n.op_type == "Concat" and n.output[0] in quantizers for n in data_ops),
                       concats=sum(n.op_type == "Concat" for n in data_ops), lint=report["qdq_lint"]["by_rule"])
    return row


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | input | calib | quantized | residual Adds quantized | Concats: quantized output / "
             "inputs re-scaled to share | lint findings | agreement, fp32 remainder | agreement, fp16 remainder |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lint = ", ".join(f"{k} {v}" for k, v in r["lint"].items()) or "none"
        shown = {k: ", ".join(f"{m} {v}" for m, v in r[k].items()) for k in ("fp32", "fp16")}
        lines.append(f"| {r['model']} | {r['input']} | {r['method']} | {r['quantized']} | {r['residual_adds']}/"
                     f"{r['adds']} | {r['int8_concats']}/{r['concats']} / {r['shared_concats']} | {lint} | "
                     f"{shown['fp32']} | {shown['fp16']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", action="store_true", help="also the trained checkpoints")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny variants")
    parser.add_argument("--methods", default="minmax", help="calibration methods for the trained checkpoints")
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    os.environ.setdefault("DEPLOYKIT_CACHE_DIR", tempfile.mkdtemp(prefix="deploykit-qdq-"))
    names = [m for m in args.models.split(",") if m] or list_models()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deploykit-qdq-") as tmp:
        if not args.no_tiny:
            for name in names:
                rows.append(_row(name, _export(name, Path(tmp), trained=False), "minmax", 8))
                print(_markdown(rows[-1:]).splitlines()[-1], flush=True)
        if args.trained:
            for name in [n for n in TRAINED if n in names]:
                path = _export(name, Path(tmp), trained=True)
                for method in args.methods.split(","):
                    rows.append(_row(f"{name} (trained)", path, method, 16))
                    print(_markdown(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
