"""The INT8 pass's precision choices a backend rewards, each recorded with why it was made (issue 19 item 5):
the float remainder (--int8-float) and depthwise/grouped convolutions (--int8-grouped).

--int8-float, what the ops outside the quantized ones compute in:
- TensorRT (a strongly typed network runs every op in the precision the graph gives it): fp16 by default, the
  precision NVIDIA's own INT8 recipe leaves the rest in (ModelOpt's high_precision_dtype) and half the float
  traffic; with an --accuracy-budget, auto: the fp16 remainder if it meets the budget on the held-out inputs,
  scored as TensorRT computes the graph, else fp32. Measured on the trained DeepLabv3+ MobileNetV2 (TensorRT-form
  graph in ONNX Runtime, benchmarks/qdq_placement.py --trained): the fp16 remainder costs at most 0.0016 pixel
  agreement (minmax 0.968 / 0.969); ModelOpt's graph lost 0.061 with its fp16 remainder for other reasons.
- CPU backends (ONNX Runtime, OpenVINO): fp32. CPUs without native float16 arithmetic run an fp16 remainder as
  Casts around float32 kernels (slower), and ONNX Runtime's WeightBiasQuantization underflows float16 bias
  scales (Backend.scored_without).
--int8-grouped, depthwise and grouped convolutions:
- TensorRT: kept out of INT8 (they then run in the remainder's precision, FP16 by default): TensorRT often runs
  them slower in INT8 than in FP16 (NVIDIA/TensorRT#1310, #1409, #4529). `--int8-grouped int8` quantizes them.
- CPU backends: quantized (ONNX Runtime and OpenVINO fuse them into INT8 convolutions).
Where a build's choice is not what TensorRT rewards (asked for, or the budget's measurement decided), the
precision report says why and the Q/DQ lint of the TensorRT graph repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import onnx

from deploykit.backends.base import Backend
from deploykit.calib.data import CalibrationData
from deploykit.errors import BuildError
from deploykit.graph.fp16 import fp16_from_onnx
from deploykit.graph.lint import lint_model
from deploykit.io.metadata import ModelMetadata
from deploykit.precision.budget import BOUND, CONFIDENCE, Budget, Evaluator
from deploykit.types import Progress

INT8_FLOAT = ("fp32", "fp16", "auto")
FP32_REMAINDER, FP16_REMAINDER, AUTO_REMAINDER = INT8_FLOAT
GROUPED = ("int8", "float")
FP16_QDQ_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 scales from opset 19
TENSORRT_GROUPED = ("kept out of INT8 for TensorRT: depthwise/grouped convolutions often run slower in INT8 than "
                    "in FP16 there (NVIDIA/TensorRT#1310, #4529); --int8-grouped int8 quantizes them")


def grouped_reason(asked: str | None, entry: Backend) -> str:
    """Why depthwise/grouped convolutions stay float in this build ("" when they are quantized)."""
    if asked is not None and asked not in GROUPED:
        raise BuildError(f"unknown --int8-grouped {asked!r}; choose one of {', '.join(GROUPED)}")
    if asked == "float":
        return "kept out of INT8 by --int8-grouped float"
    return TENSORRT_GROUPED if asked is None and entry.runs_float16 else ""


def remainder_asked(asked: str | None, entry: Backend, budget: Budget | None) -> tuple[str, str]:
    """The --int8-float choice to make and why: the user's, else the backend's default (module docstring)."""
    if asked is not None:
        if asked not in INT8_FLOAT:
            raise BuildError(f"unknown --int8-float {asked!r}; choose one of {', '.join(INT8_FLOAT)}")
        return asked, "asked for"
    if entry.runs_float16:
        if budget is not None:
            return AUTO_REMAINDER, "TensorRT's default with a budget: fp16 where the budget holds"
        return FP16_REMAINDER, "TensorRT's default: the remainder in FP16, as TensorRT runs it fastest"
    return FP32_REMAINDER, f"{entry.title}'s default: CPUs run float16 as casts around float32 kernels"


def fp16_remainder(model: onnx.ModelProto, absmax: dict[str, float]) -> onnx.ModelProto:
    """The INT8 graph with its float ops in float16 and float16 Q/DQ scales (opset raised to 19: the ops
    deploykit exports changed between 18 and 19 only by new optional attributes and modes)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < FP16_QDQ_OPSET:
            entry.version = FP16_QDQ_OPSET
    model.ir_version = max(model.ir_version, 9)
    return fp16_from_onnx(model, activation_absmax=absmax, qdq=True).model


def float_remainder(source: onnx.ModelProto, model: onnx.ModelProto, asked: str | None, entry: Backend,
                    budget: Budget | None, held: CalibrationData | None, meta: ModelMetadata | None,
                    absmax: dict[str, float], *, threads: int | None,
                    progress: Progress) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph with its float remainder in fp32 or fp16, and the record of the choice (asked, chosen, why);
    auto scores the fp16 remainder against the FP32 `source` on the held-out inputs, as the budget search does."""
    choice, why = remainder_asked(asked, entry, budget)
    record: dict[str, Any] = {"asked": asked or "default", "chosen": choice, "why": why}
    if choice == FP32_REMAINDER or (choice == AUTO_REMAINDER and (budget is None or held is None)):
        if choice == AUTO_REMAINDER:
            record.update(chosen=FP32_REMAINDER, why="auto without an accuracy budget: fp32")
        return model, record
    half = fp16_remainder(model, absmax)
    if choice == FP16_REMAINDER:
        return half, record
    assert budget is not None and held is not None
    # Scored as the backend computes the graph: its form (as_deployed), without the optimizations it lacks.
    evaluator = Evaluator(source.SerializeToString(), list(held), meta.task if meta else None, threads=threads,
                          disabled_optimizers=entry.scored_without)
    deployed = entry.as_deployed(half, threads=threads, optimize=False, float_source=source)
    scores = evaluator.score(deployed.SerializeToString())
    record["fp16_scores"] = scores
    if budget.met(scores):
        record.update(chosen=FP16_REMAINDER,
                      why=f"fp16 remainder meets {budget.describe()} on {len(held)} held-out input(s)")
        progress(f"--int8-float auto: fp16 remainder meets {budget.describe()}")
        return half, record
    record.update(chosen=FP32_REMAINDER,
                  why=f"fp16 remainder misses {budget.describe()} on {len(held)} held-out input(s) "
                      f"({budget.show(scores)}): fp32")
    progress(f"--int8-float auto: fp32 remainder (fp16 misses {budget.describe()})")
    return model, record


def qdq_lint(model: onnx.ModelProto, target: str, choices: Mapping[str, str], progress: Progress) -> dict[str, Any]:
    """The Q/DQ lint (deploykit.graph.qdq_fusion) of the graph the backend compiles (`target`), for the report; a
    finding about a choice this build made (`choices`: lint rule -> why the build chose so) says why."""
    findings = [f for f in lint_model(model, target=target).findings if f.rule.startswith(("qdq-", "int8-"))]
    findings = [replace(f, why=f"{f.why}; this build: {choices[f.rule]}") if f.rule in choices else f
                for f in findings]
    for finding in findings:
        if finding.severity != "info":
            progress(f"Q/DQ lint {finding.severity}: {finding.node} [{finding.rule}] {finding.why}")
    return {"findings": [f.to_dict() for f in findings],
            "by_rule": {rule: sum(f.rule == rule for f in findings) for rule in sorted({f.rule for f in findings})}}


def describe(report: Mapping[str, Any]) -> list[str]:
    """One line per INT8 choice an INT8 precision report records, with why (the build-engine output and the
    deploy report): float remainder, grouped convolutions, the accuracy-recovery steps, the budget's evidence."""
    if "int8_float" not in report:
        return []
    remainder = report["int8_float"]
    lines = [f"float remainder {remainder['chosen']}: {remainder.get('why', '')}"]
    choice = report.get("method_choice")
    if choice:
        metric = choice["metric"]
        lines.append(f"calibration method {choice['chosen']}, chosen by auto on {choice['scored_on']} ("
                     + ", ".join(f"{name} {metric} {s.get(metric, float('nan')):.4f}"
                                 for name, s in choice["scores"].items()) + ")")
    grouped = [k for k in report.get("kept_float") or [] if "depthwise/grouped" in str(k.get("reason", ""))]
    if grouped:
        lines.append(f"{len(grouped)} depthwise/grouped convolutions {grouped[0]['reason']}")
    steps = []
    if "equalization" in report and report["equalization"].get("pairs"):
        equalized = report["equalization"]
        steps.append(f"cross-layer equalization of {equalized['pairs']} Conv pairs "
                     f"({equalized.get('relu6_pairs', 0)} through ReLU6, clip points moved per channel)")
    if "adaround" in report:
        steps.append(f"AdaRound on {report['adaround']['layers']} layers "
                     f"({report['adaround']['weights_rounded_otherwise']} weights rounded the other way)")
    if "bias_correction" in report:
        steps.append(f"bias correction of {report['bias_correction']['layers']} layers")
    distilled = report.get("distillation")
    if distilled:
        steps.append(f"distillation of {distilled['layers']} layers, {distilled['steps']} steps: loss "
                     f"{distilled['loss_before']:.4g} -> {distilled['loss_after']:.4g}" if distilled["trained"]
                     else f"no distillation ({distilled['why']})")
    lines.append("accuracy recovery: " + ("; ".join(steps) if steps else "none"))
    budget = report.get("budget")
    if budget and budget.get("held_out"):
        bound = {k: v for k, v in (budget.get("reached") or {}).items() if k.endswith(BOUND)}
        origin = f" ({budget['held_out_from']})" if budget.get("held_out_from") else ""
        lines.append(f"budget {budget['budget']} judged on {budget['held_out']} held-out inputs{origin}"
                     + (f", at its {CONFIDENCE:.0%} confidence bound ("
                        + ", ".join(f"{k[:-len(BOUND)]} {v:.4f}" for k, v in bound.items()) + ")" if bound else ""))
    return lines
