"""The INT8 lowering for x86 CPU runtimes: the symmetric Q/DQ precision graph -> the graph ONNX Runtime and
OpenVINO are given. The precision graph kept next to a CPU artifact (model.int8.onnx) is what TensorRT compiles
and stays symmetric; only the CPU artifacts are lowered, both the same way, so the budget search scores the
numbers either CPU backend computes.

- UINT8 activations everywhere (deploykit.graph.unsigned), with the asymmetric range the INT8 pass observed:
  ORT fuses DQ -> Conv -> Q into QLinearConv only when input and output share one type, and not at all for INT8
  activations on x86. After Relu / Clip(min >= 0) the pair becomes UINT8 zero point 0 (the activation is
  dropped); elsewhere the observed [min, max] in 256 steps (zero point 128 with the same scale where no range
  was recorded: exact). Lowering only the pairs after activations left 18 of 61 convolutions of MobileNetV2
  DeepLabv3+ in float between Transposes (issue 15). OpenVINO reads the zero points as asymmetric
  FakeQuantize ranges and still runs every convolution in u8: on this round's AVX2 EPYC the trained MSI-Net's
  OpenVINO artifact reached CC 0.9917 against PyTorch with this lowering and 0.9828 with the symmetric graph,
  DeepLabv3+ MobileNetV2 pixel agreement 0.9723 against 0.9684, at the same speed (issue 20).
- Joins and resampling in UINT8 (same module): residual Adds whose output also feeds float nodes route those
  through the existing Q (QLinearAdd), a Resize of a dequantized tensor gets its input's Q/DQ on its output
  (UINT8 Resize, then QLinearConcat), a MaxPool of a Relu output keeps zero point 0 (UINT8 MaxPool).
  Together: no float Add, Concat or MaxPool left in DeepLabv3+ MobileNetV2 / ResNet-50 (tests/graph/test_cpu_int8).
- An equalized ReLU6's per-channel Min (deploykit.calib.equalize) runs on UINT8 after the Q, the same codes
  (quantized_mins): between Conv and Q it kept 34 of 61 MobileNetV2 convolutions out of QLinearConv.
- 7-bit weights on x86 CPUs without VNNI (deploykit.graph.seven_bit): the u8 x s8 kernels of both runtimes
  saturate in int16 there (their depthwise kernels do not: depthwise convs keep full range); with VNNI (and AMX)
  full-range weights are kept. Quantized from the float weights when the source model is given (rounded once),
  else from the INT8 codes. The sidecar records the choice and the CPU flags.
- A quantized conv whose output the placement leaves float (the logits conv, deploykit.calib.qdq) stays a float
  Conv on dequantized inputs: ORT needs a Q after it to fuse, and the exact alternative, ConvInteger + rescale,
  took 8.5% of MobileNetV2 DeepLabv3+'s time against 0.9% for the float Conv (ORT profiler, this Zen CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from deploykit.graph.seven_bit import float_weights, needs_seven_bit_weights, seven_bit_weights
from deploykit.graph.unsigned import quantized_adds, quantized_mins, quantized_resizes, unsigned_activations
from deploykit.io.metadata import read_observed_ranges


@dataclass(frozen=True)
class Lowered:
    model: onnx.ModelProto
    unsigned: int  # QuantizeLinear nodes turned UINT8
    seven_bit: int = 0  # weights quantized to [-64, 64]
    seven_bit_from_float: int = 0  # of which from the float weights (rounded once)

    def facts(self) -> dict[str, int]:
        """What the sidecar records under build_options.int8_lowering."""
        return {"uint8_activations": self.unsigned, "seven_bit_weights": self.seven_bit,
                "seven_bit_from_float": self.seven_bit_from_float}


def lower_for_cpu(model: onnx.ModelProto, *, seven_bit: bool | None = None,
                  float_source: onnx.ModelProto | None = None) -> Lowered:
    """A lowered copy of `model` (module docstring); a model without Q/DQ comes back unchanged. `seven_bit`
    defaults to this CPU's need; `float_source`, the float model the Q/DQ graph was built from, gives 7-bit
    weights rounded once from the float weights."""
    lowered, unsigned = unsigned_activations(model, observed=read_observed_ranges(model))
    quantized_mins(lowered)
    quantized_adds(lowered)
    quantized_resizes(lowered)
    count = from_float = 0
    if needs_seven_bit_weights() if seven_bit is None else seven_bit:
        floats = float_weights(lowered, float_source) if float_source is not None else None
        count, from_float = seven_bit_weights(lowered, floats)
    return Lowered(lowered, unsigned, count, from_float)
