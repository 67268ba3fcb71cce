"""Shared test setup: hardware markers skip themselves with a reason when the hardware is absent; the session
caches calibration ranges in its own folder."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _own_calibration_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Calibration ranges from this session only. The user's cache (~/.cache/deploykit) is shared by every
    checkout and run on the machine, so a test's INT8 graph, and every verdict and gate built on it, depended
    on which other code had calibrated the same model and data before."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path_factory.mktemp("deploykit-cache")))
        yield


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
