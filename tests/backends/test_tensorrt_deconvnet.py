"""DeconvNet with PyTorch's own unpooling (dynamo export: MaxPool Indices + ScatterND) builds for TensorRT:
lint finds the unpooling, build-engine rewrites it, the engine matches ONNX Runtime on the original graph,
and the default profile's min is raised to a size the model can run at (fc6 is a valid convolution)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.tensorrt.build import TensorRTRunner, engine_from_onnx
from deploykit.graph.lint import lint_onnx
from deploykit.io.images import preprocess
from deploykit.zoo import get_model_spec
from tests.fakes.fixtures import TrtDouble
from tests.fixtures.tiny import TINY

pytestmark = pytest.mark.slow  # the dynamo exporter takes about 40 s here


@pytest.fixture(scope="module")
def deconvnet_indices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.zoo.sources import load_model

    spec = get_model_spec("deconvnet")
    path = tmp_path_factory.mktemp("deconvnet") / "deconvnet_indices.onnx"
    loaded = load_model("deconvnet", options={**TINY[spec.name].options, "unpool": "indices"})
    assert onnx_from_torch(loaded, path, input_shape=(1, 3, *TINY[spec.name].input_size), exporter="dynamo",
                           simplify=False).passed
    return path


def test_deconvnet_indices_builds_and_matches(trt_double: TrtDouble, deconvnet_indices: Path, tmp_path: Path) -> None:
    report = lint_onnx(deconvnet_indices)
    assert report.ok and {f.rule for f in report.findings} == {"unpooling"}
    plan = tmp_path / "deconvnet.plan"
    messages: list[str] = []
    sidecar = engine_from_onnx(deconvnet_indices, plan, progress=messages.append)
    assert sidecar.build_options["graph_rewrites"] == ["unpooling"]
    assert sidecar.build_options["profile"]["input"]["min"] == [1, 3, 64, 64]  # 32x32 cannot run
    # the zoo's size rule raises it before a build (ONNX Runtime's trial at the default min was the older way)
    assert any("follows the model's size rule: min 1x3x64x64" in m for m in messages), messages
    spec = get_model_spec("deconvnet")
    feed = {"input": preprocess(data.coffee(), spec.preprocessing, TINY[spec.name].input_size)}
    with OnnxRuntimeRunner(deconvnet_indices) as reference, TensorRTRunner.from_artifact(plan) as engine:
        np.testing.assert_allclose(engine.infer(feed)["output"], reference.infer(feed)["output"], atol=1e-5)
