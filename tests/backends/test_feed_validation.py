"""Every runner rejects a bad feed the same way: an InputError naming the input and what it expects.

`tiny_onnx` (tests/backends/conftest.py) is tiny_segmenter exported with dynamic batch, height and width.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.torch import TorchRunner
from deploykit.errors import BackendUnavailable, InputError
from deploykit.evaluate import available_providers, provider_chain
from deploykit.runner import Runner
from tests.fixtures.user_models import tiny_segmenter


def _torch() -> Runner:
    return TorchRunner(tiny_segmenter())


RUNNERS: dict[str, Callable[[Path], Runner]] = {
    "torch": lambda _path: _torch(),
    "onnxruntime": lambda path: OnnxRuntimeRunner(path),
}
GOOD = np.zeros((1, 3, 16, 16), np.float32)


@pytest.mark.parametrize("backend", sorted(RUNNERS))
@pytest.mark.parametrize("feed, fragments", [
    ({"image": GOOD}, ["missing input", "unexpected image", "input: float32["]),
    ({"input": GOOD, "extra": GOOD}, ["unexpected extra"]),
    ({"input": GOOD[0]}, ["input 'input' has rank 3", "expected rank 4"]),
    ({"input": np.zeros((1, 4, 16, 16), np.float32)}, ["input 'input' has 4 at axis 1; expected 3"]),
    ({"input": GOOD.astype(np.float64)}, ["input 'input' is float64; expected float32", ".astype(np.float32)"]),
    ({"input": GOOD.tolist()}, ["input 'input' is list, not a numpy array"]),
])
def test_bad_feeds_are_rejected_alike(backend: str, feed: dict[str, object], fragments: list[str],
                                      tiny_onnx: Path) -> None:
    with RUNNERS[backend](tiny_onnx) as runner:
        with pytest.raises(InputError) as caught:
            runner.infer(feed)  # type: ignore[arg-type]
        for fragment in fragments:
            assert fragment in str(caught.value)
        assert runner.infer({"input": GOOD})["output"].shape == (1, 3, 16, 16)  # still usable afterwards


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_absent_gpu_providers_are_backend_unavailable(provider: str, tiny_onnx: Path) -> None:
    alias = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
    if alias in available_providers():
        pytest.skip(f"{alias} is available here")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        provider_chain([provider])
    with pytest.raises(BackendUnavailable, match=alias), OnnxRuntimeRunner(tiny_onnx, providers=(provider,)):
        pass


def test_provider_chain_adds_the_fallbacks_onnxruntime_needs() -> None:
    assert provider_chain(["cpu"]) == ("cpu",)
    if "CUDAExecutionProvider" in available_providers():
        assert provider_chain(["cuda"]) == ("cuda", "cpu")
