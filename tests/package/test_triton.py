"""Triton model repositories: layout, configs that Triton's own schema accepts, batching from the ONNX."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2

from deploykit.cli import cli
from deploykit.errors import InputError
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.package.triton import validate_config
from deploykit.zoo.sources import load_model

USER = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("triton")
    loaded = load_model(USER, options={"num_classes": 4})
    dynamic, static = folder / "seg.onnx", folder / "fixed.onnx"
    onnx_from_torch(loaded, dynamic, input_shape=(1, 3, 32, 32), simplify=False)
    onnx_from_torch(loaded, static, input_shape=(2, 3, 32, 48), dynamic=False, simplify=False)
    return dynamic, static


def _config(path: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def test_repository_layout_and_configs(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    dynamic, static = onnx_pair
    out = tmp_path / "model_repository"
    result = CliRunner().invoke(cli, ["package", "--triton", str(dynamic), str(static), "--out", str(out),
                                      "--instances", "2"])
    assert result.exit_code == 0, result.output
    seg = _config(out / "seg" / "config.pbtxt")
    assert seg.platform == "onnxruntime_onnx" and seg.max_batch_size == 8
    assert [tuple(i.dims) for i in seg.input] == [(3, -1, -1)]
    assert [tuple(o.dims) for o in seg.output] == [(4, -1, -1)]
    assert seg.HasField("dynamic_batching") and seg.instance_group[0].count == 2
    assert seg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert onnx.load(str(out / "seg" / "1" / "model.onnx")).graph.node
    fixed = _config(out / "fixed" / "config.pbtxt")
    assert fixed.max_batch_size == 0 and not fixed.HasField("dynamic_batching")
    assert [tuple(i.dims) for i in fixed.input] == [(2, 3, 32, 48)]


def test_existing_repository_needs_force(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep").write_text("x")
    args = ["package", "--triton", str(onnx_pair[0]), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep").exists()
    assert CliRunner().invoke(cli, [*args, "--force"]).exit_code == 0
    assert not (out / "keep").exists() and (out / "seg" / "config.pbtxt").exists()


def test_duplicate_names_and_missing_artifacts(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    twice = [str(onnx_pair[0]), str(onnx_pair[0])]
    dup = runner.invoke(cli, ["package", "--triton", *twice, "--out", str(tmp_path / "r")])
    assert dup.exit_code == 2 and "--name" in dup.output and not (tmp_path / "r").exists()
    missing = runner.invoke(cli, ["package", "--triton", str(tmp_path / "nope.plan"), "--out", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_schema_rejects_what_triton_rejects() -> None:
    with pytest.raises(InputError, match="not valid for Triton"):
        validate_config('name: "x"\nplatform: "onnxruntime_onnx"\ninstance_group [ { kind: KIND_TPU } ]\n')


def test_default_names_keep_the_precision(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    int8 = tmp_path / "model.int8.ort.onnx"
    fp16 = tmp_path / "model.fp16.ort.onnx"
    shutil.copyfile(onnx_pair[0], int8)
    shutil.copyfile(onnx_pair[0], fp16)
    out = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["package", "--triton", str(int8), str(fp16), "--out", f"{out}/"])
    assert result.exit_code == 0, result.output
    assert f"{out}/model_int8: " in result.output and "//" not in result.output  # the README's `--out repo/`
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.endswith(("_pre", "_post", "_image"))
                  ) == ["model_fp16", "model_int8"]


def renamed(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """`model` with its graph inputs and outputs renamed (and every node that reads or writes them)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in (*copy.graph.input, *copy.graph.output):
        value.name = names.get(value.name, value.name)
    return copy


_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(input_name=_names, output_name=_names)
def test_any_tensor_name_reaches_every_config_as_the_model_has_it(onnx_pair: tuple[Path, Path], tmp_path: Path,
                                                                   input_name: str, output_name: str) -> None:
    """Tensor names are written as they are in the model, whatever they hold: a quote or a newline made the
    config invalid, a backslash changed the name Triton read (\\b became a backspace)."""
    assume(input_name != output_name)
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    model = folder / "odd.onnx"
    onnx.save(renamed(onnx.load(str(onnx_pair[0])), {"input": input_name, "output": output_name}), str(model))
    result = CliRunner().invoke(cli, ["package", "--triton", str(model), "--out", str(folder / "repo")])
    assert result.exit_code == 0, result.output
    config = _config(folder / "repo" / "odd" / "config.pbtxt")
    assert [i.name for i in config.input] == [input_name] and [o.name for o in config.output] == [output_name]
    ensemble = _config(folder / "repo" / "odd_image" / "config.pbtxt")
    step = ensemble.ensemble_scheduling.step[1]
    assert list(step.input_map) == [input_name] and list(step.output_map) == [output_name]


@pytest.mark.parametrize(("names", "words"), [
    (["x" * 300], "at most 200"),  # a folder name too long for the file system: exit 3 before
    (["Dockerfile"], "repository's root"),  # the model folder and the Dockerfile collided: exit 3 before
    (["inferenceservice.yaml"], "repository's root"),
    (["seg", "SEG"], "differ only in case"),  # one folder once copied to macOS or Windows
    (["seg", "Seg_image"], "image-step names"),
])
def test_model_names_the_repository_cannot_hold_are_refused_before_anything_is_written(
        onnx_pair: tuple[Path, Path], tmp_path: Path, names: list[str], words: str) -> None:
    artifacts = [str(onnx_pair[0])] * len(names)
    result = CliRunner().invoke(cli, ["package", "--triton", *artifacts, *(f"--name={n}" for n in names), "--out",
                                      str(tmp_path / "repo")])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not list(tmp_path.iterdir())
