"""INT8 accuracy recovery, wired into the INT8 pass: each step is a typed option recorded in the sidecar.

The steps live in deploykit.calib, one module per method; this module decides when each runs and on what:
- bias correction (deploykit.calib.bias_correction), measured on the graph as the backend computes it
  (`as_deployed`: for the CPU backends their UINT8 / 7-bit lowering, for TensorRT the symmetric graph itself).
  On by default, but after entropy ranges (`RecoveryOptions.resolved`).
- distillation (deploykit.calib.distill, `--int8-distill STEPS`), last: it trains the float weights and biases
  through the deployed graph, so the builder derives every later build (the budget search's too) from the
  trained model. Under `--calib-method auto` it runs once, on the chosen candidate (deploykit.precision.
  range_choice). Off by default: benchmarks/results/int8_recovery_distill.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from deploykit.backends.base import Backend
from deploykit.calib.adaround import AdaRound, adaround
from deploykit.calib.bias_correction import CHANNEL_AXIS, BiasCorrection, corrected_bias, measure_shifts
from deploykit.calib.distill import Distillation, distill
from deploykit.calib.equalize import Equalization, equalize
from deploykit.calib.methods import Entropy, Method
from deploykit.calib.qdq import QdqBuilder, QdqResult
from deploykit.types import Progress

EQUALIZE = {"none": Equalization(relu=False, relu6=False), "relu": Equalization(relu6=False),
            "relu6": Equalization(relu=False), "relu+relu6": Equalization()}
# ReLU6 pairs only by default (benchmarks/results/int8_recovery*.md, the trained DeepLabv3+ MobileNetV2 and
# MSI-Net, each form): with bias correction, equalizing the ReLU pairs too lost 0.010 CC on MSI-Net in TensorRT
# form (0.9768 -> 0.9665) and changed the rest by at most 0.0008; the ReLU6 pairs gave DeepLabv3+ +0.005 in
# TensorRT form.
DEFAULT_EQUALIZE = "relu6"
ROUNDINGS: dict[str, AdaRound | None] = {"nearest": None, "adaround": AdaRound(),
                                         "adaround-asymmetric": AdaRound(asymmetric=True)}
# Bias correction is off by default after entropy ranges. Entropy clips each tensor's rare large values, and
# the shift the correction measures is then mostly theirs: what clipping took from a few positions, averaged
# and added back to every position of the channel. TensorRT form against FP32 on benchmarks/data/heldout
# (benchmarks/results/int8_recovery.md): MSI-Net CC 0.9831 without it, 0.9140 with it; DeepLabv3+
# MobileNetV2 pixel agreement 0.9271 / 0.9073 (ReLU6 pairs equalized). After minmax ranges it gains MSI-Net
# 0.009 CC; after percentile and mse ranges it moved either model by less than 0.006 either way (one run of
# the same images, not a results row), and stays on.
NO_BIAS_CORRECTION_AFTER = (Entropy,)


@dataclass(frozen=True)
class RecoveryOptions:
    """The accuracy-recovery steps of the INT8 pass (module docstring); defaults are the measured best."""

    bias_correction: BiasCorrection | None = None  # None: on, but after entropy ranges (see `resolved`)
    equalization: Equalization = field(default_factory=lambda: EQUALIZE[DEFAULT_EQUALIZE])
    rounding: AdaRound | None = None  # None: round to nearest
    distillation: Distillation | None = None  # None: not trained

    def resolved(self, method: Method) -> RecoveryOptions:
        """These options with the bias correction decided for ranges of `method` (NO_BIAS_CORRECTION_AFTER)."""
        if self.bias_correction is not None:
            return self
        return replace(self, bias_correction=BiasCorrection(not isinstance(method, NO_BIAS_CORRECTION_AFTER)))

    def to_dict(self) -> dict[str, Any]:
        correction = self.bias_correction.to_dict() if self.bias_correction else {"enabled": "by range method"}
        return {"bias_correction": correction, "equalization": self.equalization.to_dict(),
                "rounding": self.rounding.to_dict() if self.rounding else {"rounding": "nearest"},
                "distillation": self.distillation.to_dict() if self.distillation else {"steps": 0}}


def recovery_options(*, rounding: str | None = None, bias_correction: bool | None = None,
                     equalize: str | None = None, distill_steps: int | None = None) -> RecoveryOptions:
    """RecoveryOptions from the build-engine flags (None: the default of each)."""
    default = RecoveryOptions()
    distillation = default.distillation if distill_steps is None else (
        Distillation(steps=distill_steps) if distill_steps > 0 else None)
    return RecoveryOptions(
        bias_correction=BiasCorrection(bias_correction) if bias_correction is not None else default.bias_correction,
        equalization=EQUALIZE[equalize] if equalize is not None else default.equalization,
        rounding=ROUNDINGS[rounding] if rounding is not None else default.rounding, distillation=distillation)


def equalized_source(source: onnx.ModelProto, source_sha: str, options: RecoveryOptions, progress: Progress
                     ) -> tuple[onnx.ModelProto, str, dict[str, Any]]:
    """The float model calibration and quantization start from: cross-layer equalized when asked (the same
    function), with the key its calibration cache is filed under, and the report's record."""
    if not options.equalization.enabled:
        return source, source_sha, {"pairs": 0}
    done = equalize(source, options.equalization)
    if not done.pairs:
        return source, source_sha, done.report()
    progress(f"cross-layer equalization: {len(done.pairs)} Conv pairs")
    key = hashlib.sha256(json.dumps([source_sha, options.equalization.to_dict()]).encode()).hexdigest()
    return done.model, key, done.report()


def _float_weights(model: onnx.ModelProto, nodes: Iterable[str]) -> dict[str, np.ndarray]:
    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(nodes)
    return {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in model.graph.node
            if n.name in wanted and len(n.input) > 1 and n.input[1] in inits}


def _float_biases(model: onnx.ModelProto, nodes: Iterable[str]) -> dict[str, np.ndarray | None]:
    """node -> its float bias (None when it has none); nodes whose bias is not a per-channel vector are left out
    (a Gemm's C may broadcast over rows; MatMul has no bias input)."""
    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(nodes)
    found: dict[str, np.ndarray | None] = {}
    for node in model.graph.node:
        if node.name not in wanted or node.op_type not in CHANNEL_AXIS or node.op_type == "MatMul":
            continue
        if len(node.input) > 2 and node.input[2]:
            bias = inits.get(node.input[2])
            if bias is not None and len(bias.dims) == 1:
                found[node.name] = numpy_helper.to_array(bias)
        else:
            found[node.name] = None
    return found


def correct_biases(builder: QdqBuilder, result: QdqResult, entry: Backend, inputs: Iterable[np.ndarray], *,
                   threads: int | None, progress: Progress) -> dict[str, Any]:
    """Measure the mean output shift of every quantized node of `result` (the all-INT8 build) as `entry`
    computes the graph, and give `builder` the corrected biases for every later build; the report's record."""
    biases = _float_biases(builder.model, result.quantized)
    deployed = entry.as_deployed(result.model, threads=threads, optimize=False, float_source=builder.model)
    progress(f"bias correction: measuring {len(biases)} layers' mean output shift on the calibration inputs")
    shifts = measure_shifts(deployed, _float_weights(builder.model, biases), list(biases), inputs,
                            threads=threads)
    builder.biases = {name: corrected_bias(bias, shift) for name, shift in shifts.items()
                      if (bias := biases[name]) is None or bias.shape == shift.shape}
    largest = max((float(np.max(np.abs(s))) for s in shifts.values()), default=0.0)
    return {"layers": len(builder.biases), "largest_shift": largest}


def round_weights(builder: QdqBuilder, inputs: Iterable[np.ndarray], options: AdaRound, *, threads: int | None,
                  progress: Progress) -> dict[str, Any]:
    """AdaRound the weights of every quantized Conv (deploykit.calib.adaround); `builder` uses the new codes in
    every later build. The report's record."""
    specs = builder.specs(builder.candidates())
    nearest = {name: builder.weight_codes(spec) for name, spec in specs.items()}  # (codes, scales) before
    scales = {name: scale for name, (_, scale) in nearest.items()}
    weights = _float_weights(builder.model, specs)
    progress(f"AdaRound: {len(specs)} layers, {options.iterations} iterations each"
             + (", each on the graph with the layers before it INT8" if options.asymmetric else ""))

    def quantized(chosen: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        for name, new in chosen.items():
            builder.set_codes(specs[name], new)
        return builder.build().model

    codes = adaround(builder.model, scales, weights, inputs, options, quantized=quantized, threads=threads,
                     progress=progress)
    changed = 0
    for name, new in codes.items():
        changed += int(np.count_nonzero(new != nearest[name][0]))
        builder.set_codes(specs[name], new)
    return {"layers": len(codes), "weights_rounded_otherwise": changed}


def _single_use(builder: QdqBuilder, nodes: Iterable[str]) -> list[str]:
    """The nodes whose weight (and bias) initializer no other node reads (training it changes that node alone)."""
    readers = builder.index.consumers
    wanted = set(nodes)
    return [n.name for n in builder.model.graph.node if n.name in wanted and len(readers[n.input[1]]) == 1
            and (len(n.input) < 3 or not n.input[2] or len(readers[n.input[2]]) == 1)]


def distill_weights(builder: QdqBuilder, entry: Backend, inputs: Iterable[np.ndarray], options: Distillation, *,
                    threads: int | None, progress: Progress) -> dict[str, Any]:
    """Train the quantized layers' float weights and biases against the float model (deploykit.calib.distill),
    on the all-INT8 build as `entry` computes it; `builder` derives every later build from the trained model.
    The report's record."""
    result = builder.build()
    names = _single_use(builder, result.quantized)
    deployed = entry.as_deployed(result.model, threads=threads, optimize=False, float_source=builder.model)
    progress(f"distillation: {len(names)} layers against the float model, {options.steps} steps")
    done = distill(deployed, builder.model, _float_weights(builder.model, names), list(inputs), options,
                   threads=threads, progress=progress)
    floats = _float_biases(builder.model, done.nodes)
    for name, trained in done.nodes.items():
        before = floats.get(name)
        before = np.zeros(trained.weight.shape[0], np.float32) if before is None else before
        read = builder.biases.get(name, before)  # what the trained graph's layer read: bias correction's
        bias = before if trained.bias is None else trained.bias - (read - before)
        builder.set_float(name, trained.weight, bias)
        if trained.bias is not None and name in builder.biases:
            builder.biases[name] = trained.bias
    return done.report


def recover(builder: QdqBuilder, options: RecoveryOptions, entry: Backend, inputs: Iterable[np.ndarray], *,
            threads: int | None, progress: Progress) -> dict[str, Any]:
    """The weight and bias steps on `builder` (AdaRound, then bias correction measured with the rounded
    weights, then distillation), each on the all-INT8 build as `entry` computes it; the report's records."""
    report: dict[str, Any] = {}
    if options.rounding is not None and builder.candidates():
        report["adaround"] = round_weights(builder, inputs, options.rounding,
                                           threads=threads, progress=progress)
    if options.bias_correction is not None and options.bias_correction.enabled and builder.candidates():
        report["bias_correction"] = correct_biases(builder, builder.build(), entry, inputs, threads=threads,
                                                   progress=progress)
    if options.distillation is not None and builder.candidates():
        report["distillation"] = distill_weights(builder, entry, inputs, options.distillation, threads=threads,
                                                 progress=progress)
    return report
