"""open_target: zoo names and factories run in PyTorch, .onnx files in ONNX Runtime, artifacts in their
sidecar's backend, each with what is known about the model; bad targets fail with a message that helps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from deploykit.backends.base import backend_of
from deploykit.errors import BackendUnavailable, ConfigConflict, InputError, UnknownModel
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.digests import sha256_file
from deploykit.io.metadata import read_metadata
from deploykit.io.sidecar import Sidecar, sidecar_path
from deploykit.precision.table import PRECISIONS, detect_precision
from deploykit.targets.resolve import is_file_target, open_target
from deploykit.zoo import get_model_spec
from tests.fixtures.tiny import TINY

USER = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = open_target(USER)
    assert target.loaded is not None
    path = tmp_path_factory.mktemp("targets") / "tiny.onnx"
    assert onnx_from_torch(target.loaded, path, input_shape=(1, 3, 48, 64), simplify=False).passed
    return path


def _run(target_path: str, x: np.ndarray) -> np.ndarray:
    target = open_target(target_path)
    with target.runner as runner:
        return next(iter(runner.infer({target.input_name: x}).values()))


def test_zoo_name_is_a_seeded_torch_target() -> None:
    spec = get_model_spec("msinet")
    target = open_target("msinet", options=dict(TINY[spec.name].options))
    assert (target.kind, target.task, target.precision, target.onnx_path) == ("torch", "saliency", "fp32", None)
    assert target.input_size == spec.input_size and target.preprocessing == spec.preprocessing
    assert "width=" in target.label
    again = open_target("msinet", options=dict(TINY[spec.name].options))
    assert target.loaded is not None and again.loaded is not None
    for a, b in zip(target.loaded.module.state_dict().values(), again.loaded.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)  # same initialisation in every process: parity against an export without weights


def test_user_factory_and_onnx_file_agree(exported: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 64)).astype(np.float32)
    target = open_target(str(exported))
    assert (target.kind, target.task, target.precision, target.input_name) == ("onnx", "segmentation", "fp32", "input")
    assert target.input_size == (48, 64) and target.static_input is None and target.onnx_path == exported
    assert target.num_classes == 3 and target.runner.describe() == "onnxruntime[cpu]"
    np.testing.assert_allclose(_run(str(exported), x), _run(USER, x), atol=1e-5)


def test_onnx_without_metadata_takes_its_static_shape(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 20, 24])])
    onnx.save(helper.make_model(graph), str(path))
    target = open_target(str(path))
    assert (target.task, target.preprocessing, target.metadata) == (None, None, None)
    assert target.static_input == (1, 3, 20, 24) and target.input_size == (20, 24) and target.input_name == "x"
    assert open_target(str(path), task="saliency").task == "saliency"


def test_precision_is_read_from_the_graph() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    half = helper.make_graph([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                              helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], "g", [x], [y])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    qdq = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
                             helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], "g", [x], [y], [scale])
    plain = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    assert [detect_precision(helper.make_model(g)) for g in (half, qdq, plain)] == ["fp16", "int8", "fp32"]


def _sidecar(path: Path, backend: str, precision: str, model: dict[str, object]) -> None:
    sidecar = Sidecar(backend=backend, precision=precision, artifact_sha256=sha256_file(path), source_onnx_sha256="",
                      deploykit_version="0", backend_version="0", model=model)
    sidecar_path(path).write_text(json.dumps(sidecar.to_dict()), encoding="utf-8")


def test_artifact_uses_its_sidecar(exported: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "tiny.ort.onnx"
    artifact.write_bytes(exported.read_bytes())
    meta = read_metadata(onnx.load(str(exported)))
    assert meta is not None
    _sidecar(artifact, "onnxruntime", "fp16", {k.removeprefix("deploykit."): v for k, v in meta.to_props().items()})
    target = open_target(str(artifact))
    assert (target.kind, target.precision, target.task, target.input_size) == ("artifact", "fp16", "segmentation",
                                                                               (48, 64))


def test_bad_targets_say_what_to_do(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape("missing.onnx does not exist")):
        open_target(str(tmp_path / "missing.onnx"))
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\0")
    with pytest.raises(InputError, match=re.escape("no sidecar model.plan.deploykit.json")):
        open_target(str(plan))
    _sidecar(plan, "coreml", "fp32", {})
    with pytest.raises(InputError, match="backend 'coreml'"):
        open_target(str(plan))
    with pytest.raises(ConfigConflict, match="--set and --weights apply to PyTorch models"):
        open_target(str(exported), weights="w.pth")
    with pytest.raises(ConfigConflict, match="is a segmentation model"):
        open_target(str(exported), task="saliency")
    with pytest.raises(UnknownModel):
        open_target("no_such_model")
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError, match=re.escape("junk.onnx")):
        open_target(str(not_onnx))
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
            raise BackendUnavailable("onnxruntime-gpu present: nothing to test")
        open_target(str(exported), providers=("cuda",))
    assert is_file_target("x.onnx") and is_file_target(str(plan)) and not is_file_target("msinet")


def test_built_artifact_points_at_the_graph_it_was_compiled_from(exported: Path, tmp_path: Path) -> None:
    from deploykit.build import build_artifact

    out = tmp_path / "tiny.fp16.ort.onnx"
    build_artifact(exported, out, precision=PRECISIONS["fp16"], backend=backend_of("onnxruntime"))
    target = open_target(str(out))
    assert (target.kind, target.precision) == ("artifact", "fp16")
    assert target.onnx_path is not None and target.onnx_path != out  # the FP16 graph, not ORT's fused model
    assert detect_precision(onnx.load(str(target.onnx_path))) == "fp16"
