"""export: the typed ExportResult, its JSON form and its defaults (opset, exporter) decided by the library."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from deploykit.export import DEFAULT_OPSET, ExportResult, onnx_from_torch
from deploykit.zoo.sources import load_model

FACTORY = "tests.fixtures.precision_models:precision_net"


def test_export_result_round_trips_and_the_library_picks_the_opset(tmp_path: Path) -> None:
    loaded = load_model(FACTORY, task="segmentation")
    out = tmp_path / "m.onnx"
    result = onnx_from_torch(loaded, out, input_shape=(1, 3, 32, 40), simplify=False, opset=None)
    assert result.passed and result.opset == DEFAULT_OPSET
    opsets = {o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")}
    assert opsets == {DEFAULT_OPSET}
    data = json.loads(json.dumps(result.to_dict()))
    assert data["written"] and {"max_abs", "cosine", "outputs"} <= set(data["checks"][0])
    back = ExportResult.from_dict(data)
    assert back.passed and back.checks[0].outputs.keys() == result.checks[0].outputs.keys()
    assert json.loads(json.dumps(back.to_dict())) == data
