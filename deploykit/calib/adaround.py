"""AdaRound: choose, per weight, rounding up or down so that each quantized layer reproduces its float output.

Rounding every weight to the nearest INT8 step is not the best choice for the layer's output: the errors of
a channel's weights add up over its inputs, and rounding some weights the other way cancels them (Nagel et al.,
"Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020; AIMET's AdaRound). For each layer a
continuous variable V per weight picks floor(w / s) + h(V), h a rectified sigmoid, trained to minimize

    || (W~ - W) x ||^2 / || (W_nearest - W) x ||^2  +  lambda * mean(1 - |2 h(V) - 1|^beta)

over the layer's inputs x in the float model (the paper's layer-wise objective), the regularizer, its beta
annealed from 20 to 2 after a warm-up, pushing every h to 0 or 1 (lambda 1 against the reconstruction error
relative to nearest rounding's: on the test layer of tests/calib/test_adaround.py, lambda 0.01 / 0.1 / 1 left
0.86 / 0.61 / 0.36 of nearest rounding's error, and 1 to 10 the same 0.36 from 500 iterations on). The data
enter only through the Gram matrix G = X X^T of the layer's input patches (convolutions unfolded, per group),
accumulated over the calibration inputs at up to `positions` sampled output positions each, so the
optimization's cost does not depend on the image size.

The loss needs d G d^T only (d = W~ - W), so each layer is optimized on ||d L||^2 with L (K, r) = the Gram's
leading eigenvectors scaled by the roots of their eigenvalues, r the fewest holding `energy` (0.9999) of its
trace: each step costs Cout * K * r instead of Cout * K^2. r is at most the number of sampled positions, which
is what makes the deep layers cheap at small inputs (the demo's DeepLabv3+ at 129x129, 2 calibration inputs: its
ASPP 3x3 convs have K = 2880 and r = 159-162; its decoder 3x3 convs, 33x33 outputs, K = 2736 / 2304 and r = 705 /
1122). Per layer, the error relative to nearest rounding (exact G) averaged 0.481 with r and 0.480 with the full
G over that model's 48 smaller layers; energy 0.999 was worse on several (the first conv 0.26 against 0.17).
CPU seconds for one layer (1 thread, loaded 2-core AMD EPYC without AVX-512; the full G's 500 iterations
extrapolated from 100): ASPP 3x3 conv 16 against about 100, decoder 3x3 conv 28 against about 75 (its r is
large, and the eigendecomposition of a 2880x2880 G alone takes about 8).
The gradient and Adam are written out (autograd's bookkeeping cost more than the arithmetic on small layers,
about 2.5x on a 32x192 1x1 conv). The codes are kept only where their exact loss beats nearest rounding's.

Asymmetric mode (`asymmetric`, `--int8-rounding adaround-asymmetric`, the paper's "asymmetric
reconstruction"): the layers are optimized in graph order, each on its inputs X_q from the Q/DQ graph with the
codes chosen so far (weights rounded as chosen, activations quantized as the graph does; only the nodes the
input needs are run) against the float model's output W X_f, so each layer also absorbs its inputs'
quantization error: ||W~ X_q - W X_f||^2 = d G_q d^T + 2 d . (W (X_q - X_f) X_q^T) + const, the same factor
of G_q with a constant target row b per channel (||d L + b||^2). It re-runs the graph up to each layer on every
calibration input, so it is slower. On the two-layer test of tests/calib/test_adaround.py it needed more
iterations than float inputs do: at 500 it erred 10% more than the float-input mode, at 1000 9% less. On the
trained models (benchmarks/results/int8_recovery_adaround_asymmetric.md, 500 iterations) it is worse than the
float-input mode on DeepLabv3+ MobileNetV2 (pixel agreement 0.9690 / 0.9630 / 0.9622 in TensorRT form / ONNX
Runtime / OpenVINO, against 0.9741 / 0.9679 / 0.9678) and better on MSI-Net (CC 0.9763 / 0.9928 / 0.9918,
against 0.9604 / 0.9866 / 0.9866), so it stays an option. (An
earlier try, every layer against the same all-INT8 graph with float targets not separated, measured worse than
nearest rounding on the trained DeepLabv3+ MobileNetV2: pixel agreement 0.896 against 0.968.)

The result is INT8 codes on the same per-channel grid (scale max|w| / 127, narrow range), written as INT8
initializers with a DequantizeLinear like every deploykit weight: TensorRT reads the codes as they are and does
not round the weights again.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from deploykit.calib.collect import probe_model
from deploykit.errors import CalibrationError
from deploykit.evaluate import session_from_onnx
from deploykit.graph.tensors import remove_unused_initializers
from deploykit.types import Progress, Progressed

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
ADAM_LR, ADAM_BETAS = 1e-2, (0.9, 0.999)
QMAX = 127
SMALL_LAYER_FLOPS = 20_000_000  # multiply-adds per reconstruction step below which one thread is faster
Quantized = Callable[[Mapping[str, np.ndarray]], onnx.ModelProto]  # codes chosen so far -> the Q/DQ graph


@dataclass(frozen=True)
class AdaRound:
    """--int8-rounding adaround (deploykit.calib.adaround); nearest rounding when not asked for."""

    iterations: int = 500
    regularization: float = 1.0  # lambda, against the reconstruction error relative to nearest rounding's
    warmup: float = 0.2  # share of the iterations without the rounding regularizer
    positions: int = 2048  # output positions sampled per input and layer
    energy: float = 0.9999  # share of each Gram matrix's trace its low-rank factor keeps
    asymmetric: bool = False  # inputs from the graph with the layers before INT8 (module docstring)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rounding": "adaround", **asdict(self)}


@dataclass(frozen=True)
class Layer:
    node: str
    weight: np.ndarray  # float weight (Cout, Cin/groups, *kernel)
    scale: np.ndarray  # per output channel
    groups: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    float_input: str  # the layer's input tensor in the float model


def _ints(node: onnx.NodeProto, name: str, default: Sequence[int]) -> tuple[int, ...]:
    return next((tuple(int(v) for v in a.ints) for a in node.attribute if a.name == name), tuple(default))


def conv_layers(float_model: onnx.ModelProto, scales: Mapping[str, np.ndarray],
                weights: Mapping[str, np.ndarray]) -> list[Layer]:
    """The 2-D Conv nodes named in `scales` (node -> per-channel weight scale) with their float weights."""
    layers = []
    for node in float_model.graph.node:
        if node.op_type != "Conv" or node.name not in scales or node.name not in weights:
            continue
        weight = weights[node.name]
        if weight.ndim != 4 or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in node.attribute):
            continue
        layers.append(Layer(node.name, weight.astype(np.float32), scales[node.name],
                            next((int(a.i) for a in node.attribute if a.name == "group"), 1),
                            tuple(weight.shape[2:]), _ints(node, "strides", (1, 1)),
                            _ints(node, "pads", (0, 0, 0, 0)), _ints(node, "dilations", (1, 1)), node.input[0]))
    return layers


def input_patches(x: np.ndarray, layer: Layer, rows: np.ndarray, cols: np.ndarray) -> Any:
    """The input patches of the output positions (rows, cols): (groups, K, positions), K ordered as the
    weight's (input channel, kernel row, kernel column); gathered directly, not unfolded over the whole map."""
    import torch

    top, left, bottom, right = layer.pads[0], layer.pads[1], layer.pads[2], layer.pads[3]
    padded = np.pad(x[0], ((0, 0), (top, bottom), (left, right)))
    ky = np.arange(layer.kernel[0]) * layer.dilations[0]
    kx = np.arange(layer.kernel[1]) * layer.dilations[1]
    ys = rows[:, None] * layer.strides[0] + ky[None, :]  # (positions, kh)
    xs = cols[:, None] * layer.strides[1] + kx[None, :]  # (positions, kw)
    patches = padded[:, ys[:, :, None], xs[:, None, :]]  # (C, positions, kh, kw)
    positions = patches.shape[1]
    patches = patches.transpose(0, 2, 3, 1).reshape(layer.groups, -1, positions)
    return torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float64))


def _output_size(x: np.ndarray, layer: Layer) -> tuple[int, int]:
    height, width = x.shape[2] + layer.pads[0] + layer.pads[2], x.shape[3] + layer.pads[1] + layer.pads[3]
    span = [(k - 1) * d + 1 for k, d in zip(layer.kernel, layer.dilations, strict=True)]
    return (height - span[0]) // layer.strides[0] + 1, (width - span[1]) // layer.strides[1] + 1


@dataclass
class Statistics:
    """What a layer's reconstruction loss needs (module docstring), per group: the Gram matrix X X^T of its
    input patches X and, in asymmetric mode, (X - X_float) X^T (the upstream error against the patches)."""

    gram: Any  # torch float64 (groups, K, K)
    cross: Any = None  # torch float64 (groups, K, K), or None: inputs from the float model

    def add(self, patches: Any, float_patches: Any = None) -> None:
        import torch

        self.gram += torch.bmm(patches, patches.transpose(1, 2))
        if float_patches is not None:
            self.cross += torch.bmm(patches - float_patches, patches.transpose(1, 2))


def _sample(value: np.ndarray, layer: Layer, rng: np.random.Generator, positions: int
            ) -> tuple[np.ndarray, np.ndarray]:
    height, width = _output_size(value, layer)
    chosen = rng.choice(height * width, min(height * width, positions), replace=False)
    rows, cols = np.divmod(chosen, width)
    return rows, cols


def _empty(layer: Layer, cross: bool) -> Statistics:
    import torch

    k = layer.weight[0].size
    zeros = torch.zeros((layer.groups, k, k), dtype=torch.float64)
    return Statistics(zeros, zeros.clone() if cross else None)


def gram_matrices(float_model: onnx.ModelProto, layers: Sequence[Layer], inputs: Iterable[np.ndarray],
                  options: AdaRound, *, threads: int | None = None,
                  progress: Progress | None = None) -> dict[str, Statistics]:
    """node -> the Gram matrix per group (groups, K, K) of its input patches in the float model (module
    docstring), summed over `inputs`."""
    tensors = [layer.float_input for layer in layers]
    session = session_from_onnx(probe_model(float_model, tensors).SerializeToString(), threads=threads,
                                optimization="basic")
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(options.seed)
    stats = {layer.node: _empty(layer, cross=False) for layer in layers}
    count = 0
    for x in inputs:
        for layer, value in zip(layers, session.run(tensors, {name: x}), strict=True):
            rows, cols = _sample(value, layer, rng, options.positions)
            stats[layer.node].add(input_patches(value, layer, rows, cols))
        count += 1
        if progress:
            progress(Progressed("AdaRound statistics (inputs)", count, count))
    if not count:
        raise CalibrationError("AdaRound needs calibration inputs; none were read")
    return stats


def _up_to(model: onnx.ModelProto, tensor: str, threads: int | None) -> Any:
    """A session computing only the nodes `tensor` needs (ONNX Runtime runs every node of the graph it is
    given, whatever outputs are asked for)."""
    part = onnx.ModelProto.FromString(model.SerializeToString())
    producer = {output: index for index, node in enumerate(part.graph.node) for output in node.output}
    needed: set[int] = set()
    pending = [tensor]
    while pending:
        index = producer.get(pending.pop())
        if index is not None and index not in needed:
            needed.add(index)
            pending.extend(part.graph.node[index].input)
    kept = [node for index, node in enumerate(part.graph.node) if index in needed]
    del part.graph.node[:]
    part.graph.node.extend(kept)
    del part.graph.output[:]
    part.graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    remove_unused_initializers(part)
    return session_from_onnx(part.SerializeToString(), threads=threads, optimization="basic")


def asymmetric_statistics(layer: Layer, float_model: onnx.ModelProto, quantized: onnx.ModelProto,
                          inputs: Sequence[np.ndarray], options: AdaRound, *, threads: int | None) -> Statistics:
    """The layer's statistics with its input patches from `quantized` (the Q/DQ graph with the layers before it
    INT8) against the float model's patches at the same positions (module docstring)."""
    node = next((n for n in quantized.graph.node if n.name == layer.node), None)
    if node is None:
        raise CalibrationError(f"AdaRound: node {layer.node} is not in the quantized graph")
    session, float_session = _up_to(quantized, node.input[0], threads), _up_to(float_model, layer.float_input,
                                                                                threads)
    name, float_name = session.get_inputs()[0].name, float_session.get_inputs()[0].name
    rng = np.random.default_rng([options.seed, zlib.crc32(layer.node.encode())])
    stats = _empty(layer, cross=True)
    for x in inputs:
        value = session.run(None, {name: x})[0]
        float_value = float_session.run(None, {float_name: x})[0]
        rows, cols = _sample(value, layer, rng, options.positions)
        stats.add(input_patches(value, layer, rows, cols), input_patches(float_value, layer, rows, cols))
    return stats


def factor(stats: Statistics, weight: Any, energy: float) -> tuple[Any, Any, Any]:
    """(L, b, r2) with ||d L + b||^2 + r2 ||d||^2 the layer's loss up to a constant (module docstring), for
    d = W~ - W per group (groups, Cout/groups, K): L (groups, K, r) from the Gram's leading eigenvectors holding
    `energy` of its trace (r the most any group needs), b (groups, Cout/groups, r), zero without a cross term,
    and r2 (groups, 1, 1) the mean eigenvalue of the directions left out. Without r2 the rounding could move its
    error into those directions for free, and once the kept ones are fitted closely they are what remains
    (a 2-channel conv whose inputs span 2 directions: 37% more error than the full Gram's without it)."""
    import torch

    values, vectors = torch.linalg.eigh(stats.gram)  # ascending
    values = values.clamp_min(0.0)
    total = values.sum(dim=1, keepdim=True).clamp_min(1e-300)
    held = torch.flip(values, [1]).cumsum(dim=1) / total  # share of the trace in the top 1, 2, ... directions
    rank = int((held < energy).sum(dim=1).max()) + 1
    rank = min(rank, values.shape[1])
    dropped = values.shape[1] - rank
    residual = (values[:, :dropped].sum(dim=1) / max(dropped, 1)).reshape(-1, 1, 1)
    values, vectors = values[:, -rank:], vectors[:, :, -rank:]
    root = values.sqrt()
    lower = vectors * root[:, None, :]
    if stats.cross is None:
        return lower, torch.zeros((weight.shape[0], weight.shape[1], rank), dtype=torch.float64), residual
    inverse = torch.where(root > root.amax(dim=1, keepdim=True) * 1e-9, 1.0 / root.clamp_min(1e-300), 0.0)
    return lower, torch.bmm(torch.bmm(weight, stats.cross), vectors) * inverse[:, None, :], residual


def _h(v: Any) -> Any:
    import torch

    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def exact_loss(d: Any, stats: Statistics, weight: Any) -> Any:
    """The layer's exact loss (||d X + W E||^2 up to a constant) from the full statistics, float64."""
    import torch

    loss = (torch.bmm(d, stats.gram) * d).sum()
    if stats.cross is not None:
        loss = loss + 2.0 * (torch.bmm(weight, stats.cross) * d).sum()
    return loss


def _descend(v: Any, floor: Any, s: Any, w: Any, lower: Any, target: Any, residual: Any, options: AdaRound) -> None:
    """Adam on V in place for ||d L + b||^2 + r2 ||d||^2 + lambda * mean(1 - |2 h(V) - 1|^beta), the gradient
    written out: autograd's bookkeeping cost more than the arithmetic on all but the largest layers."""
    import torch

    first, second = torch.zeros_like(v), torch.zeros_like(v)
    lower_t = lower.transpose(1, 2)
    warm = int(options.iterations * options.warmup)
    weight = options.regularization / v.numel()
    for step in range(options.iterations):
        sig = torch.sigmoid(v)
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = raw.clamp(0.0, 1.0)
        codes = floor + h
        d = codes.clamp(-QMAX, QMAX) * s - w
        grad = torch.bmm(torch.baddbmm(target, d, lower), lower_t).add_(d * residual).mul_(2.0).mul_(s)
        grad.mul_(codes <= QMAX)
        if step >= warm:
            beta = 20.0 - (20.0 - 2.0) * (step - warm) / max(1, options.iterations - warm)
            centered = 2.0 * h - 1.0
            grad.sub_(centered.abs().pow(beta - 1.0).mul_(torch.sign(centered)).mul_(2.0 * beta * weight))
        grad.mul_(sig * (1.0 - sig) * (ZETA - GAMMA)).mul_((raw > 0.0) & (raw < 1.0))
        first.mul_(ADAM_BETAS[0]).add_(grad, alpha=1.0 - ADAM_BETAS[0])
        second.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1.0 - ADAM_BETAS[1])
        corrected = (second / (1.0 - ADAM_BETAS[1] ** (step + 1))).sqrt_().add_(1e-8)
        v.addcdiv_(first, corrected, value=-ADAM_LR / (1.0 - ADAM_BETAS[0] ** (step + 1)))


def optimize_layer(layer: Layer, stats: Statistics, options: AdaRound) -> np.ndarray:
    """The layer's INT8 codes (Cout, Cin/groups, *kernel) after AdaRound (module docstring)."""
    import torch

    groups = layer.groups
    cout = layer.weight.shape[0]
    w = torch.from_numpy(layer.weight.reshape(groups, cout // groups, -1)).double()
    s = torch.from_numpy(layer.scale.astype(np.float64)).reshape(groups, cout // groups, 1)
    floor = torch.floor(w / s)
    nearest_codes = torch.clamp(torch.round(w / s), -QMAX, QMAX)
    lower, target, residual = factor(stats, w, options.energy)
    nearest = nearest_codes * s - w
    # in units of nearest rounding's error on these inputs, so the regularizer weighs the same in either mode
    baseline = ((torch.bmm(nearest, lower) ** 2).sum() + (residual * nearest**2).sum()).clamp_min(1e-30)
    lower32, target32 = (lower / baseline.sqrt()).float(), (target / baseline.sqrt()).float()
    residual32 = (residual / baseline).float()
    w32, s32, floor32 = w.float(), s.float(), floor.float()
    rest = (w / s - floor).clamp(1e-4, 1 - 1e-4).float()
    v = -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    _descend(v, floor32, s32, w32, lower32, target32, residual32, options)
    with torch.no_grad():
        codes = torch.clamp(floor + (_h(v.double()) >= 0.5).double(), -QMAX, QMAX)
        if exact_loss(codes * s - w, stats, w) > exact_loss(nearest, stats, w):
            codes = nearest_codes  # never worse than nearest on the exact loss
    return codes.reshape(layer.weight.shape).numpy().astype(np.int8)


def adaround(float_model: onnx.ModelProto, scales: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
             inputs: Iterable[np.ndarray], options: AdaRound, *, quantized: Quantized | None = None,
             threads: int | None = None, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """node -> its AdaRound INT8 codes, for the 2-D Convs of `float_model` named in `scales` (node -> per-channel
    scale) and `weights` (node -> float weight). Asymmetric mode needs `quantized`: the Q/DQ graph with the
    codes chosen so far (node -> codes; nearest rounding for the rest)."""
    import torch

    layers = conv_layers(float_model, scales, weights)
    if not layers:
        return {}
    if options.asymmetric:
        if quantized is None:
            raise CalibrationError("asymmetric AdaRound needs the quantized graph")
        data = list(inputs)
        if not data:
            raise CalibrationError("AdaRound needs calibration inputs; none were read")
    else:
        grams = gram_matrices(float_model, layers, inputs, options, threads=threads, progress=progress)
    codes: dict[str, np.ndarray] = {}
    before = torch.get_num_threads()
    try:
        for count, layer in enumerate(layers, start=1):
            if options.asymmetric:
                assert quantized is not None
                stats = asymmetric_statistics(layer, float_model, quantized(codes), data, options,
                                              threads=threads)
            else:
                stats = grams.pop(layer.node)
            # One thread for small layers: torch's thread pool costs more than the work (a 6x36 @ 36x36
            # product took 2 ms with 2 threads against 4 us with one on a loaded 2-core machine).
            flops = layer.weight.shape[0] * (layer.weight[0].size ** 2) // layer.groups
            torch.set_num_threads(1 if flops < SMALL_LAYER_FLOPS else (threads or before))
            codes[layer.node] = optimize_layer(layer, stats, options)
            torch.set_num_threads(before)
            if progress:
                progress(Progressed("AdaRound (layers)", count, len(layers)))
    finally:
        torch.set_num_threads(before)
    return codes
