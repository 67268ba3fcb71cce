"""The Runner interface and the backend table.

A backend implements `_open`, `_infer` and the two spec methods; the base class validates every feed the
same way (names, rank, fixed dimensions, dtype), so all backends reject bad input alike.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from deploykit.errors import InputError

Dim = int | str | None  # a str or None is a dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: "float32", "float16", "int64", ...

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) else (d or "?") for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


class Runner(ABC):
    """Runs one model. Use as a context manager; `infer` maps input names to arrays and back."""

    backend: str = ""

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

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._active:
            raise RuntimeError("Runner.infer called outside its `with` block")
        self.validate_feed(feed)
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
            if array.dtype != np.dtype(spec.dtype):
                raise InputError(
                    f"{self.backend} feed: input {name!r} is {array.dtype}; expected {spec.dtype}; "
                    f"convert it with .astype(np.{spec.dtype})"
                )


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # deploykit module that implements it, imported lazily
    summary: str

    def load(self) -> Any:
        return importlib.import_module(self.module)

    def is_available(self) -> bool:
        probe: Callable[[], bool] = self.load().is_available
        return probe()


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend("torch", "deploykit.backends.torch", "PyTorch eager on CPU (the reference)"),
        Backend("onnxruntime", "deploykit.backends.onnxruntime.runner",
                "ONNX Runtime (CPU; CUDA/TensorRT EPs with onnxruntime-gpu)"),
        Backend("tensorrt", "deploykit.backends.tensorrt.build", "TensorRT engines on NVIDIA GPUs"),
    )
}
