"""What runs a model, whatever runs it: the Runner interface, its tensor specs, and a Target (a Runner with the
facts known about its model).

A Runner implements `_open`, `_infer` and the two spec methods; the base class validates every feed the
same way (names, rank, fixed dimensions, dtype), so all backends reject bad input alike. deploykit.targets
opens a Target from a zoo name, a factory, an .onnx file or a built artifact; parity and bench take Targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from deploykit.errors import InputError, UnknownModel
from deploykit.io.metadata import ModelMetadata
from deploykit.types import Preprocessing, Task
from deploykit.zoo import ModelSpec, get_model_spec
from deploykit.zoo.sources import LoadedModel

Dim = int | str | None  # a str or None is a dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: "float32", "float16", "int64", ...

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def numpy_dtype(self) -> np.dtype[Any]:
        """The NumPy type of this input, or an InputError for one deploykit cannot make arrays of (strings,
        sequences, maps: a model that does not take an image tensor)."""
        try:
            return np.dtype(self.dtype)
        except TypeError:
            raise InputError(f"{self.describe()} is not a numeric tensor; deploykit feeds models numeric "
                             "(image) tensors") from None

    def feed(self, x: np.ndarray) -> np.ndarray:
        """`x` as this input takes it (`as_input`)."""
        return as_input(x, self.numpy_dtype())


def as_input(x: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """`x` as an input of type `dtype` takes it: the one conversion every caller that feeds a model images uses.
    An integer input (uint8 pixels) gets `x` rounded and clipped to its range: pixels computed in float
    (254.99998) are the integer they stand for, and a plain cast would wrap them."""
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(x.dtype, np.integer):
        bounds = np.iinfo(dtype)
        x = np.clip(np.rint(x), bounds.min, bounds.max)
    return x.astype(dtype) if x.dtype != dtype else x


@dataclass(frozen=True)
class InputSizes:
    """What is known of the heights and widths a runner's model takes, so a feed it cannot take is refused in
    one line that says which sizes work: a size known to work, and a zoo model's size rule (ModelSpec.size_rule:
    U-Net's graph crops any size, where only 16k+60 tiles)."""

    works: str = ""  # "it was exported and verified at 64x64", "" when no size is known
    rule: Callable[[int, int], None] | None = None  # raises InputError naming sizes that work

    @classmethod
    def of(cls, meta: ModelMetadata | None) -> InputSizes:
        """From an exported model's metadata: its input size, and its zoo spec's rule under its options."""
        if meta is None:
            return cls()
        works = f"it was exported and verified at {meta.input_size[0]}x{meta.input_size[1]}"
        try:
            spec = get_model_spec(meta.model)
        except UnknownModel:  # a user model (package.module:factory): no rule is known
            return cls(works)
        return cls.of_spec(spec, meta.options, works)

    @classmethod
    def of_spec(cls, spec: ModelSpec, options: Mapping[str, Any], works: str = "") -> InputSizes:
        """The spec's rule under `options` (none for a user model's spec)."""
        if spec.size_rule is None:
            return cls(works)
        return cls(works, lambda height, width: spec.check_size(height, width, options))

    def check(self, shape: tuple[int, ...]) -> None:
        if self.rule is not None and len(shape) == 4:
            self.rule(int(shape[2]), int(shape[3]))


class Runner(ABC):
    """Runs one model. Use as a context manager; `infer` maps input names to arrays and back."""

    backend: str = ""
    sizes: InputSizes = InputSizes()  # set by deploykit.targets from the model's metadata

    def __init__(self) -> None:
        self._active = False

    def __enter__(self) -> Runner:
        self._open()
        self._active = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        self._close()

    @abstractmethod
    def _open(self) -> None: ...

    def _close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release resources; most backends need nothing here."""

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def output_specs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        return self.backend

    def metadata(self) -> Any:
        """The deploykit ModelMetadata the artifact itself carries (a self-describing backend's), else None."""
        return None

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._active:
            raise RuntimeError("Runner.infer called outside its `with` block")
        self.validate_feed(feed)
        return self._infer(feed)

    def infer_unchecked(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`infer` without validation, for a feed `validate_feed` has already accepted: bench validates each
        feed once, outside its timed loop, so it times inference rather than checks."""
        if not self._active:
            raise RuntimeError("Runner.infer_unchecked called outside its `with` block")
        return self._infer(feed)

    def validate_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        specs = {spec.name: spec for spec in self.input_specs()}
        missing = sorted(set(specs) - set(feed))
        unexpected = sorted(set(feed) - set(specs))
        if missing or unexpected:
            expected = ", ".join(s.describe() for s in specs.values())
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(unexpected)}"] if unexpected else []
            )
            raise InputError(f"{self.backend} feed: {'; '.join(parts)}; the model expects {expected}")
        for name, array in feed.items():
            spec = specs[name]
            if not isinstance(array, np.ndarray):
                raise InputError(f"{self.backend} feed: input {name!r} is {type(array).__name__}, not a numpy array")
            if array.ndim != len(spec.shape):
                raise InputError(
                    f"{self.backend} feed: input {name!r} has rank {array.ndim} (shape {list(array.shape)}); "
                    f"expected rank {len(spec.shape)} ({spec.describe()})"
                )
            for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
                if isinstance(want, int) and want >= 0 and got != want:
                    raise InputError(
                        f"{self.backend} feed: input {name!r} has {got} at axis {axis}; expected {want} "
                        f"({spec.describe()})"
                    )
            if array.dtype != spec.numpy_dtype():
                raise InputError(
                    f"{self.backend} feed: input {name!r} is {array.dtype}; expected {spec.dtype}; "
                    f"convert it with .astype(np.{spec.dtype})"
                )
            self.sizes.check(array.shape)


def shape_refused(model: str, shapes: Mapping[str, Sequence[int]], failure: str, sizes: InputSizes = InputSizes(),
                  *, eager: bool = False) -> InputError:
    """A model that loaded but cannot run on a validated feed of `shapes` (name -> shape): bad input naming the
    shape and the node, as a PyTorch forward that raises would be, and a size that works when one is known.
    `eager`: a PyTorch module, which has no exported graph that could be broken."""
    said = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes.items())
    works = f"{sizes.works}; " if sizes.works else ""
    graph = "" if eager else ", or its graph does not hold together (export it again)"
    return InputError(f"{model} cannot run on inputs of shape {said}: {failure}; the model does not take this "
                      f"shape ({works}choose another --input-shape or --batch){graph}")


Kind = Literal["torch", "onnx", "artifact"]  # kinds of target, not backends: "torch" is a PyTorch module

@dataclass
class Target:
    runner: Runner  # not yet entered: use `with target.runner:`
    kind: Kind
    label: str
    task: Task | None
    num_classes: int
    preprocessing: Preprocessing | None  # None: an ONNX file without deploykit metadata
    input_size: tuple[int, int] | None  # (height, width)
    precision: str
    input_name: str
    # The ONNX graph behind the target (what --localize compares): the .onnx itself, or for an artifact the
    # FP16 / Q/DQ graph it was compiled from (sidecar build_options["onnx_path"]), else an ONNX Runtime
    # artifact itself; None for PyTorch and for engines whose graph is not found.
    onnx_path: Path | None = None
    loaded: LoadedModel | None = None  # torch targets: the model itself (e.g. to export a reference ONNX)
    metadata: ModelMetadata | None = None
    static_input: tuple[int, ...] | None = None  # an ONNX input with every dimension fixed
    channels: int | None = None  # an ONNX input's fixed channel count (images give 3)
    integer_input: bool = False  # an ONNX input of an integer type (uint8 images): it takes pixels, not floats
    budget: str | None = None  # the accuracy budget an artifact was built to (its sidecar), held by parity
