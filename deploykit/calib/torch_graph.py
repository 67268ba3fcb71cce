"""An ONNX graph run by PyTorch, differentiably, so a Q/DQ graph can be trained against its float model
(deploykit.calib.distill).

Each node becomes the torch function that computes what the ONNX operator defines, in float32. Q/DQ pairs are
fake quantization: QuantizeLinear rounds with a straight-through gradient (round(x) forward, identity backward)
and clamps to its zero point's type, so the gradient of a scale is LSQ's (Esser et al., "Learned Step Size
Quantization", ICLR 2020). The operators are those of the dense-prediction graphs deploykit quantizes; a graph
with any other operator is refused (`Unsupported`), and the caller leaves the step out, saying why.
Shape arithmetic (Shape, Gather, Slice, Concat of sizes) runs on integer tensors, without gradients.

It computes what ONNX Runtime computes up to the order of float sums: PyTorch's convolutions add in another
order than ONNX Runtime's, and where a sum lands on the other side of a rounding boundary its code moves by one
step, which later layers carry on. On the generated graphs of tests/calib/test_torch_graph.py the outputs are
equal; on DeepLabv3+ MobileNetV2's INT8 graph at 513x513 the argmax agreed on 0.9998 of a photograph's pixels
and on 0.9925 of a noise image's (mean relative difference 0.006).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
# Resize's coordinate transformations: output index i -> source position (ONNX's Resize definition)
SOURCE_POSITION: dict[str, Callable[[np.ndarray, Any, int, int], np.ndarray]] = {
    "half_pixel": lambda i, scale, length, out: (i + 0.5) / scale - 0.5,
    "pytorch_half_pixel": lambda i, scale, length, out: (i + 0.5) / scale - 0.5 if out > 1 else i * 0,
    "align_corners": lambda i, scale, length, out: i * np.float32(length - 1) / np.float32(out - 1) if out > 1
    else i * 0,
    "asymmetric": lambda i, scale, length, out: i / scale,
}


class Unsupported(Exception):
    """The graph has an operator (or an attribute) this module does not compute."""


def round_ste(x: Any) -> Any:
    """round(x) forward, the identity's gradient backward."""
    return x + (x.round() - x).detach()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any, default: str) -> str:
    return value.decode() if isinstance(value, bytes) else (value or default)


def _per_axis(value: Any, like: Any, axis: int) -> Any:
    if value.dim() != 1 or like.dim() <= 1:
        return value
    shape = [1] * like.dim()
    shape[axis % like.dim()] = -1
    return value.reshape(shape)


def _pad_list(pads: Sequence[int]) -> list[int]:
    """ONNX pads (begin of each axis..., end of each axis...) in F.pad's order (last axis first, begin, end)."""
    half = len(pads) // 2
    flat: list[int] = []
    for b, e in zip(reversed(pads[:half]), reversed(pads[half:]), strict=True):
        flat += [int(b), int(e)]
    return flat


def _pads(pads: Sequence[int]) -> tuple[list[int], bool]:
    """ONNX pads as torch's symmetric padding when they are, else F.pad's list."""
    half = len(pads) // 2
    begin, end = list(pads[:half]), list(pads[half:])
    return (begin, True) if begin == end else (_pad_list(pads), False)


class _Ops:
    """One method per ONNX operator: (node attributes, inputs) -> outputs."""

    def __init__(self) -> None:
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        # operators without attributes: the torch function of their inputs
        self.plain: dict[str, Callable[..., Any]] = {
            "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "HardSwish": F.hardswish,
            "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Erf": torch.erf,
            "Floor": torch.floor, "Ceil": torch.ceil, "Neg": operator.neg, "Identity": lambda x: x,
            "Not": lambda x: ~x.bool(), "Add": operator.add, "Sub": operator.sub, "Mul": operator.mul,
            "Pow": torch.pow, "Equal": operator.eq, "Less": operator.lt, "Greater": operator.gt,
            "Min": lambda *xs: functools.reduce(torch.minimum, xs),
            "Max": lambda *xs: functools.reduce(torch.maximum, xs),
        }

    def find(self, op_type: str) -> Callable[..., Any] | None:
        """The function computing `op_type`, called with (attributes, *inputs); None when there is none."""
        if op_type in self.plain:
            function = self.plain[op_type]
            return lambda a, *xs: function(*xs)
        method = getattr(self, op_type, None) if op_type[:1].isupper() else None
        return method if callable(method) else None

    def Conv(self, a: dict[str, Any], x: Any, w: Any, b: Any = None) -> Any:
        if _text(a.get("auto_pad"), "NOTSET") != "NOTSET":
            raise Unsupported("Conv auto_pad")
        padding, symmetric = _pads(a.get("pads", [0] * (2 * (w.dim() - 2))))
        if not symmetric:
            x, padding = self.F.pad(x, padding), [0] * (w.dim() - 2)
        conv = {3: self.F.conv1d, 4: self.F.conv2d, 5: self.F.conv3d}[w.dim()]
        return conv(x, w, b, stride=a.get("strides", 1), padding=padding, dilation=a.get("dilations", 1),
                    groups=a.get("group", 1))

    def ConvTranspose(self, a: dict[str, Any], x: Any, w: Any, b: Any = None) -> Any:
        if w.dim() != 4 or "output_shape" in a or _text(a.get("auto_pad"), "NOTSET") != "NOTSET":
            raise Unsupported("ConvTranspose form")
        padding, symmetric = _pads(a.get("pads", [0, 0, 0, 0]))
        if not symmetric:
            raise Unsupported("ConvTranspose asymmetric pads")
        return self.F.conv_transpose2d(x, w, b, stride=a.get("strides", 1), padding=padding,
                                       output_padding=a.get("output_padding", 0), groups=a.get("group", 1),
                                       dilation=a.get("dilations", 1))

    def Gemm(self, a: dict[str, Any], x: Any, w: Any, b: Any = None) -> Any:
        x = x.t() if a.get("transA", 0) else x
        w = w.t() if a.get("transB", 0) else w
        y = a.get("alpha", 1.0) * x @ w
        return y if b is None else y + a.get("beta", 1.0) * b

    def MatMul(self, a: dict[str, Any], x: Any, y: Any) -> Any:
        return x @ y

    def QuantizeLinear(self, a: dict[str, Any], x: Any, scale: Any, zero: Any = None) -> Any:
        axis = a.get("axis", 1)
        low, high = INT_RANGES[np.dtype(np.uint8)] if zero is None else zero.range
        z = 0.0 if zero is None else _per_axis(zero.value, x, axis)
        return self.torch.clamp(round_ste(x / _per_axis(scale, x, axis)) + z, low, high)

    def DequantizeLinear(self, a: dict[str, Any], q: Any, scale: Any, zero: Any = None) -> Any:
        axis = a.get("axis", 1)
        z = 0.0 if zero is None else _per_axis(zero.value, q, axis)
        return (q - z) * _per_axis(scale, q, axis)

    def LeakyRelu(self, a: dict[str, Any], x: Any) -> Any:
        return self.F.leaky_relu(x, a.get("alpha", 0.01))

    def Clip(self, a: dict[str, Any], x: Any, low: Any = None, high: Any = None) -> Any:
        low = a.get("min") if low is None else float(low)
        high = a.get("max") if high is None else float(high)
        return self.torch.clamp(x, low, high)

    def HardSigmoid(self, a: dict[str, Any], x: Any) -> Any:
        return self.torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1)

    def Softmax(self, a: dict[str, Any], x: Any) -> Any:
        return self.torch.softmax(x, a.get("axis", -1))

    def Div(self, a: dict[str, Any], x: Any, y: Any) -> Any:
        return x / y if x.is_floating_point() or y.is_floating_point() else self.torch.div(x, y, rounding_mode="trunc")

    def Concat(self, a: dict[str, Any], *xs: Any) -> Any:
        return self.torch.cat(xs, a["axis"])

    def GlobalAveragePool(self, a: dict[str, Any], x: Any) -> Any:
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def _reduce(self, a: dict[str, Any], x: Any, axes: Any, reduce: Callable[[Any, int, bool], Any]) -> Any:
        dims = a.get("axes") if axes is None else [int(v) for v in axes]
        if not dims and a.get("noop_with_empty_axes", 0):
            return x
        keep = bool(a.get("keepdims", 1))
        for axis in sorted((d % x.dim() for d in (dims or range(x.dim()))), reverse=True):
            x = reduce(x, axis, keep)
        return x

    def ReduceMean(self, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        return self._reduce(a, x, axes, lambda t, d, k: t.mean(dim=d, keepdim=k))

    def ReduceSum(self, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        return self._reduce(a, x, axes, lambda t, d, k: t.sum(dim=d, keepdim=k))

    def ReduceMax(self, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        return self._reduce(a, x, axes, lambda t, d, k: t.amax(dim=d, keepdim=k))

    def ReduceMin(self, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        return self._reduce(a, x, axes, lambda t, d, k: t.amin(dim=d, keepdim=k))

    def Pad(self, a: dict[str, Any], x: Any, pads: Any = None, value: Any = None, axes: Any = None) -> Any:
        if axes is not None:
            raise Unsupported("Pad axes")
        flat = _pad_list([int(v) for v in (a["pads"] if pads is None else pads)])
        mode = _text(a.get("mode"), "constant")
        if mode == "constant":
            fill = a.get("value", 0.0) if value is None or value.numel() == 0 else float(value)
            return self.F.pad(x, flat, value=fill)
        trimmed = flat[:2 * (x.dim() - 2)]  # torch pads reflect/replicate over the spatial axes only
        if any(flat[len(trimmed):]):
            raise Unsupported(f"Pad {mode} of the batch or channel axis")
        return self.F.pad(x, trimmed, mode={"reflect": "reflect", "edge": "replicate"}.get(mode, mode))

    # shape arithmetic of dynamic-shape exports (integer tensors, no gradient)
    def ConstantOfShape(self, a: dict[str, Any], shape: Any) -> Any:
        value = a.get("value")
        fill = _tensor(numpy_helper.to_array(value), self.torch) if value is not None else self.torch.tensor([0.0])
        return fill.reshape(-1)[:1].expand([int(d) for d in shape]).clone()

    def Expand(self, a: dict[str, Any], x: Any, shape: Any) -> Any:
        return x * self.torch.ones([int(d) for d in shape], dtype=x.dtype)

    def Tile(self, a: dict[str, Any], x: Any, repeats: Any) -> Any:
        return x.repeat([int(r) for r in repeats])

    def Range(self, a: dict[str, Any], start: Any, limit: Any, delta: Any) -> Any:
        return self.torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)

    def Where(self, a: dict[str, Any], condition: Any, x: Any, y: Any) -> Any:
        return self.torch.where(condition.bool(), x, y)

    def _pool(self, a: dict[str, Any], x: Any, pool: Callable[..., Any], **extra: Any) -> Any:
        if _text(a.get("auto_pad"), "NOTSET") != "NOTSET" or x.dim() != 4:
            raise Unsupported("pool form")
        padding, symmetric = _pads(a.get("pads", [0, 0, 0, 0]))
        if not symmetric:
            raise Unsupported("pool asymmetric pads")
        return pool(x, a["kernel_shape"], stride=a.get("strides", 1), padding=padding,
                    ceil_mode=bool(a.get("ceil_mode", 0)), **extra)

    def MaxPool(self, a: dict[str, Any], x: Any) -> Any:
        if a.get("dilations", [1, 1]) != [1, 1]:
            raise Unsupported("MaxPool dilations")
        return self._pool(a, x, self.F.max_pool2d)

    def AveragePool(self, a: dict[str, Any], x: Any) -> Any:
        return self._pool(a, x, self.F.avg_pool2d, count_include_pad=bool(a.get("count_include_pad", 0)))

    def Resize(self, a: dict[str, Any], x: Any, roi: Any = None, scales: Any = None, sizes: Any = None) -> Any:
        mode = _text(a.get("mode"), "nearest")
        transform = _text(a.get("coordinate_transformation_mode"), "half_pixel")
        if x.dim() != 4 or "axes" in a:
            raise Unsupported("Resize of other than the two spatial axes")
        size = None if sizes is None or sizes.numel() == 0 else [int(v) for v in sizes[2:]]
        factor = None if size is not None else [float(v) for v in scales[2:]]
        for axis in (2, 3):
            length = x.shape[axis]
            out = size[axis - 2] if size is not None else int(np.floor(length * factor[axis - 2]))  # type: ignore[index]
            scale = (np.float32(out) / np.float32(length) if size is not None
                     else np.float32(factor[axis - 2]))  # type: ignore[index]
            if mode == "nearest" and transform == "asymmetric" and _text(a.get("nearest_mode"), "") == "floor":
                index = np.floor(np.arange(out, dtype=np.float32) / scale).astype(np.int64).clip(0, length - 1)
                x = self.torch.index_select(x, axis, self.torch.from_numpy(index))
            elif mode == "linear" and transform in SOURCE_POSITION:
                x = self._linear(x, axis, SOURCE_POSITION[transform](np.arange(out, dtype=np.float32), scale,
                                                                     length, out))
            else:
                raise Unsupported(f"Resize {mode}/{transform}")
        return x

    def _linear(self, x: Any, axis: int, source: np.ndarray) -> Any:
        """Linear interpolation along `axis` at the source positions (clamped to the input, as ONNX Runtime)."""
        torch = self.torch
        length = x.shape[axis]
        source = np.clip(source, 0, length - 1).astype(np.float32)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, length - 1)
        shape = [1] * x.dim()
        shape[axis] = -1
        weight = torch.from_numpy((source - low).astype(np.float32)).reshape(shape)
        return (torch.index_select(x, axis, torch.from_numpy(low)) * (1 - weight)
                + torch.index_select(x, axis, torch.from_numpy(high)) * weight)

    def BatchNormalization(self, a: dict[str, Any], x: Any, g: Any, b: Any, mean: Any, var: Any) -> Any:
        return self.F.batch_norm(x, mean, var, g, b, training=False, eps=a.get("epsilon", 1e-5))

    def Flatten(self, a: dict[str, Any], x: Any) -> Any:
        axis = a.get("axis", 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)

    def Reshape(self, a: dict[str, Any], x: Any, shape: Any) -> Any:
        dims = [int(d) if int(d) != 0 else x.shape[i] for i, d in enumerate(shape)]
        return x.reshape(dims)

    def Transpose(self, a: dict[str, Any], x: Any) -> Any:
        return x.permute(a.get("perm", list(reversed(range(x.dim())))))

    def Shape(self, a: dict[str, Any], x: Any) -> Any:
        return self.torch.tensor(list(x.shape)[a.get("start", 0):a.get("end")], dtype=self.torch.int64)

    def Gather(self, a: dict[str, Any], x: Any, i: Any) -> Any:
        return self.torch.index_select(x, a.get("axis", 0), i.reshape(-1).long()).reshape(
            [*x.shape[:a.get("axis", 0)], *i.shape, *x.shape[a.get("axis", 0) + 1:]])

    def Unsqueeze(self, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        for axis in sorted(int(v) for v in (a["axes"] if axes is None else axes)):
            x = x.unsqueeze(axis)
        return x

    def Squeeze(self, a: dict[str, Any], x: Any, axes: Any = None) -> Any:
        dims = a.get("axes") if axes is None else [int(v) for v in axes]
        return x.squeeze() if dims is None else x.squeeze(tuple(dims))

    def Cast(self, a: dict[str, Any], x: Any) -> Any:
        dtype = helper.tensor_dtype_to_np_dtype(a["to"])
        return x.float() if dtype.kind == "f" else x.long()

    def Slice(self, a: dict[str, Any], x: Any, starts: Any, ends: Any, axes: Any = None, steps: Any = None) -> Any:
        axes = range(len(starts)) if axes is None else [int(v) for v in axes]
        steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
        for s, e, axis, step in zip(starts, ends, axes, steps, strict=True):
            # ONNX clamps starts and ends as Python's slices do (numpy's semantics), negative steps included
            kept = np.ascontiguousarray(np.arange(x.shape[axis])[slice(int(s), int(e), step)])
            x = self.torch.index_select(x, axis, self.torch.from_numpy(kept))
        return x


def _tensor(array: np.ndarray, torch: Any) -> Any:
    """A constant as the graph's arithmetic here takes it: float32 for floats, int64 for integers and bools."""
    kind = array.dtype.kind
    return torch.tensor(array.astype(np.float32) if kind == "f" else array.astype(np.int64) if kind in "iub"
                        else array)


class _Zero:
    """A zero point: its value (float, for arithmetic) and its type's range."""

    def __init__(self, array: np.ndarray, torch: Any) -> None:
        self.value = torch.tensor(array.astype(np.float32))
        self.range = INT_RANGES.get(array.dtype) or (-(2 ** 31), 2 ** 31 - 1)


class TorchGraph:
    """`run(inputs, values)`: the graph's outputs, with `values` (name -> tensor) overriding initializers.

    Zero points are kept apart from the other initializers (their type sets the clamp range)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        import torch

        self.torch, self.ops = torch, _Ops()
        graph = model.graph
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        zero_names = {n.input[2] for n in graph.node
                      if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]}
        self.constants: dict[str, Any] = {}
        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            self.constants[init.name] = _Zero(array, torch) if init.name in zero_names else _tensor(array, torch)
        self.nodes: list[tuple[Callable[..., Any], dict[str, Any], list[str], list[str]]] = []
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = _tensor(numpy_helper.to_array(node.attribute[0].t), torch)
                continue
            op = self.ops.find(node.op_type) if node.domain in ("", "ai.onnx") else None
            if op is None:
                raise Unsupported(f"operator {node.op_type}")
            self.nodes.append((op, _attrs(node), list(node.input), list(node.output)))

    def run(self, inputs: Sequence[Any], values: Mapping[str, Any] | None = None) -> list[Any]:
        env: dict[str, Any] = {**self.constants, **(values or {}), **dict(zip(self.inputs, inputs, strict=True))}
        for op, attrs, names, outputs in self.nodes:
            args = [env[n] if n else None for n in names]
            while args and args[-1] is None:
                args.pop()
            result = op(attrs, *args)
            env[outputs[0]] = result
        return [env[o] for o in self.outputs]
