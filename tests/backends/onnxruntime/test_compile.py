"""ONNX Runtime's compile step writes an artifact ONNX Runtime loads, even where its own optimized form does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from deploykit.backends.onnxruntime.compile import ort_model_from_onnx
from deploykit.graph.fp16 import fp16_from_onnx
from tests.graph.graphs import if_model


def test_an_optimized_form_ort_refuses_is_not_the_artifact(tmp_path: Path) -> None:
    """Both If branches read the outer float16 `h` into a Conv (no float16 CPU kernel): ORT 1.2x names the Cast it
    inserts in each branch InsertedPrecisionFreeCast_h and then refuses its own optimized model (SSA). The
    artifact is the graph before ORT's optimizations instead, with a note, and it runs."""
    graph = tmp_path / "if.fp16.onnx"
    onnx.save(fp16_from_onnx(if_model()).model, str(graph))
    out = tmp_path / "if.fp16.ort.onnx"
    _, note = ort_model_from_onnx(graph, out, force=False)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(if_model().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = session.run(None, {"x": x})
    assert np.allclose(got[0], want[0], atol=5e-2)
    if note:  # an ORT release that names the casts apart optimizes it as any other graph
        assert "does not load again" in note and "sessions apply when they load it" in note
