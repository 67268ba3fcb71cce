"""TensorRTRunner: a TensorRT engine behind the common Runner interface (parity and bench use it unchanged).

Per call, as NVIDIA's 10.x/11.x runtime API documents it: `set_input_shape` for every input, output shapes
from `get_tensor_shape`, `set_tensor_address` for every I/O tensor, then `execute_async_v3(stream)` on a
torch.cuda.Stream. Buffers are torch CUDA tensors (through deploykit.backends.tensorrt.device), reallocated only
when a shape changes. With `cuda_graph=True`, the first run at a shape is the warm-up TensorRT asks for
before capture; the next captures `execute_async_v3` into a CUDA graph and every later run at that shape
replays it (a new shape recaptures).

All TensorRT objects log to the process-wide logger (common.process_logger); each error message quotes what
was logged since the call it reports on. I/O dtypes come from common.IO_TYPES, not `trt.nptype` (which raises
TypeError on BF16/FP8/INT4/FP4): BF16 and FP8 tensors run on float32 feeds, other sub-byte types are refused
when the engine is opened. Every buffer is allocated for the runner's one stream, and the stream is
synchronized before any result is read (execute_async_v3 only enqueues).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.backends.tensorrt import device as trt_device
from deploykit.backends.tensorrt.common import (
    IoType,
    check_engine_compatibility,
    import_tensorrt,
    io_type,
    new_runtime,
    process_logger,
)
from deploykit.backends.tensorrt.device import Buffer, DeviceLayer, Graph, Stream
from deploykit.errors import BackendUnavailable, InputError, first_line
from deploykit.io.sidecar import Sidecar, read_sidecar, sidecar_path, verify_sidecar
from deploykit.runner import Runner, TensorSpec

Timings = dict[str, float]


def _text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine: str | os.PathLike[str], *, sidecar: Sidecar | None = None, cuda_graph: bool = False,
                 device: DeviceLayer | None = None) -> None:
        super().__init__()
        self.path = Path(engine)
        self.sidecar = sidecar
        self.cuda_graph = cuda_graph
        self.device = device
        self.notes: list[str] = []
        self._trt: Any = None
        self._logger: Any = None
        self._runtime: Any = None  # kept alive as long as its engine
        self._engine: Any = None
        self._context: Any = None
        self._stream: Stream | None = None
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._io_types: dict[str, IoType] = {}
        self._profile: dict[str, tuple[tuple[int, ...], ...]] = {}
        self._buffers: dict[str, Buffer] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._warm = False
        self._graph: Graph | None = None

    @classmethod
    def from_artifact(cls, path: str | os.PathLike[str], *, cuda_graph: bool = False,
                      device: DeviceLayer | None = None) -> TensorRTRunner:
        """A runner for a deploykit-built engine, after checking its sidecar against this TensorRT and GPU."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"TensorRT engine {path} does not exist")
        sidecar = read_sidecar(path)
        if sidecar is None:
            raise InputError(f"{path} has no sidecar ({sidecar_path(path).name}), so deploykit cannot check that it "
                             "fits this TensorRT and GPU; rebuild it with `deploykit build-engine --backend tensorrt`")
        verify_sidecar(path, sidecar, backend="tensorrt", suffixes=(), companions={})  # also when called directly
        trt = import_tensorrt()
        layer = device or trt_device.default_device()
        notes = check_engine_compatibility(sidecar, trt_version=str(trt.__version__), device=layer.info(),
                                           where=str(path))
        runner = cls(path, sidecar=sidecar, cuda_graph=cuda_graph, device=layer)
        runner.notes = notes
        return runner

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._engine is not None:
            return
        trt = self._trt = import_tensorrt()
        logger = self._logger = process_logger(trt)
        self.device = self.device or trt_device.default_device()
        mark = logger.mark()
        runtime = new_runtime(trt, logger, mark, version_compatible=bool(
            self.sidecar is not None and self.sidecar.build_options.get("version_compatible")))
        self._runtime = runtime
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} could not load {self.path}: {logger.said(mark)}; "
                                     "rebuild it on this machine with `deploykit build-engine --backend tensorrt`")
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailable(f"TensorRT could not create an execution context: {logger.said(mark)}")
        self._engine, self._context = engine, context
        self._stream = self.device.stream()
        self._read_io()

    def _read_io(self) -> None:
        trt, engine = self._trt, self._engine
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dims = tuple(int(d) for d in engine.get_tensor_shape(name))
            kind = self._io_types[name] = io_type(engine.get_tensor_dtype(name), name)
            spec = TensorSpec(name, tuple(d if d >= 0 else None for d in dims), kind.host)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(spec)
                if any(d < 0 for d in dims):
                    shapes = engine.get_tensor_profile_shape(name, 0)
                    self._profile[name] = tuple(tuple(int(d) for d in s) for s in shapes)
            else:
                self._outputs.append(spec)

    def _close(self) -> None:
        self._graph = None
        self._buffers = {}
        self._shapes = {}
        self._warm = False
        self._context = self._engine = self._runtime = self._stream = None
        self._inputs, self._outputs, self._profile, self._io_types = [], [], {}, {}

    # -- specs ---------------------------------------------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        self._open()
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        self._open()
        return list(self._outputs)

    def describe(self) -> str:
        version = self.sidecar.backend_version if self.sidecar else ""
        gpu = self.sidecar.device.get("gpu", "") if self.sidecar else ""
        graph = ", CUDA graph" if self.cuda_graph else ""
        return f"tensorrt {version}{' on ' + gpu if gpu else ''}{graph}".strip()

    # -- running -------------------------------------------------------------------------------------------------
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, _ = self._run(feed)
        return outputs

    def infer_timed(self, feed: Mapping[str, np.ndarray], *, validate: bool = True
                    ) -> tuple[dict[str, np.ndarray], Timings]:
        """Outputs plus this run's GPU-event times in ms: h2d_ms, compute_ms, d2h_ms, latency_ms (their sum),
        and enqueue_ms (host time spent launching the engine or graph). validate=False: the feed was checked
        with validate_feed already (bench's timed loop)."""
        if not self._active:
            raise RuntimeError("TensorRTRunner.infer_timed called outside its `with` block")
        if validate:
            self.validate_feed(feed)
        return self._run(feed, timed=True)

    def _check_profile(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        for name, (low, _opt, high) in self._profile.items():
            shape = shapes[name]
            if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
                raise InputError(
                    f"input {name!r} of shape {_text(shape)} is outside the engine's optimization profile "
                    f"(min {_text(low)}, max {_text(high)}); rebuild with --min-shape/--max-shape covering it")

    def _bind(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Buffer]:
        """set_input_shape and set_tensor_address for this call; buffers are reallocated when a shape changes."""
        context, mark = self._context, self._logger.mark()
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise InputError(f"TensorRT rejected shape {list(shape)} for input {name!r}: "
                                 f"{self._logger.said(mark)}")
        all_shapes = dict(shapes)
        for spec in self._outputs:
            dims = tuple(int(d) for d in context.get_tensor_shape(spec.name))
            if any(d < 0 for d in dims):
                raise BackendUnavailable(f"output {spec.name!r} has a data-dependent shape {list(dims)}, which "
                                         "deploykit's TensorRT runner does not support")
            all_shapes[spec.name] = dims
        if all_shapes != self._shapes:
            assert self.device is not None and self._stream is not None
            kinds = self._io_types
            self._buffers = {n: self.device.allocate(s, np.dtype(kinds[n].host), self._stream, kinds[n].device)
                             for n, s in all_shapes.items()}
            self._shapes, self._warm, self._graph = all_shapes, False, None
        for name, buffer in self._buffers.items():
            if not context.set_tensor_address(name, buffer.ptr):
                raise BackendUnavailable(f"TensorRT rejected the address of {name!r}: {self._logger.said(mark)}")
        return self._buffers

    def _enqueue(self, stream: Stream) -> None:
        mark = self._logger.mark()
        if self._graph is not None:
            self._graph.replay(stream)
            return
        if self.cuda_graph and self._warm:
            assert self.device is not None
            graph = self.device.graph()
            try:
                with graph.capture(stream):
                    captured = self._context.execute_async_v3(stream.handle)
            except RuntimeError as exc:  # torch raises when the capture is invalidated (uncapturable layers)
                captured = False
                self._logger.note(first_line(exc))
            if not captured:
                raise BackendUnavailable(f"this engine cannot be captured in a CUDA graph "
                                         f"({self._logger.said(mark)}); "
                                         "run it without CUDA graphs (no --cuda-graph)")
            self._graph = graph
            graph.replay(stream)
            return
        if not self._context.execute_async_v3(stream.handle):
            raise BackendUnavailable(f"TensorRT failed to run {self.path.name}: {self._logger.said(mark)}")
        self._warm = True

    def _run(self, feed: Mapping[str, np.ndarray], *, timed: bool = False) -> tuple[dict[str, np.ndarray], Timings]:
        self._open()
        assert self.device is not None and self._stream is not None
        stream = self._stream
        shapes = {spec.name: tuple(int(d) for d in feed[spec.name].shape) for spec in self._inputs}
        self._check_profile(shapes)
        buffers = self._bind(shapes)
        marks = [self.device.event() for _ in range(4)] if timed else []
        if marks:
            marks[0].record(stream)
        for spec in self._inputs:
            buffers[spec.name].upload(np.ascontiguousarray(feed[spec.name]), stream)
        if marks:
            marks[1].record(stream)
        started = time.perf_counter()
        self._enqueue(stream)
        enqueue_ms = (time.perf_counter() - started) * 1e3
        if marks:
            marks[2].record(stream)
        for spec in self._outputs:
            buffers[spec.name].download(stream)
        if marks:
            marks[3].record(stream)
        stream.synchronize()
        outputs = {spec.name: buffers[spec.name].result() for spec in self._outputs}
        if not marks:
            return outputs, {}
        marks[3].synchronize()
        h2d, compute, d2h = (marks[i].elapsed_ms(marks[i + 1]) for i in range(3))
        return outputs, {"h2d_ms": h2d, "compute_ms": compute, "d2h_ms": d2h,
                         "latency_ms": h2d + compute + d2h, "enqueue_ms": enqueue_ms}
