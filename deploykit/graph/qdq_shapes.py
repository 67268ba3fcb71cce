"""The shapes TensorRT's Q/DQ layers take (scale and zero point against the data), for the Q/DQ rule of
deploykit.graph.lint_qdq. Sources, both read for 10.x and 11.x:
- onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.12+), each kINVALID_NODE: "Cannot have scale with
  no coefficients."; "The scale and zero point must have the same volume." (a constant zero point, unless FP8);
  a scale of more than one coefficient is 1-D (per channel) or of the data's rank (blocks), else "Invalid rank for
  the scale tensor"; blocks: "Only a single blocking dimension is allowed." and "Inferred block size is not an
  integer." -- the parser infers the block from the shapes and never reads ONNX's block_size; and "4-bit
  quantization requies an even number of elements." (static data quantized to INT4/FP4).
- NVIDIA/TensorRT include/NvInfer.h IQuantizeLayer / IDequantizeLayer (v10.16 l.5526-5535 / l.5678-5687, v11.1
  l.5349-5358 / l.5503-5512): "scale and zeroPt should have identical dimensions, and rank lower or equal to 2";
  for blocks "the same rank as the input tensor" and "the shape of scale tensor must match the shape of the input,
  except for the blocking dimension (the last or second to last dimension)". A block scale of rank <= 2 makes
  every axis the last or second to last, so the rank bound is the one that refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Shape = tuple[int, ...]  # -1: a dimension that is not fixed


@dataclass(frozen=True)
class ShapeProblem:
    rule: str
    severity: Literal["error", "warning"]  # error: TensorRT refuses; warning: it builds and computes otherwise
    why: str
    fix: str


_RECALIBRATE = "re-export the Q/DQ graph (ModelOpt or deploykit's `build-engine --int8`) with one scale per block"


def qdq_shape_problems(data: Shape | None, scale: Shape | None, zero_size: int | None, four_bit: bool,
                       block: tuple[int, int] | None) -> list[ShapeProblem]:
    """What TensorRT refuses in a Q/DQ of `data` with a constant `scale` (shapes; None: unknown) and a constant zero
    point of `zero_size` elements (None: none, or FP8); `four_bit`: it quantizes to INT4/FP4; `block`: ONNX's
    (axis, block_size) when the node sets block_size."""
    found = []
    if scale is not None and math.prod(scale) == 0:
        found.append(ShapeProblem("qdq-scale", "error", "a scale with no coefficients: TensorRT's parser refuses it",
                                  "give the node a scale (one coefficient, or one per channel)"))
    elif scale is not None and zero_size is not None and zero_size != math.prod(scale):
        found.append(ShapeProblem("qdq-zero-point-size", "error",
                                  f"a zero point of {zero_size} elements for {math.prod(scale)} scales: TensorRT "
                                  "needs one zero point per scale", "give the zero point the scale's shape"))
    if scale is not None and data is not None and math.prod(scale) > 1 and len(scale) > 1:
        found += _block_problems(data, scale, block)
    if four_bit and data is not None and min(data, default=1) >= 0 and math.prod(data) % 2:
        found.append(ShapeProblem("qdq-4bit-odd", "error",
                                  f"4-bit quantization of {math.prod(data)} elements (shape {list(data)}): TensorRT "
                                  "packs two per byte and needs an even number", "pad the tensor to an even size, "
                                  "or quantize it to INT8/FP8"))
    return found


def _block_problems(data: Shape, scale: Shape, block: tuple[int, int] | None) -> list[ShapeProblem]:
    if len(scale) != len(data):
        return [ShapeProblem("qdq-scale-rank", "error",
                             f"a scale of shape {list(scale)} for data of rank {len(data)}: TensorRT takes one "
                             "scale, one per channel (1-D), or block scales of the data's rank", _RECALIBRATE)]
    if len(data) > 2:
        return [ShapeProblem("qdq-block-rank", "error",
                             f"block quantization of a rank-{len(data)} tensor: TensorRT's block scales have rank "
                             "<= 2, blocking the last or second to last axis", "block-quantize 2-D weights only "
                             "(MatMul/Gemm), or quantize per channel")]
    if min(data) < 0:
        return []  # the parser checks blocks of static shapes only
    blocked = [i for i, (d, s) in enumerate(zip(data, scale, strict=True)) if d != s]
    if len(blocked) != 1 or data[blocked[0]] % scale[blocked[0]]:
        return [ShapeProblem("qdq-block-shape", "error",
                             f"block scales of shape {list(scale)} for data of shape {list(data)}: TensorRT needs "
                             "the data's shape with one axis divided by a whole block size", _RECALIBRATE)]
    axis, size = blocked[0], data[blocked[0]] // scale[blocked[0]]
    if block is not None and (block[0] % len(data), block[1]) != (axis, size):
        return [ShapeProblem("qdq-block-size", "warning",
                             f"block_size {block[1]} on axis {block[0]}, but the scale's shape makes blocks of {size} "
                             f"on axis {axis}: TensorRT infers the blocks from the shapes, so the engine computes "
                             "other blocks than ONNX Runtime", "use a block_size that divides the axis, with one "
                             "scale per block")]
    return []
