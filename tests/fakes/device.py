"""A CPU stand-in for deploykit.backends.tensorrt.device's torch CUDA layer (test double; no GPU involved).

"Device memory" is numpy arrays in a registry keyed by fake addresses; the tensorrt double reads inputs and
writes outputs through the same registry, so the runner's set_tensor_address calls must be right for outputs
to appear. Rules, each from CUDA's or torch's documented behaviour:
- Work on a stream is deferred: copies, engine launches and graph replays are queued and run only when the
  stream (or an event recorded on it) is synchronized ("CUDA Runtime API, Stream Management": asynchronous
  with respect to the host). A result read before the synchronize is stale, so a missing synchronize fails.
- `elapsed_ms` of an event that has not completed raises, as cudaEventElapsedTime returns cudaErrorNotReady.
- A buffer belongs to the stream it was allocated for ("The caching allocator is aware of only the stream where
  a tensor was allocated", PyTorch docs, torch.Tensor.record_stream); using it on another stream raises (the
  device layer offers no cross-stream ordering: the runner keeps all its work on one stream).
- Uploads copy only an array of the buffer's own dtype and shape (deploykit.backends.tensorrt.device).
- A CUDA-graph capture records the enqueued work instead of queueing it; replay queues it again.
Event times are host times of this fake and are not GPU figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploykit.backends.tensorrt.device import Buffer, DeviceInfo, Event, Graph, Stream, check_host_dtype
from deploykit.errors import BackendUnavailable

ALIGN = 256
Step = Callable[[], None]


@dataclass
class FakeMemory:
    arrays: dict[int, np.ndarray] = field(default_factory=dict)
    owners: dict[int, int] = field(default_factory=dict)  # address -> handle of the stream it was allocated for
    streams: dict[int, FakeStream] = field(default_factory=dict)
    capturing: dict[int, list[Step]] = field(default_factory=dict)
    next_address: int = 0x7F00_0000_0000
    next_stream: int = 0x5000

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any], owner: int) -> int:
        address = self.next_address
        array = np.zeros(shape, dtype=dtype)
        self.next_address += max(ALIGN, -(-array.nbytes // ALIGN) * ALIGN)
        self.arrays[address] = array
        self.owners[address] = owner
        return address

    def array(self, address: int) -> np.ndarray:
        if address not in self.arrays:
            raise KeyError(f"address {address:#x} is not device memory this fake allocated")
        return self.arrays[address]

    def new_stream(self) -> FakeStream:
        self.next_stream += 1
        stream = self.streams[self.next_stream] = FakeStream(self, self.next_stream)
        return stream

    def submit(self, handle: int, step: Step) -> None:
        """Queue `step` on stream `handle`, or record it into the graph being captured there."""
        if handle in self.capturing:
            self.capturing[handle].append(step)
        else:
            self.streams[handle].queue.append(step)

    def check_owner(self, address: int, handle: int, what: str) -> None:
        owner = self.owners.get(address, handle)
        if owner != handle:
            raise RuntimeError(f"{what} at {address:#x} was allocated for stream {owner:#x} and used on stream "
                               f"{handle:#x} with no event ordering them (torch: allocate on the stream that "
                               "uses it)")


class FakeStream:
    def __init__(self, memory: FakeMemory, handle: int) -> None:
        self.memory, self._handle = memory, handle
        self.queue: list[Step] = []
        self.synchronizations = 0

    @property
    def handle(self) -> int:
        return self._handle

    def run_until(self, last: Step | None = None) -> None:
        while self.queue:
            step = self.queue.pop(0)
            step()
            if step is last:
                return

    def synchronize(self) -> None:
        self.synchronizations += 1
        self.run_until()


class FakeBuffer:
    def __init__(self, memory: FakeMemory, shape: tuple[int, ...], dtype: np.dtype[Any], stream: Stream,
                 device_dtype: str | None) -> None:
        self.memory = memory
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.device_dtype = device_dtype or self.dtype.name
        try:
            stored = np.dtype(self.device_dtype)
        except TypeError:  # bfloat16 / float8: numpy has no such type; the fake keeps the host type
            stored = self.dtype
        self._ptr = memory.allocate(shape, stored, stream.handle)
        self.host = np.zeros(shape, dtype=self.dtype)

    @property
    def ptr(self) -> int:
        return self._ptr

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        check_host_dtype(array, self)
        self.memory.check_owner(self._ptr, stream.handle, "buffer")
        staged, target = np.array(array, copy=True), self.memory.array(self._ptr)  # the pinned staging copy

        def copy() -> None:
            target[...] = staged

        self.memory.submit(stream.handle, copy)

    def download(self, stream: Stream) -> None:
        self.memory.check_owner(self._ptr, stream.handle, "buffer")
        source = self.memory.array(self._ptr)

        def copy() -> None:
            self.host[...] = source

        self.memory.submit(stream.handle, copy)

    def result(self) -> np.ndarray:
        return self.host.copy()


class FakeEvent:
    def __init__(self) -> None:
        self.at: float | None = None
        self.stream: FakeStream | None = None
        self.marker: Step | None = None

    def record(self, stream: Stream) -> None:
        assert isinstance(stream, FakeStream)
        self.at, self.stream = None, stream

        def mark() -> None:
            self.at = time.perf_counter()

        self.marker = mark
        stream.memory.submit(stream.handle, mark)

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.run_until(self.marker)

    def elapsed_ms(self, end: Event) -> float:
        assert isinstance(end, FakeEvent)
        if self.at is None or end.at is None:
            raise RuntimeError("cudaErrorNotReady: an event has not completed (synchronize before elapsed_ms)")
        return (end.at - self.at) * 1e3


class FakeGraph:
    def __init__(self, memory: FakeMemory) -> None:
        self.memory = memory
        self.work: list[Step] = []
        self.replays = 0

    @contextmanager
    def capture(self, stream: Stream) -> Iterator[None]:
        self.memory.capturing[stream.handle] = self.work
        try:
            yield
        finally:
            del self.memory.capturing[stream.handle]

    def replay(self, stream: Stream) -> None:
        def count() -> None:
            self.replays += 1

        for step in (*self.work, count):
            self.memory.submit(stream.handle, step)


class FakeDevice:
    """Implements deploykit.backends.tensorrt.device.DeviceLayer on the CPU; `gpu()` says which GPU it pretends."""

    def __init__(self, memory: FakeMemory, gpu: Callable[[], tuple[str, tuple[int, int]] | None]) -> None:
        self.memory = memory
        self.gpu = gpu
        self.graphs: list[FakeGraph] = []

    def info(self) -> DeviceInfo:
        gpu = self.gpu()
        if gpu is None:
            raise BackendUnavailable("torch sees no CUDA device here (fake device with no simulated GPU)")
        return DeviceInfo(gpu[0], gpu[1], 0)

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any], stream: Stream,
                 device_dtype: str | None = None) -> Buffer:
        return FakeBuffer(self.memory, shape, dtype, stream, device_dtype)

    def stream(self) -> Stream:
        return self.memory.new_stream()

    def event(self) -> Event:
        return FakeEvent()

    def graph(self) -> Graph:
        graph = FakeGraph(self.memory)
        self.graphs.append(graph)
        return graph
