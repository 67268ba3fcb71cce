"""ONNX Runtime runner: the embedded default backend (CPU), with CUDA/TensorRT EPs when onnxruntime-gpu is there."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from deploykit.errors import out_of_memory
from deploykit.evaluate import RUN_FAILURES, node_failure, session_from_onnx
from deploykit.runner import Runner, TensorSpec, shape_refused

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

def tensor_specs(values: Sequence[ort.NodeArg]) -> list[TensorSpec]:
    """A session's inputs or outputs as TensorSpecs (feed with `TensorSpec.feed`)."""
    return [
        TensorSpec(v.name, tuple(d if isinstance(d, int) else (d or None) for d in v.shape),
                   _ORT_TYPES.get(v.type, v.type))
        for v in values
    ]


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        providers: Sequence[str] = ("cpu",),
        threads: int | None = None,
        optimization: str = "all",
    ) -> None:
        super().__init__()
        self.model = model
        self.providers = tuple(providers)
        self.threads = threads
        self.optimization = optimization
        self.session: ort.InferenceSession | None = None

    def _open(self) -> None:
        self.session = session_from_onnx(
            self.model, providers=self.providers, threads=self.threads, optimization=self.optimization
        )

    def _close(self) -> None:
        self.session = None

    def _session(self) -> ort.InferenceSession:
        if self.session is None:
            self._open()
        assert self.session is not None
        return self.session

    def input_specs(self) -> list[TensorSpec]:
        return tensor_specs(self._session().get_inputs())

    def output_specs(self) -> list[TensorSpec]:
        return tensor_specs(self._session().get_outputs())

    def describe(self) -> str:
        return f"onnxruntime[{','.join(self.providers)}]"

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session()
        names = [o.name for o in session.get_outputs()]
        try:
            return dict(zip(names, session.run(names, dict(feed)), strict=True))
        except RUN_FAILURES as exc:  # a node that cannot run on this feed (a validated one)
            if out_of_memory(exc):
                raise
            model = "the model" if isinstance(self.model, bytes) else os.fspath(self.model)
            raise shape_refused(model, {k: v.shape for k, v in feed.items()}, node_failure(exc), self.sizes) from exc

