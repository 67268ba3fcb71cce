"""Device memory, streams, events and CUDA graphs for the TensorRT runner, on torch CUDA.

The runner talks to the GPU only through the small `DeviceLayer` interface below, so its TensorRT calls stay
exactly NVIDIA's documented ones while the tests run it on a CPU fake (tests/fakes). In real use the layer
is `TorchCudaDevice`: torch CUDA tensors as buffers (`data_ptr()` is the address TensorRT is given), pinned
host staging buffers for asynchronous copies, `torch.cuda.Stream` (its `cuda_stream` handle goes to
`execute_async_v3`), `torch.cuda.Event` timing and `torch.cuda.CUDAGraph` capture/replay.
torch is already a dependency; pycuda is not used (sdist only, needs the CUDA toolkit).

Ordering: a buffer is allocated for one stream and used only on it. "The caching allocator is aware of only the
stream where a tensor was allocated ... if a tensor is used on a stream different from the stream of origin,
the allocator might reuse the memory unexpectedly" (PyTorch docs, torch.Tensor.record_stream), so device
tensors are allocated with the runner's stream current, and every copy, launch, capture and replay of a runner
runs on that one stream: nothing crosses streams, so no event orders them (a `wait` on an event of another
stream was offered here once; no caller needed it, and an interface no path uses is untested code).
Host staging copies are checked, not cast: a feed of another dtype is a caller bug, not something to round.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from deploykit.errors import BackendUnavailable


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]
    index: int = 0

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


class Stream(Protocol):
    @property
    def handle(self) -> int: ...  # the cudaStream_t given to execute_async_v3

    def synchronize(self) -> None: ...


class Buffer(Protocol):
    """One tensor's device memory plus a host staging copy of the same shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]  # the host side's dtype (feeds and results); the device side may differ (BF16, FP8)

    @property
    def ptr(self) -> int: ...  # device address given to set_tensor_address

    def upload(self, array: np.ndarray, stream: Stream) -> None: ...  # host -> device, asynchronous

    def download(self, stream: Stream) -> None: ...  # device -> host staging, asynchronous

    def result(self) -> np.ndarray: ...  # a copy of the host staging buffer (after the stream is synchronized)


class Event(Protocol):
    def record(self, stream: Stream) -> None: ...

    def synchronize(self) -> None: ...

    def elapsed_ms(self, end: Event) -> float: ...


class Graph(Protocol):
    def capture(self, stream: Stream) -> AbstractContextManager[None]: ...

    def replay(self, stream: Stream) -> None: ...


class DeviceLayer(Protocol):
    def info(self) -> DeviceInfo: ...

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any], stream: Stream,
                 device_dtype: str | None = None) -> Buffer: ...

    def stream(self) -> Stream: ...

    def event(self) -> Event: ...

    def graph(self) -> Graph: ...


class _TorchStream:
    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def handle(self) -> int:
        return int(self.raw.cuda_stream)

    def synchronize(self) -> None:
        self.raw.synchronize()


def check_host_dtype(array: np.ndarray, buffer: Buffer) -> None:
    """No silent casts: TensorRT reads the bytes it is given as the engine's type (execute_async_v3 takes raw
    addresses), so a feed of another dtype must be converted by the caller, visibly."""
    if array.dtype != buffer.dtype or tuple(array.shape) != tuple(buffer.shape):
        raise TypeError(f"buffer holds {buffer.dtype}{list(buffer.shape)}, was given {array.dtype}"
                        f"{list(array.shape)}; convert the feed first (deploykit never casts silently)")


class _TorchBuffer:
    def __init__(self, torch: Any, device: Any, shape: tuple[int, ...], dtype: np.dtype[Any], stream: Stream,
                 device_dtype: str | None) -> None:
        self._torch = torch
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.stream = stream
        host_dtype = torch.from_numpy(np.empty(0, dtype=self.dtype)).dtype
        with torch.cuda.stream(_raw(stream)):  # the caching allocator ties the block to the runner's stream
            self.device_tensor = torch.empty(shape, dtype=getattr(torch, device_dtype) if device_dtype
                                             else host_dtype, device=device)
        self.host_tensor = torch.empty(shape, dtype=host_dtype, pin_memory=True)

    @property
    def ptr(self) -> int:
        return int(self.device_tensor.data_ptr())

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        check_host_dtype(array, self)
        self.host_tensor.numpy()[...] = array
        with self._torch.cuda.stream(_raw(stream)):
            self.device_tensor.copy_(self.host_tensor, non_blocking=True)

    def download(self, stream: Stream) -> None:
        with self._torch.cuda.stream(_raw(stream)):
            self.host_tensor.copy_(self.device_tensor, non_blocking=True)

    def result(self) -> np.ndarray:
        return np.array(self.host_tensor.numpy(), copy=True)


class _TorchEvent:
    def __init__(self, torch: Any) -> None:
        self.raw = torch.cuda.Event(enable_timing=True)

    def record(self, stream: Stream) -> None:
        self.raw.record(_raw(stream))

    def synchronize(self) -> None:
        self.raw.synchronize()

    def elapsed_ms(self, end: Event) -> float:
        assert isinstance(end, _TorchEvent)
        return float(self.raw.elapsed_time(end.raw))


class _TorchGraph:
    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self.raw = torch.cuda.CUDAGraph()

    @contextmanager
    def capture(self, stream: Stream) -> Iterator[None]:
        # Thread-local capture mode, as trtexec uses: other threads' CUDA calls do not invalidate the capture.
        with self._torch.cuda.graph(self.raw, stream=_raw(stream), capture_error_mode="thread_local"):
            yield

    def replay(self, stream: Stream) -> None:
        with self._torch.cuda.stream(_raw(stream)):
            self.raw.replay()


def _raw(stream: Stream) -> Any:
    assert isinstance(stream, _TorchStream), "a torch device layer needs its own streams"
    return stream.raw


class TorchCudaDevice:
    """The real device layer: torch CUDA on device `index`."""

    def __init__(self, index: int = 0) -> None:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable(
                "TensorRT engines run on torch CUDA buffers, but torch sees no CUDA device here "
                f"(torch {torch.__version__}); install a CUDA build of torch on the GPU machine"
            )
        if index >= torch.cuda.device_count():
            raise BackendUnavailable(f"CUDA device {index} does not exist; this machine has "
                                     f"{torch.cuda.device_count()}")
        self._torch = torch
        self.device = torch.device("cuda", index)
        torch.cuda.set_device(self.device)  # TensorRT uses the thread's current device

    def info(self) -> DeviceInfo:
        index = self.device.index or 0
        major, minor = self._torch.cuda.get_device_capability(index)
        return DeviceInfo(self._torch.cuda.get_device_name(index), (int(major), int(minor)), index)

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any], stream: Stream,
                 device_dtype: str | None = None) -> Buffer:
        return _TorchBuffer(self._torch, self.device, shape, dtype, stream, device_dtype)

    def stream(self) -> Stream:
        return _TorchStream(self._torch.cuda.Stream(device=self.device))

    def event(self) -> Event:
        return _TorchEvent(self._torch)

    def graph(self) -> Graph:
        return _TorchGraph(self._torch)


def default_device() -> DeviceLayer:
    """The device layer runners and builds use unless given one (tests replace this function)."""
    return TorchCudaDevice()
