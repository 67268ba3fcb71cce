"""The graph every build gives after distillation is the graph distillation measured: through recover() (one range
method) and through choose_method (--calib-method auto, where the candidates share one builder), on each
backend's deployed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploykit.backends.base import backend_of
from deploykit.calib.collect import collect_stats
from deploykit.calib.distill import Distillation, _loss
from deploykit.calib.methods import Entropy, MinMax, amax
from deploykit.calib.qdq import QdqBuilder, calibration_tensors
from deploykit.evaluate import session_from_onnx
from deploykit.precision.range_choice import choose_method
from deploykit.precision.recovery import RecoveryOptions, recover
from tests.calib.recovery_models import inputs, two_layers

STEPS = Distillation(steps=64)


def _loss_of(builder: QdqBuilder, backend: str, calibration: list[np.ndarray]) -> float:
    entry = backend_of(backend)
    deployed = entry.as_deployed(builder.build().model, threads=1, optimize=False, float_source=builder.model)
    student = session_from_onnx(deployed.SerializeToString(), optimization="disable")
    teacher = session_from_onnx(two_layers().SerializeToString(), optimization="disable")
    return float(np.mean([float(_loss([torch.from_numpy(student.run(None, {"x": x})[0])],
                                      teacher.run(None, {"x": x}))) for x in calibration]))


def _ranges(calibration: list[np.ndarray]) -> dict[str, dict[str, float]]:
    source = two_layers()
    stats = collect_stats(source, calibration_tensors(source), iter(calibration), histograms=calibration_tensors(
        source)).stats
    return {m.name: {name: amax(s, m) for name, s in stats.items()} for m in (MinMax(), Entropy())}


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime"])
def test_recover_leaves_the_builder_on_the_graph_it_trained(backend: str) -> None:
    calibration = inputs(6, 3, (12, 12), seed=7)
    builder = QdqBuilder(two_layers(), _ranges(calibration)["minmax"], quantize_outputs=backend == "onnxruntime")
    report = recover(builder, RecoveryOptions(distillation=STEPS), backend_of(backend), calibration, threads=1,
                     progress=lambda _m: None)
    record = report["distillation"]
    assert record["trained"], record
    assert _loss_of(builder, backend, calibration) == pytest.approx(record["loss_after"], rel=1e-3, abs=1e-7)
    assert record["loss_after"] < record["loss_before"]


def test_auto_trains_the_chosen_candidate_once_and_builds_it() -> None:
    calibration = inputs(8, 3, (12, 12), seed=8)
    builder = QdqBuilder(two_layers(), {}, quantize_outputs=False)
    progress: list[str] = []
    _, report = choose_method(builder, _ranges(calibration), (MinMax(), Entropy()),
                              RecoveryOptions(distillation=STEPS), backend_of("tensorrt"), calibration[:6],
                              calibration[6:], "2 inputs", None, threads=1, progress=progress.append)
    record = report["distillation"]
    assert record["trained"], record
    assert sum("against the float model" in line for line in progress) == 1  # once, on the chosen candidate
    assert _loss_of(builder, "tensorrt", calibration[:6]) == pytest.approx(record["loss_after"], rel=1e-3, abs=1e-7)
