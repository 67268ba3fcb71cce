"""Export of user models: size constraints, exceptions from user code, structured outputs, simplification.
Real ONNX Runtime sessions throughout."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.errors import ExportError, InputError, UserCodeError
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.export.results import ExportResult
from deploykit.export.verification_shapes import verification_shapes
from deploykit.exporters import DEFAULT_OPSET
from deploykit.zoo.sources import load_model
from tests.fixtures import user_models

FIXTURES = "tests.fixtures.user_models"
EXITING_MODULE = Path(user_models.__file__).with_name("exiting_module.py")  # never imported here: it exits


def _export(tmp_path: Path, factory: str, shape: tuple[int, int, int, int], **kw: object) -> tuple[object, list[str]]:
    said: list[str] = []
    loaded = load_model(f"{FIXTURES}:{factory}", options=kw.pop("options", None))  # type: ignore[arg-type]
    result = onnx_from_torch(loaded, tmp_path / "m.onnx", input_shape=shape, simplify=False,
                             progress=said.append, **kw)  # type: ignore[arg-type]
    return result, said


def _line_of(fragment: str, obj: object) -> int:
    lines, start = inspect.getsourcelines(obj)  # type: ignore[arg-type]
    return start + next(i for i, line in enumerate(lines) if fragment in line)


# --- size constraints ---------------------------------------------------------------------------------------

def test_size_multiple_makes_a_constrained_model_export_with_dynamic_shapes(tmp_path: Path) -> None:
    result, said = _export(tmp_path, "divisible_by_16", (1, 3, 48, 48), size_multiple=16)
    assert result.passed and result.dynamic and result.size_multiple == 16  # type: ignore[attr-defined]
    assert [c.input_shape for c in result.checks] == [(1, 3, 48, 48), (2, 3, 64, 80)]  # type: ignore[attr-defined]
    assert not any("retrying" in s for s in said)
    assert (tmp_path / "m.onnx").is_file()


def test_a_rejected_verification_shape_is_retried_with_multiples_of_32(tmp_path: Path) -> None:
    result, said = _export(tmp_path, "divisible_by_16", (1, 3, 64, 64))
    assert result.passed and result.size_multiple == 32  # type: ignore[attr-defined]
    assert result.checks[1].input_shape == (2, 3, 96, 128)  # type: ignore[attr-defined]
    note = next(s for s in said if "retrying" in s)
    assert "2x3x72x80" in note and "divisible by 16" in note and "--size-multiple" in note


def test_an_undetectable_constraint_stops_naming_the_option(tmp_path: Path) -> None:
    # 48 is divisible by 16 but not by 32: no retry can keep the export shape's residue.
    with pytest.raises(ExportError, match=r"--size-multiple N.*--static") as info:
        _export(tmp_path, "divisible_by_16", (1, 3, 48, 48))
    assert "2x3x56x64" in str(info.value) and "user_models.py:" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(InputError, match=r"not a multiple of --size-multiple 16; use e\.g\. 1x3x48x48"):
        _export(tmp_path, "divisible_by_16", (1, 3, 48, 40), size_multiple=16)


def test_cli_size_multiple_and_static(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["export", f"{FIXTURES}:divisible_by_16", "--input-shape", "1,3,48,48", "--no-simplify"]
    failed = runner.invoke(cli, [*base, "-o", str(tmp_path / "a.onnx")])
    assert failed.exit_code == 2 and "--size-multiple" in failed.output and "bug in deploykit" not in failed.output
    ok = runner.invoke(cli, [*base, "--size-multiple", "16", "-o", str(tmp_path / "b.onnx")])
    assert ok.exit_code == 0, ok.output
    static = runner.invoke(cli, [*base, "--static", "-o", str(tmp_path / "c.onnx")])
    assert static.exit_code == 0, static.output


# --- exceptions from user code ------------------------------------------------------------------------------

def test_a_raising_factory_is_exit_2_with_the_users_file_and_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", f"{FIXTURES}:raising_factory", "--input-shape", "1,3,32,32",
                                      "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2, result.output
    line = _line_of("raise FileNotFoundError", user_models.raising_factory)
    assert f"your factory {FIXTURES}:raising_factory raised FileNotFoundError: no weights at ./checkpoints/best.pth" \
        in result.output
    assert f"user_models.py:{line})" in result.output
    assert "bug in deploykit" not in result.output and "Traceback" not in result.output


def test_a_raising_forward_is_exit_2_with_the_users_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(UserCodeError) as info:
        _export(tmp_path, "raising_model", (1, 3, 32, 32))
    line = _line_of("raise ValueError", user_models.RaisingModel)
    message = str(info.value)
    assert message.startswith(f"your model {FIXTURES}:raising_model (on input 1x3x32x32) raised ValueError: "
                              "expected 4 input channels, got 3")
    assert message.endswith(f"user_models.py:{line})")


@pytest.mark.parametrize(("source", "says", "fragment", "where"), [
    (f"{FIXTURES}:exiting_model", "your model tests.fixtures.user_models:exiting_model (on input 1x3x32x32) "
     "raised SystemExit: 3", "sys.exit(3)", user_models.ExitingModel),
    (f"{FIXTURES}:exiting_factory", "your factory tests.fixtures.user_models:exiting_factory raised SystemExit: "
     "cannot find the config", "raise SystemExit", user_models.exiting_factory),
    (f"{FIXTURES}:halting_model", "raised Halt: stop here", 'raise Halt("stop here")', user_models.HaltingModel),
    ("tests.fixtures.exiting_module:build", "your module tests.fixtures.exiting_module raised SystemExit: run me "
     "as a script", "sys.exit(", EXITING_MODULE),
])
def test_sys_exit_and_other_base_exceptions_in_user_code_are_theirs(source: str, says: str, fragment: str,
                                                                    where: object, tmp_path: Path) -> None:
    if where is EXITING_MODULE:
        line = next(i for i, text in enumerate(EXITING_MODULE.read_text().splitlines(), 1) if fragment in text)
        file = EXITING_MODULE.name
    else:
        line, file = _line_of(fragment, where), "user_models.py"
    result = CliRunner().invoke(cli, ["export", source, "--input-shape", "1,3,32,32", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert says in result.stderr and result.stderr.rstrip().endswith(f"{file}:{line})"), result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("factory", ["numpy_model", "ignores_input"])
def test_a_graph_that_reads_no_input_is_refused_with_the_reason(factory: str, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"has no input: the tracer saw no torch operation on the input.*NumPy"):
        _export(tmp_path, factory, (1, 3, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_a_dynamo_graph_whose_input_feeds_no_output_is_refused(tmp_path: Path) -> None:
    # The dynamo exporter keeps the unused input: the graph has an input, but no output depends on it.
    with pytest.raises(ExportError, match="computes no output from its input"):
        _export(tmp_path, "ignores_input", (1, 3, 32, 32), exporter="dynamo")


def test_a_model_that_changes_its_input_in_place_exports_and_verifies(tmp_path: Path) -> None:
    result, _ = _export(tmp_path, "in_place_on_input", (1, 3, 32, 32))
    assert result.passed, [c.outputs for c in result.checks]  # type: ignore[attr-defined]
    # The reference saw the same feed as ONNX Runtime: the graph reproduces the in-place arithmetic.
    loaded = load_model(f"{FIXTURES}:in_place_on_input")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        changed = torch.relu(torch.from_numpy(x) * 2 - 0.5)
        expected = user_models.TinySegmenter.forward(loaded.module, changed)  # type: ignore[arg-type]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected.numpy(), atol=1e-5)


def test_options_a_factory_does_not_take_are_still_a_config_conflict() -> None:
    from deploykit.errors import ConfigConflict

    with pytest.raises(ConfigConflict, match="rejected options"):
        load_model(f"{FIXTURES}:tiny_segmenter", options={"colour": "blue"})


# --- structured outputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "names"), [
    ("dataclass", ("logits", "features")),  # loss is None: left out
    ("dict", ("out", "aux_0", "aux_1")),
    ("tuple", ("output_0", "output_1")),
])
def test_dict_tuple_and_dataclass_outputs_are_named(kind: str, names: tuple[str, ...], tmp_path: Path) -> None:
    result, _ = _export(tmp_path, "structured_outputs", (1, 3, 32, 32), options={"kind": kind})
    assert result.passed and result.output_names == names  # type: ignore[attr-defined]
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert tuple(o.name for o in model.graph.output) == names
    assert set(result.checks[1].outputs) == set(names)  # type: ignore[attr-defined]


# --- simplification -----------------------------------------------------------------------------------------

def test_the_simplified_graph_is_verified_against_the_same_pytorch_run(tmp_path: Path) -> None:
    """PyTorch runs once per verification shape although two graphs (exported, simplified) are checked."""
    loaded = load_model("deeplabv3plus_mobilenetv2", options={"width_multiplier": 0.35})
    shape = (1, 3, 65, 65)
    seen: list[tuple[int, ...]] = []
    loaded.module.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    result = onnx_from_torch(loaded, tmp_path / "m.onnx", input_shape=shape, simplify=True)
    assert result.passed and result.simplified
    second = verification_shapes(shape, True, loaded.spec.size_multiple)[1]  # run by verification alone
    assert seen.count(second) == 1, seen


# --- real libraries, when installed (never downloading weights) ---------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_transformers_segformer_exports_with_named_logits(tmp_path: Path) -> None:
    result, _ = _export(tmp_path, "tiny_segformer", (1, 3, 64, 64))
    assert result.passed and result.output_names == ("logits",)  # type: ignore[attr-defined]
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.output[0].type.tensor_type.shape.dim
    # Logits at 1/4 of the input: their own symbols, not the input's height/width.
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 4, "logits_height", "logits_width"]


def _smp_reason() -> str | None:
    try:
        import segmentation_models_pytorch  # noqa: F401
    except Exception as exc:  # it needs torchvision, which fails to import beside torch 2.13 here
        return f"segmentation_models_pytorch unusable here: {type(exc).__name__}: {str(exc)[:120]}"
    return None


@pytest.mark.skipif(_smp_reason() is not None, reason=_smp_reason() or "")
def test_smp_deeplabv3plus_exports_with_dynamic_shapes(tmp_path: Path) -> None:
    result, said = _export(tmp_path, "smp_deeplabv3plus", (1, 3, 128, 128))
    assert result.passed and result.size_multiple == 32  # type: ignore[attr-defined]
    assert any("retrying" in s for s in said)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_transformers_mobilevit_baked_shapes_are_an_error_naming_static(tmp_path: Path) -> None:
    # MobileViT's patch unfolding computes sizes with Python ints: the TorchScript trace fixes them, so the
    # dynamic graph cannot run the second shape. That is the user's choice to make (exit 2), not a crash.
    with pytest.raises(ExportError, match=r"fails in ONNX Runtime on input 2x3x72x80 \(Reshape node .*--static"):
        _export(tmp_path, "tiny_mobilevit", (1, 3, 64, 64))
    result, _ = _export(tmp_path, "tiny_mobilevit", (1, 3, 64, 64), dynamic=False)
    assert result.passed and result.output_names == ("logits",)  # type: ignore[attr-defined]


def test_a_number_from_the_input_shape_is_named_with_static(tmp_path: Path) -> None:
    """float(x.shape[2]) is a constant in the trace: right at the export shape, wrong at the second one. The
    message says so and names --static, which exports the one shape where the number is true."""
    result, _ = _export(tmp_path, "shape_number", (1, 3, 32, 32))
    assert not result.passed and result.checks[0].passed  # type: ignore[attr-defined]
    said = result.mismatch()  # type: ignore[attr-defined]
    assert "agrees at the export shape 1x3x32x32 but not at 2x3x40x48" in said and "--static" in said, said
    result, _ = _export(tmp_path, "shape_number", (1, 3, 32, 32), dynamic=False)
    assert result.passed  # type: ignore[attr-defined]


# --- the typed result ---------------------------------------------------------------------------------------

PRECISION_FACTORY = "tests.fixtures.precision_models:precision_net"


def test_a_mismatch_at_an_old_opset_advises_the_default_opset(tmp_path: Path) -> None:
    """Opset 9's Upsample computes bilinear resizing unlike PyTorch: the advice is the default opset, not the
    dynamo exporter (which writes opset 18 and newer)."""
    result, _ = _export(tmp_path, "tiny_segmenter", (1, 3, 32, 32), opset=9)
    assert not result.passed  # type: ignore[attr-defined]
    said = result.mismatch()  # type: ignore[attr-defined]
    assert f"try --opset {DEFAULT_OPSET}" in said and "dynamo" not in said, said


def test_export_result_round_trips_and_the_library_picks_the_opset(tmp_path: Path) -> None:
    loaded = load_model(PRECISION_FACTORY, task="segmentation")
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
