"""The budget search scores each candidate as the backend computes it: for TensorRT without ONNX Runtime's
WeightBiasQuantization, which quantizes a Q/DQ conv's float bias to int32 where TensorRT keeps it float
(Backend.scored_without); the CPU backends' forms run with every ONNX Runtime optimization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from deploykit.backends.base import backend_of
from deploykit.precision import passes
from deploykit.precision.budget import Evaluator
from tests.calib.recovery_models import conv, model


@pytest.fixture()
def net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    node, inits = conv("c1", "x", "y", rng.standard_normal((4, 4, 3, 3)) * 0.3, rng.standard_normal(4) * 0.1)
    return model([node], inits, 4, 4)


@pytest.mark.parametrize(("backend", "disabled"), [("tensorrt", ("WeightBiasQuantization",)), ("onnxruntime", ())])
def test_the_search_scores_in_the_backends_form(net: onnx.ModelProto, tmp_path: Path, backend: str,
                                                 disabled: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, ...]] = []

    class Recording(Evaluator):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self.disabled_optimizers)

    monkeypatch.setattr(passes, "Evaluator", Recording)
    data = tmp_path / "rows.npy"
    np.save(data, np.random.default_rng(1).standard_normal((12, 4, 12, 14)).astype(np.float32))
    entry = backend_of(backend)
    result = passes.int8_graph(net, None, "net-sha", passes.CalibrationOptions(data=str(data), n=12, method="minmax",
                                                                              use_cache=False),
                               keep_float=(), accuracy_budget=("cosine>=0.5",), layout=entry.qdq_layout,
                               backend=entry, threads=1, progress=lambda _m: None)
    assert "budget" in result.report and made and set(made) == {disabled}
