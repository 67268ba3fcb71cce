"""Distillation: train the float weights and biases of the quantized layers so that the graph, quantized as its
backend computes it, reproduces the float model's outputs on the calibration inputs.

The per-layer steps (bias correction, AdaRound) make each layer close to its float self; the errors of 61
layers still add up, and a label flips wherever the float model's top two scores are closer than the summed
error. On the demo's DeepLabv3+ MobileNetV2 quantizing the weights alone and the activations alone each cost as
much pixel agreement as both together (0.973 and 0.973 against 0.9715 on 12 report images), so no single
layer or tensor is to blame. This step optimizes the network's output instead, the objective of
quantization-aware training with the float model as teacher (ModelOpt's "QAD", and the distillation step of
QDrop and BRECQ), but on the calibration inputs and for a few dozen steps: the teacher is the float model run by
ONNX Runtime, the student the deployed graph run by PyTorch (deploykit.calib.torch_graph), each weight a
float variable rounded with a straight-through gradient on its own per-channel grid, the biases free; the loss is
the squared difference of the outputs relative to the teacher's mean square, weighted towards the positions
where the teacher's top two classes are close (`_loss`); each step reads one calibration input or its mirror
image.

The student is the graph as deployed (`as_deployed`: 7-bit weights and UINT8 activations where the CPU backend
lowers to them; TensorRT's symmetric INT8 graph itself), so what is trained is what runs. The result is a new
float model: the trained weights and biases written into the float source, from which every later build derives
its codes by rounding to nearest, as for an untrained model. Each channel's largest weight is not trained, so
its grid (max |w| / levels) stays the same and rounding to nearest gives back exactly the trained codes; the
other weights stay within it. The biases the trained graph read already held bias correction's shift; the float
model gets the trained bias less that shift, and the builder adds the shift back to the quantized layers.
The same build with the same thread count gives the same weights (fixed seeds); another thread count can sum
the gradients in another order, and the training takes another path. On the demo's 12 report images the
DeepLabv3+ ONNX Runtime artifact scored 0.9753 in one run (1 thread, before subnormals were flushed) and 0.971
in another (2 threads, flushed; benchmarks/results/int8_recovery_distill.md, cpu_peers_distill.md), while on the
calibration data's distribution it moved up in both.
Rounding makes the loss jump from step to step, so every CHECK_EVERY steps the loss over all the calibration
inputs (each read once, unmirrored) is measured, and the parameters with the lowest are kept: the untrained
ones unless a trained graph did better.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from deploykit.calib.torch_graph import TorchGraph, Unsupported, round_ste
from deploykit.evaluate import session_from_onnx
from deploykit.graph.tensors import index_graph
from deploykit.types import Progress

CHECK_EVERY = 16  # steps between two measurements of the loss over every calibration input


@dataclass(frozen=True)
class Distillation:
    """--int8-distill STEPS (deploykit.calib.distill); 0 leaves it out."""

    steps: int = 96
    weight_lr: float = 3e-3  # Adam's step, in grid steps of the weight's own channel
    bias_lr: float = 1e-4
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trained:
    """What a quantized node's training gave: its float weight and its bias as the quantized graph reads it."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class Distilled:
    nodes: dict[str, Trained]  # empty when the trained model was not better or could not be trained
    report: dict[str, Any]


@dataclass(frozen=True)
class _Variable:
    node: str
    codes: str  # the deployed graph's INT8 initializer the weight's codes replace
    bias: str | None
    scale: Any  # per-channel grid, broadcast to the weight
    limit: float  # the largest code magnitude of the layer's grid
    frozen: Any  # 1 where the weight is its channel's largest magnitude (not trained)


def _variables(deployed: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> list[_Variable]:
    """The trainable layers: each named node of `weights` whose weight the deployed graph dequantizes from
    integer codes along its output channels."""
    import torch

    inits = {i.name: numpy_helper.to_array(i) for i in deployed.graph.initializer}
    producer = index_graph(deployed, infer_types=False).producer
    found = []
    for node in deployed.graph.node:
        dq = producer.get(node.input[1]) if node.name in weights and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        codes, scale, weight = inits[dq.input[0]], inits[dq.input[1]], weights[node.name]
        if codes.shape != weight.shape or scale.ndim != 1 or scale.shape[0] != weight.shape[0]:
            continue
        grid = scale.reshape(-1, *([1] * (weight.ndim - 1))).astype(np.float32)
        flat = np.abs(weight).reshape(weight.shape[0], -1)
        frozen = np.zeros_like(flat)
        frozen[np.arange(flat.shape[0]), flat.argmax(axis=1)] = 1
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        found.append(_Variable(node.name, dq.input[0], bias, torch.from_numpy(grid),
                               float(np.abs(codes).max()), torch.from_numpy(frozen.reshape(weight.shape))))
    return found


def _loss(student: Sequence[Any], teacher: Sequence[np.ndarray]) -> Any:
    """Mean squared difference relative to the teacher's mean square, summed over the outputs; where an output has
    classes (axis 1, two or more), each position is weighted by exp(-margin / median margin), the margin being
    the teacher's top score less its second: labels flip where the margin is small."""
    import torch

    total = 0
    for s, t in zip(student, teacher, strict=True):
        target = torch.from_numpy(t)
        squared = (s - target) ** 2
        if target.dim() >= 3 and target.shape[1] >= 2:
            top = torch.topk(target, 2, dim=1).values
            margin = top[:, 0] - top[:, 1]
            weight = torch.exp(-margin / margin.median().clamp_min(1e-6)).unsqueeze(1)
            squared = squared * weight / weight.mean()
        total = total + squared.mean() / (target ** 2).mean().clamp_min(1e-12)
    return total


def _untrained(exc: Unsupported) -> Distilled:
    return Distilled({}, {"trained": False, "why": f"not trained: {exc} is not computed by deploykit's PyTorch "
                                                   "runner (deploykit.calib.torch_graph)"})


def distill(deployed: onnx.ModelProto, teacher: onnx.ModelProto, weights: Mapping[str, np.ndarray],
            inputs: Sequence[np.ndarray], options: Distillation, *, threads: int | None,
            progress: Progress) -> Distilled:
    """Train the layers of `weights` (node -> float weight of `teacher`) in `deployed` (module docstring)."""
    import torch

    try:
        graph = TorchGraph(deployed)
    except Unsupported as exc:
        return _untrained(exc)
    variables = _variables(deployed, weights)
    if not variables or not inputs or options.steps <= 0:
        return Distilled({}, {"trained": False, "why": "nothing to train"})
    torch.manual_seed(options.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads or previous_threads))
    # Adam's moment estimates of tiny gradients turn subnormal, and x86 computes subnormals in microcode: with
    # 2 threads the demo model's steps went from about 2 s to minutes each after some 40 steps
    torch.set_flush_denormal(True)
    try:
        return _train(graph, deployed, teacher, weights, variables, inputs, options, progress)
    except Unsupported as exc:  # a form found only when the node runs (its inputs' shapes)
        return _untrained(exc)
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_flush_denormal(False)


def _train(graph: TorchGraph, deployed: onnx.ModelProto, teacher: onnx.ModelProto,
           weights: Mapping[str, np.ndarray], variables: list[_Variable], inputs: Sequence[np.ndarray],
           options: Distillation, progress: Progress) -> Distilled:
    import torch

    inits = {i.name: numpy_helper.to_array(i) for i in deployed.graph.initializer}
    units = {v.node: torch.nn.Parameter(torch.from_numpy((weights[v.node] / v.scale.numpy()).astype(np.float32)))
             for v in variables}
    biases = {v.node: torch.nn.Parameter(torch.from_numpy(inits[v.bias].astype(np.float32)))
              for v in variables if v.bias is not None}
    optimizer = torch.optim.Adam([{"params": list(units.values()), "lr": options.weight_lr},
                                  {"params": list(biases.values()), "lr": options.bias_lr}])
    reference = session_from_onnx(teacher.SerializeToString(), threads=torch.get_num_threads())
    feeds = [i.name for i in reference.get_inputs()]

    def values() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for v in variables:
            found[v.codes] = torch.clamp(round_ste(units[v.node]), -v.limit, v.limit)
            if v.bias is not None:
                found[v.bias] = biases[v.node]
        return found

    def loss(x: np.ndarray) -> Any:
        target = reference.run(None, {feeds[0]: x})
        return _loss(graph.run([torch.from_numpy(x)], values()), target)

    def mean_loss() -> float:
        with torch.no_grad():
            return float(np.mean([float(loss(x)) for x in inputs]))

    started = time.perf_counter()
    before = best = mean_loss()
    kept = None  # the parameters at the lowest loss measured so far (None: the untrained ones)
    rng = np.random.default_rng(options.seed)
    for step in range(options.steps):
        x = inputs[int(rng.integers(len(inputs)))]
        if rng.random() < 0.5:
            x = np.ascontiguousarray(x[..., ::-1])
        optimizer.zero_grad()
        loss(x).backward()
        for v in variables:
            grad = units[v.node].grad
            if grad is not None:
                grad.mul_(1 - v.frozen)
        optimizer.step()
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == options.steps:
            measured = mean_loss()
            progress(f"distillation: step {step + 1}/{options.steps}, loss {measured:.4g} (untrained {before:.4g})")
            if measured < best:
                best = measured
                kept = ({k: p.detach().clone() for k, p in units.items()},
                        {k: p.detach().clone() for k, p in biases.items()})
    report = {"trained": kept is not None, "layers": len(variables), "steps": options.steps,
              "loss_before": float(f"{before:.6g}"), "loss_after": float(f"{best:.6g}"),
              "seconds": round(time.perf_counter() - started, 1)}
    if kept is None:
        return Distilled({}, {**report, "why": "no trained graph had a lower loss: the untrained one is kept"})
    best_units, best_biases = kept
    with torch.no_grad():
        trained = {v.node: Trained(torch.clamp(best_units[v.node], -v.limit, v.limit).mul(v.scale).numpy(),
                                   best_biases[v.node].numpy().copy() if v.node in best_biases else None)
                   for v in variables}
    return Distilled(trained, report)
