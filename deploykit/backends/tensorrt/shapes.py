"""Optimization-profile shapes for TensorRT engines, derived from an ONNX model's dynamic dimensions (GPU-free).

TensorRT needs, for every input with a dynamic dimension, a (min, opt, max) shape range; the engine runs
any shape in that range and is tuned for `opt`. deploykit's defaults for an NCHW image input whose ONNX
metadata records the model's input size H x W:

    min 1 x C x H/2 x W/2      opt 1 x C x H x W      max 4 x C x 2H x 2W

each height/width rounded to the model's size multiple (min up, max down, opt to the nearest), and a batch
that is fixed in the ONNX kept as it is. `--min-shape/--opt-shape/--max-shape NAME:NxCxHxW` override any
of the three; a range given only in part is completed from the given `opt` (or the defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx

from deploykit.errors import ConfigConflict, InputError, first_line
from deploykit.evaluate import session_from_onnx
from deploykit.graph.tensors import conv_channels
from deploykit.zoo import nearest_side
from deploykit.zoo.sources import MAX_DIM

Shape = tuple[int, ...]
MAX_BATCH = 4  # default max batch of a dynamic batch dimension
LABELS = ("min", "opt", "max")


@dataclass(frozen=True)
class ShapeRange:
    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @staticmethod
    def text(shape: Sequence[int]) -> str:
        return "x".join(str(d) for d in shape)

    def describe(self) -> str:
        return f"min {self.text(self.min)}, opt {self.text(self.opt)}, max {self.text(self.max)}"


@dataclass(frozen=True)
class OnnxInput:
    name: str
    dims: tuple[int | None, ...]  # None: dynamic

    @property
    def dynamic(self) -> bool:
        return any(d is None for d in self.dims)


def onnx_inputs(model: onnx.ModelProto) -> list[OnnxInput]:
    """Graph inputs that are not initializers, with their fixed (int) or dynamic (None) dimensions."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in value.type.tensor_type.shape.dim)
        inputs.append(OnnxInput(value.name, dims))
    return inputs


def pin_channels(model: onnx.ModelProto) -> list[str]:
    """Fix, in `model`, each input's dynamic channel axis to what its first convolution takes: TensorRT refuses a
    convolution over a dynamic 'C' whatever the profile says (NVIDIA/TensorRT include/NvInfer.h addConvolutionNd,
    v10.16 l.8913, v11.1 l.9050: "It is an error to specify a wildcard value for the 'C' dimension of the input
    tensor"). Returns what it did, for the build's graph_rewrites."""
    channels = conv_channels(model)
    done = []
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in channels and len(dims) == 4 and not (dims[1].HasField("dim_value") and dims[1].dim_value):
            dims[1].dim_value = channels[value.name][0]
            done.append(f"input {value.name}: its dynamic channel axis fixed to {channels[value.name][0]}, what "
                        f"convolution {channels[value.name][1]} reads (TensorRT needs it fixed)")
    return done


def parse_shape_specs(texts: Sequence[str], option: str) -> dict[str, Shape]:
    """['input:1x3x512x512', '1x3x256x256'] -> {'input': (1, 3, 512, 512), '': (1, 3, 256, 256)}.

    A spec without a name ('' key) applies to the model's only input.
    """
    shapes: dict[str, Shape] = {}
    for text in texts:
        name, sep, dims_text = text.rpartition(":")
        parts = dims_text.lower().replace(",", "x").split("x")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            dims = ()
        if not dims or any(d <= 0 for d in dims):
            raise InputError(f"{option} {text!r} is not NAME:NxCxHxW with positive sizes; "
                             f"write e.g. {option} input:1x3x512x512")
        if any(d > MAX_DIM for d in dims):  # as --input-shape (zoo.sources.parse_shape): int32 in the kernels
            raise InputError(f"{option} {text!r} has a size above {MAX_DIM}; write e.g. {option} input:1x3x512x512")
        key = name.strip() if sep else ""
        if key in shapes:
            raise InputError(f"{option} is given twice for {key or 'the input'}")
        shapes[key] = dims
    return shapes


def _round(value: float, multiple: int, mode: str) -> int:
    if multiple <= 1:
        rounded = round(value) if mode == "nearest" else int(value) if mode == "down" else -int(-value // 1)
    elif mode == "up":
        rounded = -int(-value // multiple) * multiple
    elif mode == "down":
        rounded = int(value // multiple) * multiple
    else:
        rounded = round(value / multiple) * multiple
    return max(rounded, max(multiple, 1))


def _default_range(inp: OnnxInput, opt: Shape | None, input_size: tuple[int, int] | None,
                   multiple: int, channels: int | None = None) -> ShapeRange:
    """Defaults for one NCHW input: from a given opt shape, else from the model's input size (and the channels its
    first convolution takes when the ONNX leaves them dynamic)."""
    fixed = inp.dims
    if opt is None:
        if len(fixed) != 4 or input_size is None:
            raise InputError(
                f"input {inp.name!r} has dynamic dimensions ({_dims_text(fixed)}) and the ONNX has no deploykit "
                f"input size to derive a profile from; give --opt-shape {inp.name}:"
                f"{'x'.join(str(d or 'N') for d in fixed)} (and --min-shape/--max-shape for a range)")
        h, w = input_size
        opt = (fixed[0] or 1, fixed[1] or channels or 3, _round(h, multiple, "nearest"),
               _round(w, multiple, "nearest"))
    if len(opt) != 4:  # not an image input: a fixed-size profile at opt
        return ShapeRange(opt, opt, opt)
    n, c, h, w = opt
    low = (fixed[0] or 1, c, fixed[2] or _round(h / 2, multiple, "up"), fixed[3] or _round(w / 2, multiple, "up"))
    high = (fixed[0] or max(MAX_BATCH, n), c, fixed[2] or _round(2 * h, multiple, "down"),
            fixed[3] or _round(2 * w, multiple, "down"))
    return ShapeRange(low, opt, high)


def _dims_text(dims: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _named(shapes: Mapping[str, Shape], inputs: Sequence[OnnxInput], option: str) -> dict[str, Shape]:
    names = [i.name for i in inputs]
    out: dict[str, Shape] = {}
    for key, dims in shapes.items():
        if key == "":
            if len(inputs) != 1:
                raise InputError(f"{option} needs NAME: this model has inputs {', '.join(names)}")
            key = names[0]
        if key not in names:
            raise InputError(f"{option} names input {key!r}, but the model's inputs are {', '.join(names)}")
        out[key] = dims
    return out


def _check_given(inp: OnnxInput, label: str, dims: Shape, channels: tuple[int, str] | None) -> None:
    """A shape the user gave, against the ONNX's fixed axes and the channels the model's first convolution takes
    (TensorRT finds a contradiction only when the build has run: NvInfer.h addConvolutionNd needs the input's 'C'
    to match its kernel), named by the option the user wrote."""
    option = f"--{label}-shape {ShapeRange.text(dims)} for {inp.name!r}"
    if len(dims) != len(inp.dims):
        raise ConfigConflict(f"{option} has {len(dims)} dimensions; the input has {len(inp.dims)} "
                             f"({_dims_text(inp.dims)})")
    for axis, (got, want) in enumerate(zip(dims, inp.dims, strict=True)):
        if want is not None and got != want:
            raise ConfigConflict(f"{option}: axis {axis} is fixed to {want} in the ONNX ({_dims_text(inp.dims)})")
    if channels is not None and len(dims) == 4 and dims[1] != channels[0]:
        fixed = ShapeRange.text((dims[0], channels[0], *dims[2:]))
        raise ConfigConflict(f"{option}: the model takes {channels[0]} channels (its convolution {channels[1]!r} "
                             f"reads {channels[0]}), not {dims[1]}; give {inp.name}:{fixed}")


def _check_range(inp: OnnxInput, rng: ShapeRange) -> None:
    for label, dims in zip(LABELS, (rng.min, rng.opt, rng.max), strict=True):
        _check_given(inp, label, dims, None)
    if not all(a <= b <= c for a, b, c in zip(rng.min, rng.opt, rng.max, strict=True)):
        raise ConfigConflict(f"profile for {inp.name!r} is not ordered min <= opt <= max in every dimension: "
                             f"{rng.describe()}")


def derive_profile(
    model: onnx.ModelProto,
    *,
    min_shapes: Mapping[str, Shape] | None = None,
    opt_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
    input_size: tuple[int, int] | None = None,
    size_multiple: int = 1,
) -> dict[str, ShapeRange]:
    """One optimization profile: a ShapeRange for every input that has a dynamic dimension.

    Inputs with only fixed dimensions need no range (TensorRT takes their shape from the network); a
    shape given for one of them must equal its fixed shape.
    """
    inputs = onnx_inputs(model)
    mins = _named(min_shapes or {}, inputs, "--min-shape")
    opts = _named(opt_shapes or {}, inputs, "--opt-shape")
    maxs = _named(max_shapes or {}, inputs, "--max-shape")
    profile: dict[str, ShapeRange] = {}
    channels = conv_channels(model)
    for inp in inputs:
        given = (mins.get(inp.name), opts.get(inp.name), maxs.get(inp.name))
        for label, dims in zip(LABELS, given, strict=True):
            if dims is not None and inp.dynamic:
                _check_given(inp, label, dims, channels.get(inp.name))
        if not inp.dynamic:
            for label, dims in zip(LABELS, given, strict=True):
                if dims is not None and dims != inp.dims:
                    raise ConfigConflict(f"--{label}-shape {ShapeRange.text(dims)} for {inp.name!r}: the ONNX "
                                         f"fixes its shape to {_dims_text(inp.dims)}; re-export with dynamic "
                                         "axes to build for other shapes")
            continue
        rng = _resolve(inp, given, input_size, size_multiple, channels.get(inp.name, (None, ""))[0])
        _check_range(inp, rng)
        profile[inp.name] = rng
    return profile


def _resolve(inp: OnnxInput, given: tuple[Shape | None, Shape | None, Shape | None],
             input_size: tuple[int, int] | None, multiple: int, channels: int | None) -> ShapeRange:
    low, opt, high = given
    if opt is None and low is not None and high is not None and len(low) == len(high):
        # Only min and max given: the model's own size when it lies between them, else the midpoint.
        candidate = None
        if input_size is not None and len(inp.dims) == 4:
            candidate = _default_range(inp, None, input_size, multiple, channels).opt
        if candidate is None or not ShapeRange(low, low, high).contains(candidate):
            candidate = tuple((a + b) // 2 for a, b in zip(low, high, strict=True))
        opt = candidate
    base = _default_range(inp, opt, input_size, multiple, channels)
    return ShapeRange(low or base.min, base.opt, high or base.max)


def fit_default_min(model: onnx.ModelProto, profile: Mapping[str, ShapeRange], defaulted: Sequence[str],
                    say: Callable[[str], None]) -> dict[str, ShapeRange]:
    """Raise a defaulted min to opt's height and width when the model cannot run at it on ONNX Runtime
    (a model with a size floor, e.g. DeconvNet's valid 7x7 fc6), so the build does not fail in TensorRT."""
    fitted = dict(profile)
    names = [n for n in defaulted if n in fitted and len(fitted[n].min) == 4 and fitted[n].min != fitted[n].opt]
    if not names:
        return fitted

    feed = {}
    for inp in onnx_inputs(model):
        shape = fitted[inp.name].min if inp.name in fitted else tuple(d or 1 for d in inp.dims)
        elem = next(v.type.tensor_type.elem_type for v in model.graph.input if v.name == inp.name)
        feed[inp.name] = np.zeros(shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem))
    try:
        session_from_onnx(model.SerializeToString()).run(None, feed)
    except Exception as exc:  # ORT raises its own types; any failure means "not at this size"
        for name in names:
            rng = fitted[name]
            fitted[name] = ShapeRange((*rng.min[:2], *rng.opt[2:]), rng.opt, rng.max)
        say(f"the model does not run at the default min shape ({first_line(exc)[:120]}); "
            f"min raised to opt's height and width; give --min-shape to choose another")
    return fitted


SizeCheck = Callable[[int, int], None]  # raises InputError naming sizes that work (a zoo spec's size rule)
Direction = Literal["up", "down", "nearest"]
DIRECTIONS: tuple[Direction, ...] = ("up", "nearest", "down")  # where each of min, opt, max moves to fit


def follow_size_rule(profile: Mapping[str, ShapeRange], given: Mapping[str, Sequence[str]],
                     check: SizeCheck | None, say: Callable[[str], None]) -> dict[str, ShapeRange]:
    """The profile with every defaulted height and width moved to the nearest size the model takes (min up, max
    down, opt to the nearest: U-Net takes only 16k+60, so the defaults 288/576/1152 become 300/572/1148); a shape
    the user gave (`given`: input name -> the labels given) that the rule refuses is an InputError naming it."""
    if check is None:
        return dict(profile)
    fitted = {}
    for name, rng in profile.items():
        shapes = []
        for label, shape, mode in zip(LABELS, (rng.min, rng.opt, rng.max), DIRECTIONS, strict=True):
            if len(shape) == 4 and label in given.get(name, ()):
                try:
                    check(shape[2], shape[3])
                except InputError as exc:
                    raise InputError(f"--{label}-shape {ShapeRange.text(shape)}: {exc}") from exc
            elif len(shape) == 4:
                shape = (*shape[:2], _side_taken(check, shape[2], mode), _side_taken(check, shape[3], mode))
            shapes.append(shape)
        fitted[name] = ShapeRange(*shapes)
        if fitted[name] != rng:
            say(f"profile {name} follows the model's size rule: {fitted[name].describe()} "
                f"(from {rng.describe()})")
    return fitted


def _side_taken(check: SizeCheck, side: int, mode: Direction) -> int:
    """The side nearest `side` in direction `mode` that `check` takes (`side` itself when none is near)."""
    def takes(candidate: int) -> bool:
        try:
            check(candidate, candidate)
        except InputError:
            return False
        return True

    found = nearest_side(takes, side, mode, 256)
    if found is None and mode == "down":  # nothing at or below it (a max under the model's minimum): the nearest above
        found = nearest_side(takes, side, "up", 256)
    return side if found is None else found
