"""The double's Runtime, ICudaEngine and IExecutionContext: plans made by the double's builder, run through ONNX
Runtime on the fake device memory (tests/fakes/device.py).

Deserialisation enforces what NVIDIA documents: same TensorRT version unless version-compatible, same compute
capability unless built AMPERE_PLUS (then 8.0+) (Developer Guide, "Version Compatibility" and "Hardware
Compatibility"). A version-compatible plan also needs `engine_host_code_allowed = True` before
`deserialize_cuda_engine`: NVIDIA/TensorRT samples/common/sampleEngines.cpp (release/10.16 l.137-141:
"Application needs to opt into allowing deserialization of engines with embedded lean runtime") and
tools/Polygraphy/polygraphy/backend/trt/loader.py EngineFromBytes (l.717-719).
Execution enforces the documented contract of execute_async_v3 (NVIDIA/TensorRT include/NvInferRuntime.h,
release/10.16): every input shape set, agreeing with the network's dimensions and within the optimization
profile (IExecutionContext::setInputShape, l.4485-4493; IOptimizationProfile), and every I/O address set
("Before calling enqueueV3(), each input must have a non-null address and each output must have a non-null
address", setTensorAddress, l.4740-4741), on a stream (enqueueV3, l.5007-5025). It only enqueues: the work runs
when the stream is synchronized ("Modifying or releasing memory ... before stream synchronization ... results in
undefined behavior", ibid.; tests/fakes/device.py), and under a CUDA-graph capture it is recorded instead.
Stricter than TensorRT, which reads raw bytes: an address whose buffer is not of the engine's dtype, too small
("a device buffer of sufficient size", l.4748), or owned by another stream with no event between them is
refused, since on a GPU it would be a silent reinterpretation or a race.
`create_engine_inspector` returns the double's IEngineInspector (_inspect.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from tests.fakes.tensorrt_double._build import unpack_plan
from tests.fakes.tensorrt_double._enums import Severity, nptype
from tests.fakes.tensorrt_double._parse import ONNX_TO_TRT
from tests.fakes.tensorrt_double._state import Base, Dims, deprecated


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("+")[0].split("."))


class RuntimeBase(Base):
    def __init__(self, logger: Any) -> None:
        self.logger = self.adopt_logger(logger)
        self.require_gpu(self.logger)
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngineBase | None:
        unpacked = unpack_plan(bytes(serialized_engine))
        if unpacked is None:
            return self._fail("Serialization assertion magicTagRead == kMAGIC_TAG failed: Magic tag does not match")
        header, model_bytes = unpacked
        problem = self._incompatible(header)
        if problem:
            return self._fail(problem)
        engine = self.trt.ICudaEngine(header, model_bytes)
        engine.logger = self.logger  # contexts log through the runtime's logger, as in TensorRT
        return engine  # type: ignore[no-any-return]

    def _fail(self, message: str) -> None:
        self.logger.log(Severity.ERROR, message)
        return None

    def _incompatible(self, header: dict[str, Any]) -> str:
        running, built = _version(self.state.version), _version(header["version"])
        if header["version_compatible"]:
            if not self.engine_host_code_allowed:
                return "Cannot deserialize a version-compatible engine: set IRuntime.engine_host_code_allowed"
            if running < built:
                return f"Version-compatible engine built with {header['version']} needs that version or later"
        elif running != built:
            return (f"The engine plan file is not compatible with this version of TensorRT, expecting library "
                    f"version {self.state.version} got {header['version']}, please rebuild.")
        assert self.state.gpu is not None
        cc, built_cc = self.state.gpu.compute_capability, tuple(header["cc"])
        if header["hardware"] == "AMPERE_PLUS":
            if cc < (8, 0):
                return "The engine plan file requires an Ampere or later GPU"
        elif cc != built_cc:
            return (f"The engine plan file is generated on an incompatible device, expecting compute "
                    f"{cc[0]}.{cc[1]} got compute {built_cc[0]}.{built_cc[1]}, please rebuild.")
        return ""


class ICudaEngineBase(Base):
    def __init__(self, header: dict[str, Any], model_bytes: bytes) -> None:
        self.header, self.model_bytes = header, model_bytes
        self.logger: Any = None
        model = onnx.load_from_string(model_bytes)
        initializers = {i.name for i in model.graph.initializer}
        inputs = [v for v in model.graph.input if v.name not in initializers]
        self.io: list[tuple[str, Any, tuple[int, ...], Any]] = []
        for values, mode in ((inputs, self.trt.TensorIOMode.INPUT), (model.graph.output, self.trt.TensorIOMode.OUTPUT)):
            for v in values:
                dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                             for d in v.type.tensor_type.shape.dim)
                dtype = self.trt.DataType[ONNX_TO_TRT.get(v.type.tensor_type.elem_type, "FLOAT")]
                self.io.append((v.name, mode, dims, dtype))
        self._session: ort.InferenceSession | None = None

    def _entry(self, name: str) -> tuple[str, Any, tuple[int, ...], Any]:
        for entry in self.io:
            if entry[0] == name:
                return entry
        raise RuntimeError(f"no I/O tensor named {name!r}")

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    @property
    def device_memory_size_v2(self) -> int:
        return 1 << 20

    def get_tensor_name(self, index: int) -> str:
        return self.io[index][0]

    def get_tensor_mode(self, name: str) -> Any:
        return self._entry(name)[1]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._entry(name)[2])

    def get_tensor_dtype(self, name: str) -> Any:
        return self._entry(name)[3]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if profile_index != 0 or self.get_tensor_mode(name) != self.trt.TensorIOMode.INPUT:
            raise RuntimeError(f"no profile shapes for {name!r} in profile {profile_index}")
        shapes = self.header["profile"].get(name)
        fixed = self.get_tensor_shape(name)
        return [Dims(s) for s in shapes] if shapes else [fixed, fixed, fixed]

    def create_execution_context(self) -> IExecutionContext:
        return self.trt.IExecutionContext(self)  # type: ignore[no-any-return]

    def create_engine_inspector(self) -> Any:
        from tests.fakes.tensorrt_double._inspect import EngineInspector

        return EngineInspector(self)

    def session(self) -> ort.InferenceSession:
        if self._session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        return self._session


class ICudaEngine10(ICudaEngineBase):
    device_memory_size = deprecated("ICudaEngine.device_memory_size", lambda self: 1 << 20)
    create_execution_context_without_device_memory = deprecated(
        "ICudaEngine.create_execution_context_without_device_memory",
        lambda self: lambda: self.trt.IExecutionContext(self))


class IExecutionContext(Base):
    def __init__(self, engine: ICudaEngineBase) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self._out_shapes: dict[tuple[Any, ...], dict[str, tuple[int, ...]]] = {}

    def _log(self, message: str) -> bool:
        self.engine.logger.log(Severity.ERROR, message)
        return False

    def set_input_shape(self, name: str, shape: Any) -> bool:
        _, mode, dims, _ = self.engine._entry(name)
        shape = tuple(int(d) for d in shape)
        if mode != self.trt.TensorIOMode.INPUT or len(shape) != len(dims):
            return self._log(f"IExecutionContext::setInputShape: Error Code 3: bad tensor or rank for {name}")
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
            return self._log(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                             f"failed, {name} shape {shape} is outside the profile {tuple(low)}..{tuple(high)})")
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        _, mode, dims, _ = self.engine._entry(name)
        if mode == self.trt.TensorIOMode.INPUT:
            return Dims(self.shapes.get(name, dims))
        if -1 not in dims:
            return Dims(dims)
        inputs = [e for e in self.engine.io if e[1] == self.trt.TensorIOMode.INPUT]
        if any(e[0] not in self.shapes for e in inputs):
            return Dims(dims)
        key = tuple(self.shapes[e[0]] for e in inputs)
        if key not in self._out_shapes:  # shape inference by running ONNX Runtime on zeros
            feed = {e[0]: np.zeros(self.shapes[e[0]], dtype=nptype(e[3])) for e in inputs}
            outs = self.engine.session().run(None, feed)
            names = [o.name for o in self.engine.session().get_outputs()]
            self._out_shapes[key] = {n: tuple(a.shape) for n, a in zip(names, outs, strict=True)}
        return Dims(self._out_shapes[key][name])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        try:
            self.engine._entry(name)
        except RuntimeError:
            return self._log(f"IExecutionContext::setTensorAddress: no tensor named {name}")
        self.addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        return profile_index == 0

    def execute_async_v3(self, stream_handle: int) -> bool:
        memory = self.state.memory
        if stream_handle not in memory.streams:
            return self._log(f"enqueueV3: {stream_handle:#x} is not a CUDA stream")
        for name, mode, dims, _ in self.engine.io:
            if mode == self.trt.TensorIOMode.INPUT and -1 in dims and name not in self.shapes:
                return self._log(f"enqueueV3: the shape of input tensor {name} is not specified")
            if name not in self.addresses:
                return self._log(f"enqueueV3: Neither address nor allocator is set for tensor {name}")
            problem = self._buffer_problem(name, dims, stream_handle)
            if problem:
                return self._log(f"enqueueV3: {problem}")
        memory.submit(stream_handle, self._bound_run())
        return True

    def _buffer_problem(self, name: str, dims: tuple[int, ...], stream_handle: int) -> str:
        memory, address = self.state.memory, self.addresses[name]
        if address not in memory.arrays:
            return f"the address of {name} ({address:#x}) is not device memory"
        array, dtype = memory.arrays[address], self.engine._entry(name)[3]
        try:
            want = np.dtype(nptype(dtype))
        except TypeError:
            want = None  # BF16/FP8: the fake stores these in the host type
        if want is not None and array.dtype != want:
            return f"{name} is {dtype.name} in the engine but its buffer holds {array.dtype} (no casts)"
        shape = self.shapes.get(name) if name in self.shapes else self.get_tensor_shape(name)
        if array.size < int(np.prod(shape)):
            return f"the buffer of {name} holds {array.size} elements, {int(np.prod(shape))} needed"
        try:
            memory.check_owner(address, stream_handle, f"the buffer of {name}")
        except RuntimeError as exc:
            return str(exc)
        return ""

    def _bound_run(self) -> Any:
        """The work of one enqueue with today's shapes and addresses (a CUDA graph keeps exactly these)."""
        memory, engine = self.state.memory, self.engine
        shapes, addresses = dict(self.shapes), dict(self.addresses)
        inputs = [e for e in engine.io if e[1] == self.trt.TensorIOMode.INPUT]
        outputs = [e for e in engine.io if e[1] == self.trt.TensorIOMode.OUTPUT]

        def run() -> None:
            feed = {}
            for name, _, dims, _dtype in inputs:
                shape = shapes.get(name, dims)
                array = memory.array(addresses[name])
                feed[name] = array.reshape(-1)[:int(np.prod(shape))].reshape(shape)
            results = engine.session().run([e[0] for e in outputs], feed)
            for (name, _, _, _), result in zip(outputs, results, strict=True):
                target = memory.array(addresses[name])
                if target.size < result.size or target.dtype != result.dtype:
                    raise RuntimeError(f"output buffer for {name} is too small or of the wrong type")
                target.reshape(-1)[:result.size] = result.reshape(-1)
            self.executions += 1

        return run
