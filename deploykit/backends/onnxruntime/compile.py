"""ONNX Runtime's compile step: a precision-transformed ONNX model -> an ORT-optimized ONNX model.

The artifact is what ONNX Runtime writes with SessionOptions.optimized_model_filepath at the *extended*
level: fusions (Conv+activation, QDQ -> QLinearConv, ...) that are valid on any CPU. The *all* level would add
NCHWc layout transforms tied to this CPU's vector width (ORT warns the result "should only be used in the same
environment"); sessions apply those at load time anyway, so the artifact stays portable and the sidecar still
records the CPU it was built on.

INT8 lowering for ONNX Runtime (`lower_for_onnxruntime`, the ORT artifact only; the precision graph kept next
to it, model.int8.onnx, is what TensorRT compiles and stays symmetric):
- UINT8 activations everywhere (deploykit.backends.onnxruntime.unsigned): ORT fuses DQ -> Conv -> Q into
  QLinearConv only when input and output share one type, and not at all for INT8 activations on x86. After
  Relu / Clip(min >= 0) the pair becomes UINT8 zero point 0 (same range, steps half as coarse, the activation
  is dropped); elsewhere UINT8 zero point 128 with the same scale (exact). Lowering only the pairs after
  activations left 18 of 61 convolutions of MobileNetV2 DeepLabv3+ in float between Transposes (issue 15).
- Joins and resampling in UINT8 (same module): residual Adds whose output also feeds float nodes route
  those through the existing Q (QLinearAdd), a Resize of a dequantized tensor gets its input's Q/DQ on its
  output (UINT8 Resize, then QLinearConcat), a MaxPool of a Relu output keeps zero point 0 (UINT8 MaxPool).
  Together: no float Add, Concat or MaxPool left in DeepLabv3+ MobileNetV2 / ResNet-50 (test_ort_int8_lowering).
- An equalized ReLU6's per-channel Min (deploykit.calib.equalize) runs on UINT8 after the Q, the same codes
  (quantized_mins): between Conv and Q it kept 34 of 61 MobileNetV2 convolutions out of QLinearConv.
- 7-bit weights on x86 CPUs without VNNI (deploykit.graph.seven_bit): ORT's u8 x s8 kernels
  saturate in int16 there; with VNNI (and AMX) full-range weights are kept. Quantized from the float weights
  when the source model is given (rounded once), else from the INT8 codes. On a measured tiny DeepLabv3+ the
  full-range artifact on a non-VNNI CPU reached cosine 0.991 against FP32, the 7-bit one 0.998. The sidecar
  records the choice and the CPU flags.
- A quantized conv whose output the placement leaves float (the logits conv, deploykit.calib.qdq) stays a float
  Conv on dequantized inputs: ORT needs a Q after it to fuse, and the exact alternative, ConvInteger + rescale,
  took 8.5% of MobileNetV2 DeepLabv3+'s time against 0.9% for the float Conv (ORT profiler, this Zen CPU).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from deploykit.backends.onnxruntime.unsigned import (
    quantized_adds,
    quantized_mins,
    quantized_resizes,
    unsigned_activations,
)
from deploykit.errors import BuildError, first_line
from deploykit.evaluate import session_options
from deploykit.graph.seven_bit import float_weights, needs_seven_bit_weights
from deploykit.graph.seven_bit import seven_bit_weights as _seven_bit
from deploykit.io.metadata import read_observed_ranges
from deploykit.io.outputs import atomic_output, scratch_folder

OPTIMIZATION = "extended"
__all__ = ["OPTIMIZATION", "Lowered", "lower_for_onnxruntime", "needs_seven_bit_weights", "ort_model_from_onnx",
           "ort_optimized", "seven_bit_weights", "unsigned_after_activation"]


@dataclass(frozen=True)
class Lowered:
    model: onnx.ModelProto
    unsigned: int  # QuantizeLinear nodes turned UINT8
    seven_bit: int = 0  # weights quantized to [-63, 63]
    seven_bit_from_float: int = 0  # of which from the float weights (rounded once)


def unsigned_after_activation(model: onnx.ModelProto, *, everywhere: bool = True) -> Lowered:
    """Copy of `model` with its activation Q/DQ pairs in UINT8 (deploykit.backends.onnxruntime.unsigned);
    everywhere=False only turns the pairs after Relu / Clip(min >= 0)."""
    lowered, changed = unsigned_activations(model, everywhere=everywhere)
    return Lowered(lowered, changed)


def seven_bit_weights(model: onnx.ModelProto, floats: Mapping[str, np.ndarray] | None = None) -> int:
    """Per-channel INT8 weights to [-63, 63] in place (deploykit.graph.seven_bit); how many."""
    return _seven_bit(model, floats)[0]


def lower_for_onnxruntime(model: onnx.ModelProto, *, seven_bit: bool | None = None,
                          float_source: onnx.ModelProto | None = None) -> Lowered:
    """Both INT8 lowerings (module docstring); a model without Q/DQ comes back unchanged. `float_source`, the
    float model the Q/DQ graph was built from, gives 7-bit weights rounded once from the float weights."""
    lowered = Lowered(*unsigned_activations(model, observed=read_observed_ranges(model)))
    quantized_mins(lowered.model)
    quantized_adds(lowered.model)
    quantized_resizes(lowered.model)
    count = from_float = 0
    if needs_seven_bit_weights() if seven_bit is None else seven_bit:
        floats = float_weights(lowered.model, float_source) if float_source is not None else None
        count, from_float = _seven_bit(lowered.model, floats)
    return Lowered(lowered.model, lowered.unsigned, count, from_float)


def ort_optimized(model: onnx.ModelProto, *, threads: int | None = None, what: str = "the model"
                  ) -> onnx.ModelProto:
    """ONNX Runtime's optimized form of an already lowered `model` (what the artifact holds), in memory."""
    with scratch_folder("deploykit-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = session_options(threads, optimization=OPTIMIZATION)
        options.optimized_model_filepath = str(optimized)
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types
            raise BuildError(f"ONNX Runtime could not optimize {what}: {first_line(exc)}") from exc
        return onnx.load(str(optimized))


def ort_model_from_onnx(
    onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool, threads: int | None = None,
    seven_bit: bool | None = None, float_source: onnx.ModelProto | None = None,
) -> Lowered:
    """Write ONNX Runtime's optimized form of `onnx_path` to `out` (atomically); metadata is carried over.
    `float_source` is the float model a Q/DQ `onnx_path` was built from, as loaded (for 7-bit weights from float).
    Returns what the INT8 lowerings changed (its model is the lowered graph before ORT's optimizations)."""
    source = onnx.load(str(onnx_path))
    result = lower_for_onnxruntime(source, seven_bit=seven_bit, float_source=float_source)
    model = ort_optimized(result.model, threads=threads, what=str(onnx_path))
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    with atomic_output(out, force=force) as tmp_path:
        onnx.save(model, str(tmp_path))
    return result
