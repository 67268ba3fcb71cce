"""Shared test setup: hardware markers skip themselves with a reason when the hardware is absent; the session
caches calibration ranges in its own folder."""

from __future__ import annotations

import importlib.util
import signal
import traceback
from collections.abc import Iterator
from types import FrameType

import pytest


@pytest.fixture(scope="session", autouse=True)
def _own_calibration_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Calibration ranges from this session only. The user's cache (~/.cache/deploykit) is shared by every
    checkout and run on the machine, so a test's INT8 graph, and every verdict and gate built on it, depended
    on which other code had calibrated the same model and data before."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path_factory.mktemp("deploykit-cache")))
        yield


class StraySigterm(Exception):
    """A SIGTERM that reached the test process outside deploykit's own handling."""


@pytest.fixture(autouse=True)
def _sigterm_fails_the_test_not_the_worker() -> Iterator[None]:
    """Tests send SIGTERM to their own process while deploykit handles it. One that arrives when nothing handles
    it (SIG_DFL) would end the pytest-xdist worker with no trace ("node down: Not properly terminated", seen
    once in CI): while a test runs, the first such SIGTERM fails it with the stack where it landed. Only the
    first, and only during a test: a second one, or one between tests (a supervisor ending pytest), still ends
    the process as before."""
    def stray(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise StraySigterm("SIGTERM outside deploykit's handlers, at:\n" + "".join(traceback.format_stack(frame)))

    previous = signal.signal(signal.SIGTERM, stray)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _tensorrt_ready() -> tuple[bool, str]:
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed (pip install 'deploykit[tensorrt]' on a GPU machine)"
    from deploykit.backends.tensorrt.backend import availability as tensorrt_status

    status = tensorrt_status()
    return status.ready, f"TensorRT is {status.state}: {status.reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Markers, not keywords: keywords also hold directory names, so a checkout in a folder named "trt" or "gpu"
    # would skip every test.
    needs_gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    needs_trt = [item for item in items if item.get_closest_marker("trt") is not None]
    if needs_gpu and not _cuda_available():
        for item in needs_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch here"))
    if needs_trt:
        ready, why = _tensorrt_ready()
        if not ready:
            for item in needs_trt:
                item.add_marker(pytest.mark.skip(reason=why))
