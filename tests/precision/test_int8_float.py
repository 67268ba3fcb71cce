"""--int8-float: the float remainder of an INT8 graph in fp32 (the CPU backends' default), fp16 (TensorRT's
default: float16 ops and float16 Q/DQ scales at opset 19, as ModelOpt's high_precision_dtype=fp16), or auto (fp16
only where the accuracy budget holds; TensorRT's default with a budget); the choice and why land in the precision
report and the sidecar. The TensorRT build's report carries the Q/DQ lint, which says why a choice was made where
it is not what TensorRT rewards; depthwise/grouped convolutions stay out of INT8 for TensorRT unless asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from deploykit.backends.base import backend_of
from deploykit.build import build_artifact
from deploykit.calib.data import calibration_data
from deploykit.errors import BuildError
from deploykit.evaluate import session_from_onnx
from deploykit.graph.seven_bit import SEVEN_BIT
from deploykit.io.metadata import read_metadata
from deploykit.precision.budget import Evaluator, parse_budget
from deploykit.precision.int8_choices import float_remainder
from deploykit.precision.passes import CalibrationOptions, input_shape, int8_graph
from deploykit.precision.table import PRECISIONS
from tests.fixtures.cpu import depthwise_int8_weights, simulate_cpu
from tests.fixtures.precision_models import export_user_model, photo_folder


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_user_model(tmp_path_factory.mktemp("int8-float") / "net.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("int8-float-calib"), count=6)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


def _build(source: Path, calib: Path, out: Path, **options: object) -> tuple[dict[str, object], onnx.ModelProto]:
    budget = options.pop("budget", None)
    result = build_artifact(source, out, precision=PRECISIONS["int8"], accuracy_budget=budget,  # type: ignore[arg-type]
                            calibration=CalibrationOptions(data=str(calib), **options))  # type: ignore[arg-type]
    assert result.precision_onnx is not None
    assert result.sidecar.build_options["calibration"]["int8_float"] == result.report["int8_float"]["chosen"]
    return result.report, onnx.load(str(result.precision_onnx))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(model.SerializeToString())
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def test_default_remainder_is_fp32_on_a_cpu(source: Path, calib: Path, tmp_path: Path) -> None:
    report, graph = _build(source, calib, tmp_path / "a.int8.onnx")
    assert report["int8_float"]["asked"] == "default" and report["int8_float"]["chosen"] == "fp32"
    assert "CPUs run float16 as casts" in report["int8_float"]["why"]
    assert not any(i.data_type == TensorProto.FLOAT16 for i in graph.graph.initializer)


@pytest.mark.parametrize("vnni", [False, True], ids=["no-vnni", "vnni"])
def test_fp16_remainder_has_float16_ops_and_scales(vnni: bool, source: Path, calib: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On either kind of CPU the ONNX Runtime artifact builds: without VNNI its 7-bit weights keep float16
    scales (float32 ones bound Conv's T to two types and ONNX Runtime refused the graph)."""
    simulate_cpu(monkeypatch, vnni=vnni)
    report, graph = _build(source, calib, tmp_path / "b.int8.onnx", int8_float="fp16")
    artifact = onnx.load(str(tmp_path / "b.int8.onnx"))
    depthwise = depthwise_int8_weights(artifact)
    widest = max(int(np.abs(numpy_helper.to_array(i)).max()) for i in artifact.graph.initializer
                 if i.data_type == TensorProto.INT8 and len(i.dims) == 4 and i.name not in depthwise)
    assert (widest <= SEVEN_BIT) != vnni  # 7-bit weights only without VNNI (depthwise convs keep full range)
    assert report["int8_float"]["chosen"] == "fp16"
    assert next(o.version for o in graph.opset_import if o.domain == "") == 19
    onnx.checker.check_model(graph, full_check=True)
    inits = {i.name: i for i in graph.graph.initializer}
    producers = {o: n for n in graph.graph.node for o in n.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    for conv in convs:  # weights and inputs arrive from float16 DequantizeLinears, no Cast in between
        for name in conv.input[:2]:
            dq = producers[name]
            assert dq.op_type == "DequantizeLinear", (conv.name, dq.op_type)
            assert inits[dq.input[1]].data_type == TensorProto.FLOAT16
    assert read_metadata(graph) is not None
    fp32 = onnx.load(str(source))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 40)).astype(np.float32)
    out = _run(graph, x)
    assert out.dtype == np.float32 and _cosine(_run(fp32, x), out) > 0.98


def test_auto_takes_fp16_only_where_the_budget_holds(source: Path, calib: Path) -> None:
    """auto scores the fp16 remainder on the held-out inputs: a budget just below that score takes fp16, one
    just above keeps fp32 and says why (the budgets come from the measured score, so this holds on any CPU)."""
    model = onnx.load(str(source))
    meta = read_metadata(model)
    int8 = int8_graph(model, meta, "0" * 64, CalibrationOptions(data=str(calib), int8_float="fp32"), keep_float=(),
                      accuracy_budget=(), layout="inputs", backend=backend_of("tensorrt"), threads=None,
                      progress=lambda _m: None).model
    shape = input_shape(model, meta)
    assert shape is not None
    held = calibration_data(str(calib), input_shape=shape, preprocessing=meta.preprocessing if meta else None, n=2)

    def choose(budget: str) -> dict[str, Any]:
        return float_remainder(model, int8, "auto", backend_of("tensorrt"), parse_budget(budget, "segmentation"),
                               held, meta, {}, threads=None, progress=lambda _m: None)[1]

    score = float(choose("cosine>=0")["fp16_scores"]["cosine"])
    assert choose(f"cosine>={score - 1e-6}")["chosen"] == "fp16"
    strict = choose(f"cosine>={min(1.0, score + 1e-6)}")
    assert strict["chosen"] == "fp32" and "misses" in strict["why"]


def test_auto_without_a_budget_is_fp32(source: Path, calib: Path, tmp_path: Path) -> None:
    unbudgeted, _ = _build(source, calib, tmp_path / "e.int8.onnx", int8_float="auto")
    record = unbudgeted["int8_float"]
    assert record["chosen"] == "fp32" and "without an accuracy budget" in record["why"]


def test_tensorrt_defaults_are_what_tensorrt_rewards(source: Path, calib: Path) -> None:
    """For TensorRT: fp16 remainder (auto with a budget) and depthwise/grouped convs out of INT8, unless asked;
    a choice that is not what TensorRT rewards is explained by the lint in the report."""
    model = onnx.load(str(source))

    def build(**options: object) -> dict[str, object]:
        budget = options.pop("budget", ())
        return int8_graph(model, read_metadata(model), "0" * 64,
                          CalibrationOptions(data=str(calib), **options),  # type: ignore[arg-type]
                          keep_float=(), accuracy_budget=budget, layout="inputs",  # type: ignore[arg-type]
                          backend=backend_of("tensorrt"), threads=None, progress=lambda _m: None).report

    default = build()
    assert default["int8_float"]["chosen"] == "fp16" and "TensorRT's default" in default["int8_float"]["why"]
    grouped = [k for k in default["kept_float"] if "depthwise/grouped" in k["reason"]]
    assert grouped and {k["op_type"] for k in grouped} == {"Conv"}
    assert "int8-fp32-remainder" not in default["qdq_lint"]["by_rule"]
    assert "int8-grouped-conv" not in default["qdq_lint"]["by_rule"]
    budgeted = build(budget=("cosine>=0.5",), holdout=2)
    assert budgeted["int8_float"]["asked"] == "default" and budgeted["int8_float"]["chosen"] == "fp16"
    asked = build(int8_float="fp32", grouped="int8")
    assert not [k for k in asked["kept_float"] if "depthwise/grouped" in k["reason"]]
    lint = {f["rule"]: f["why"] for f in asked["qdq_lint"]["findings"]}
    assert "this build: asked for" in lint["int8-fp32-remainder"]
    assert "this build: asked for" in lint["int8-grouped-conv"]


def test_unknown_choice_fails(source: Path, calib: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="--int8-float"):
        _build(source, calib, tmp_path / "f.int8.onnx", int8_float="bf16")


def test_tensorrt_graph_report_carries_the_qdq_lint(source: Path, calib: Path) -> None:
    model = onnx.load(str(source))
    result = int8_graph(model, read_metadata(model), "0" * 64, CalibrationOptions(data=str(calib)), keep_float=(),
                        accuracy_budget=(), layout="inputs", backend=backend_of("tensorrt"), threads=None,
                        progress=lambda _m: None)
    lint = result.report["qdq_lint"]
    assert not [f for f in lint["findings"] if f["rule"].startswith("qdq-")]  # deploykit's TensorRT layout
    assert lint["by_rule"] == {rule: sum(f["rule"] == rule for f in lint["findings"]) for rule in lint["by_rule"]}
    scales = [numpy_helper.to_array(i) for i in result.model.graph.initializer if i.name.endswith("_scale")]
    assert scales and all(s.dtype == np.float32 for s in scales)


def test_tensorrt_form_scoring_matches_the_unoptimized_graph(source: Path, calib: Path, tmp_path: Path) -> None:
    """ONNX Runtime's WeightBiasQuantization rounds float16 bias scales; the TensorRT-form evaluator skips it
    and computes what the graph says (ONNX Runtime with no optimization at all)."""
    _, graph = _build(source, calib, tmp_path / "g.int8.onnx", int8_float="fp16")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 40)).astype(np.float32)
    evaluator = Evaluator(onnx.load(str(source)).SerializeToString(), [x], "segmentation",
                          disabled_optimizers=backend_of("tensorrt").scored_without)
    simulated = evaluator._run(graph.SerializeToString(), 1)[0][0]
    exact = session_from_onnx(graph.SerializeToString(), optimization="disable")
    assert np.allclose(simulated, exact.run(None, {exact.get_inputs()[0].name: x})[0], atol=1e-3)
