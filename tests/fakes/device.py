"""A CPU stand-in for deploykit.backends.tensorrt.device's torch CUDA layer (test double; no GPU involved).

"Device memory" is numpy arrays in a registry keyed by fake addresses; the tensorrt double reads inputs and
writes outputs through the same registry, so the runner's set_tensor_address calls must be right for outputs
to appear. Streams execute in program order (synchronously); a CUDA-graph capture records the double's
enqueued work instead of running it, and replay runs it again, as a real graph would. Event times are host
times of this fake and are not GPU figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploykit.backends.tensorrt.device import Buffer, DeviceInfo, Event, Graph, Stream
from deploykit.errors import BackendUnavailable

ALIGN = 256


@dataclass
class FakeMemory:
    arrays: dict[int, np.ndarray] = field(default_factory=dict)
    streams: set[int] = field(default_factory=set)
    capturing: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    next_address: int = 0x7F00_0000_0000
    next_stream: int = 0x5000

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
        address = self.next_address
        array = np.zeros(shape, dtype=dtype)
        self.next_address += max(ALIGN, -(-array.nbytes // ALIGN) * ALIGN)
        self.arrays[address] = array
        return address

    def array(self, address: int) -> np.ndarray:
        if address not in self.arrays:
            raise KeyError(f"address {address:#x} is not device memory this fake allocated")
        return self.arrays[address]

    def new_stream(self) -> int:
        self.next_stream += 1
        self.streams.add(self.next_stream)
        return self.next_stream


class FakeStream:
    def __init__(self, handle: int) -> None:
        self._handle = handle

    @property
    def handle(self) -> int:
        return self._handle

    def synchronize(self) -> None:
        """Work runs in program order here, so there is nothing to wait for."""


class FakeBuffer:
    def __init__(self, memory: FakeMemory, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.memory = memory
        self.shape, self.dtype = shape, np.dtype(dtype)
        self._ptr = memory.allocate(shape, self.dtype)
        self.host = np.zeros(shape, dtype=self.dtype)

    @property
    def ptr(self) -> int:
        return self._ptr

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        self.memory.array(self._ptr)[...] = array

    def download(self, stream: Stream) -> None:
        self.host[...] = self.memory.array(self._ptr)

    def result(self) -> np.ndarray:
        return self.host.copy()


class FakeEvent:
    def __init__(self) -> None:
        self.at = 0.0

    def record(self, stream: Stream) -> None:
        self.at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_ms(self, end: Event) -> float:
        assert isinstance(end, FakeEvent)
        return (end.at - self.at) * 1e3


class FakeGraph:
    def __init__(self, memory: FakeMemory) -> None:
        self.memory = memory
        self.work: list[Callable[[], None]] = []
        self.replays = 0

    @contextmanager
    def capture(self, stream: Stream) -> Iterator[None]:
        self.memory.capturing[stream.handle] = self.work
        try:
            yield
        finally:
            del self.memory.capturing[stream.handle]

    def replay(self, stream: Stream) -> None:
        self.replays += 1
        for step in self.work:
            step()


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

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Buffer:
        return FakeBuffer(self.memory, shape, dtype)

    def stream(self) -> Stream:
        return FakeStream(self.memory.new_stream())

    def event(self) -> Event:
        return FakeEvent()

    def graph(self) -> Graph:
        graph = FakeGraph(self.memory)
        self.graphs.append(graph)
        return graph
