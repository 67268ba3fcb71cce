"""Export of models that compute in float16, bfloat16 or float64 (`.half()`): exported in float32 and judged
by their own precision; PyTorch runs them as their users do, on inputs of their dtype."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from deploykit.backends.torch import TorchRunner
from deploykit.cli import cli
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.export.results import Tolerance
from deploykit.metrics.numeric import numeric_metrics
from deploykit.zoo.sources import load_model

FIXTURES = "tests.fixtures.user_models"
SHAPE = (1, 3, 32, 32)


def _float_types(path: Path) -> set[int]:
    """The element types of the graph's inputs, outputs and initializers."""
    model = onnx.load(str(path))
    values = (*model.graph.input, *model.graph.output)
    return {v.type.tensor_type.elem_type for v in values} | {t.data_type for t in model.graph.initializer
                                                            if t.data_type != onnx.TensorProto.INT64}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_a_model_in_another_dtype_exports_as_float32_and_verifies(dtype: str, tmp_path: Path) -> None:
    said: list[object] = []
    loaded = load_model(f"{FIXTURES}:reduced_precision", options={"dtype": dtype})
    result = onnx_from_torch(loaded, tmp_path / "m.onnx", input_shape=SHAPE, progress=said.append)
    assert result.passed and result.as_float32 and result.model_dtype == dtype
    assert _float_types(tmp_path / "m.onnx") == {onnx.TensorProto.FLOAT}
    assert any(f"computes in {dtype}: exported in float32" in str(line) for line in said)
    assert next(loaded.module.parameters()).dtype == getattr(torch, dtype)  # the user's model is left as it was


def test_a_model_that_casts_its_own_input_is_exported_as_it_computes(tmp_path: Path) -> None:
    said: list[object] = []
    result = onnx_from_torch(load_model(f"{FIXTURES}:casts_its_input"), tmp_path / "m.onnx", input_shape=SHAPE,
                             progress=said.append)
    assert result.passed and not result.as_float32 and result.model_dtype == "float16"
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)} == {onnx.TensorProto.FLOAT}
    assert any("does not run widened" in str(line) for line in said)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_cli_exports_a_reduced_precision_model_and_its_parity_is_judged_at_its_precision(
        dtype: str, tmp_path: Path) -> None:
    """The float32 export agrees with the model within the model's own rounding: parity judges it by the
    reference's precision's gates (fp32's cosine >= 0.99999 is finer than bfloat16's own rounding)."""
    out = tmp_path / "m.onnx"
    model = [f"{FIXTURES}:reduced_precision", "--set", f"dtype={dtype!r}", "--set", "depth=3"]
    exported = CliRunner().invoke(cli, ["export", *model, "--input-shape", "1,3,32,32", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    parity = CliRunner().invoke(cli, ["parity", *model, str(out), "--random", "4", "--input-shape", "1,3,32,32",
                                      "--json"])
    assert parity.exit_code == 0, parity.output
    gates = [gate["gate"] for gate in json.loads(parity.stdout)["candidates"][0]["outputs"][0]["gates"]]
    assert "cosine>=0.999" in gates and "pixel_agreement>=0.99" in gates, gates  # fp16's, not fp32's


def test_the_torch_runner_feeds_a_model_its_own_dtype_and_gives_float32() -> None:
    module = load_model(f"{FIXTURES}:reduced_precision", options={"dtype": "bfloat16"}).module
    with TorchRunner(module) as runner:
        out = runner.infer({"input": np.zeros(SHAPE, np.float32)})
    assert out["output"].dtype == np.float32


@settings(max_examples=6, deadline=None)
@given(dtype=st.sampled_from(["float16", "bfloat16"]), depth=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_any_reduced_precision_stack_verifies_at_its_own_precision(dtype: str, depth: int, seed: int,
                                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    options = {"dtype": dtype, "depth": depth, "seed": seed}
    result = onnx_from_torch(load_model(f"{FIXTURES}:reduced_precision", options=options),
                             tmp_path_factory.mktemp("stack") / "m.onnx", input_shape=SHAPE, simplify=False)
    assert result.passed, result.to_dict()["checks"]


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), corner=st.integers(2, 6),
       scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_a_zeroed_corner_fails_at_every_precisions_tolerance(dtype: torch.dtype, corner: int, scale: float,
                                                            seed: int) -> None:
    """The looser tolerance of a reduced-precision model still catches a local bug: elements off by their own
    size (a zeroed corner whose largest element is a fifth of the output's largest magnitude)."""
    rng = np.random.default_rng(seed)
    ref = (rng.standard_normal((1, 4, 64, 64)) * scale).astype(np.float32)
    ref[0, 0, 0, 0] = 0.2 * float(np.abs(ref).max())  # the corner holds a sizeable value
    cand = ref.copy()
    cand[:, 0, :corner, :corner] = 0.0
    tol = Tolerance.for_dtype(dtype)
    assert not tol.passes(numeric_metrics(ref, cand, atol=tol.atol, rtol=tol.rtol), float(np.abs(ref).max()))
