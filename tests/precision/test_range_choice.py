"""--calib-method auto (deploykit.precision.range_choice): each candidate's INT8 graph scored on inputs no range was
fitted to, the best kept and every score recorded; an explicit method is never overridden; the default is the
backend's (auto for TensorRT, minmax on CPUs); the cache never hands one method's ranges to another; bias
correction is off by default after entropy ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from deploykit.backends.base import Backend, backend_of
from deploykit.calib import cache as calib_cache
from deploykit.calib.bias_correction import BiasCorrection
from deploykit.calib.data import CalibrationData
from deploykit.calib.methods import Auto, Entropy, MinMax, Mse, Percentile, make_method
from deploykit.errors import CalibrationError
from deploykit.precision.passes import CalibrationOptions, PrecisionResult, _scoring_inputs, int8_graph
from deploykit.precision.range_choice import SCORED_INPUTS, choice_metric
from deploykit.precision.recovery import RecoveryOptions
from tests.calib.recovery_models import conv, model

TENSORRT = backend_of("tensorrt")


@pytest.fixture(scope="module")
def net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    node, inits = conv("c1", "x", "y", rng.standard_normal((4, 4, 3, 3)) * 0.3, np.zeros(4))
    return model([node], inits, 4, 4)


def _rows(case: str, count: int = 10) -> np.ndarray:
    """N(0, 1) inputs; "outlier": one calibration input holds a single value of 1000 (minmax's step then rounds
    every other value to 0); "tail": 2% of all values are 50x larger and carry the output (entropy clips them)."""
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((count, 4, 12, 14)).astype(np.float32)
    if case == "outlier":
        rows[2, 1, 5, 5] = 1000.0
    elif case == "tail":
        rows[rng.random(rows.shape) < 0.02] *= 50.0
    return rows


def _build(net: onnx.ModelProto, folder: Path, case: str, *, n: int = 8, method: str | None = "auto",
           backend: Backend = TENSORRT, use_cache: bool = False, rows: int = 10,
           messages: list[str] | None = None) -> PrecisionResult:
    data = folder / f"{case}.npy"
    if not data.exists():
        np.save(data, _rows(case, rows))
    said = messages if messages is not None else []
    return int8_graph(net, None, "net-sha", CalibrationOptions(data=str(data), n=n, method=method,
                                                                 use_cache=use_cache),
                        keep_float=(), accuracy_budget=(), layout=backend.qdq_layout, backend=backend, threads=1,
                        progress=lambda m: said.append(m) if isinstance(m, str) else None)


def _scales(model: onnx.ModelProto) -> dict[str, float]:
    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: float(numpy_helper.to_array(inits[n.input[1]]).ravel()[0]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits}


@pytest.mark.parametrize(("case", "winner"), [("outlier", "entropy"), ("tail", "minmax")])
def test_auto_keeps_the_candidate_that_scores_best(net: onnx.ModelProto, tmp_path: Path, case: str,
                                                   winner: str) -> None:
    """A rare outlier makes minmax's step too coarse for everything else; a tail that carries the output is what
    entropy clips. Both scores are recorded, the better one is kept, and its graph is the one the explicit
    method builds (same ranges, same recovery steps)."""
    messages: list[str] = []
    auto = _build(net, tmp_path, case, messages=messages)
    choice = auto.report["method_choice"]
    assert set(choice["scores"]) == {"minmax", "entropy"} and choice["metric"] == "cosine"  # no task: cosine
    best = max(choice["scores"], key=lambda name: choice["scores"][name]["cosine"])
    assert choice["chosen"] == best == winner == auto.report["method"]["method"]
    assert choice["scored_on"] == "2 input(s) beyond --calib-n"
    assert sum(m.startswith("calibration method auto: ") for m in messages) == 1
    explicit = _build(net, tmp_path, case, method=winner)
    assert "method_choice" not in explicit.report
    assert _scales(auto.model) == pytest.approx(_scales(explicit.model))
    assert auto.report["recovery"] == explicit.report["recovery"]


def test_an_explicit_method_is_not_overridden(net: onnx.ModelProto, tmp_path: Path) -> None:
    """minmax asked for where auto keeps entropy; the default is the backend's: auto for TensorRT, minmax on CPUs."""
    asked = _build(net, tmp_path, "outlier", method="minmax")
    assert asked.report["method"] == {"method": "minmax"} and "method_choice" not in asked.report
    assert _build(net, tmp_path, "outlier", method=None).report["method_choice"]["chosen"] == "entropy"
    cpu = _build(net, tmp_path, "outlier", method=None, backend=backend_of("onnxruntime"))
    assert cpu.report["method"] == {"method": "minmax"} and "method_choice" not in cpu.report


def test_auto_without_spare_inputs_leaves_its_scoring_inputs_out_of_calibration(net: onnx.ModelProto,
                                                                                tmp_path: Path) -> None:
    auto = _build(net, tmp_path, "outlier", n=10)
    assert auto.calibration["inputs"] == 10 - SCORED_INPUTS
    assert auto.report["method_choice"]["scored_on"] == "the last 2 of the --calib-n inputs, left out of calibration"
    assert _build(net, tmp_path, "outlier", n=10, method="minmax").calibration["inputs"] == 10


def test_the_cache_keeps_each_method_apart(net: onnx.ModelProto, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """auto's cache file holds every candidate's ranges under a key of its own: an explicit method never reads
    it (nor auto an explicit method's), and a second auto build reads it and chooses alike."""
    records = [m.to_dict() for m in (Auto(), MinMax(), Entropy(), Percentile(), Mse())]
    keys = {calib_cache.cache_key("onnx", "data", record) for record in records}
    assert len(keys) == len(records)
    assert calib_cache.cache_key("onnx", "data", Auto((MinMax(), Entropy(stride=4))).to_dict()) not in keys
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    first = _build(net, tmp_path, "outlier", use_cache=True)
    explicit = _build(net, tmp_path, "outlier", method="entropy", use_cache=True)
    again = _build(net, tmp_path, "outlier", use_cache=True)
    assert not first.calibration["cache_hit"] and not explicit.calibration["cache_hit"]
    assert again.calibration["cache_hit"] and again.report["method_choice"] == first.report["method_choice"]
    assert explicit.calibration["cache"] != first.calibration["cache"]


def test_bias_correction_is_off_by_default_after_entropy_ranges_only() -> None:
    default = RecoveryOptions()
    assert not default.resolved(Entropy()).bias_correction.enabled  # type: ignore[union-attr]
    assert all(default.resolved(m).bias_correction.enabled  # type: ignore[union-attr]
               for m in (MinMax(), Percentile(), Mse()))
    asked = RecoveryOptions(bias_correction=BiasCorrection(True))
    assert asked.resolved(Entropy()).bias_correction == BiasCorrection(True)


def test_auto_takes_no_percentile_and_names_its_metric() -> None:
    assert make_method("auto") == Auto()
    with pytest.raises(CalibrationError, match="percentile method, not auto"):
        make_method("auto", percentile=99.0)
    assert (choice_metric("segmentation"), choice_metric("saliency"), choice_metric(None)) == \
        ("pixel_agreement", "cc", "cosine")


@settings(max_examples=80, deadline=None)
@given(calibrated=st.integers(1, 9), spare=st.integers(0, 4), held=st.integers(0, 3))
def test_no_scoring_input_is_calibrated_on(calibrated: int, spare: int, held: int) -> None:
    """Whatever the source holds, auto scores on at most SCORED_INPUTS inputs that calibration does not read,
    and calibration keeps at least one input (a single one is scored on itself, and the record says so)."""
    data = CalibrationData("array", "rows.npy", tuple(str(i) for i in range(calibrated)), (1, 3, 8, 8),
                           spare=tuple(str(i) for i in range(calibrated, calibrated + spare)))
    held_out = CalibrationData("array", "rows.npy", tuple(f"held{i}" for i in range(held)), (1, 3, 8, 8)) \
        if held else None
    kept, scored, origin = _scoring_inputs(data, held_out)
    assert len(kept) >= 1 and 1 <= len(scored) <= SCORED_INPUTS
    if len(data) == 1 and not spare and held_out is None:
        assert scored.items == kept.items and "itself" in origin
    else:
        assert not set(scored.items) & set(kept.items)
        assert set(kept.items) <= set(data.items) and len(kept) >= len(data) - SCORED_INPUTS
