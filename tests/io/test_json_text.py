"""deploykit writes and prints strict JSON (deploykit.io.outputs.json_text): `parity --json` on a candidate whose
output held inf printed bare NaN and Infinity, which JSON.parse and jq refuse."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from deploykit.cli import cli
from deploykit.io.outputs import json_text


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


values = st.recursive(st.floats() | st.integers() | st.text(max_size=3) | st.none() | st.booleans(),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                  max_size=3), max_leaves=12)


@given(values)
def test_any_value_is_strict_json_with_finite_numbers_kept_and_the_others_null(data: Any) -> None:
    def expected(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {k: expected(v) for k, v in value.items()}
        if isinstance(value, list):
            return [expected(v) for v in value]
        return value

    assert _strict(json_text(data)) == expected(data)


def _scaled(path: Path, factor: float) -> Path:
    """y = x * factor, 1x3x8x8 float32."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    factor_init = numpy_helper.from_array(np.array(factor, np.float32), "factor")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "factor"], ["y"])], "scaled", [x], [y], [factor_init])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_parity_json_of_a_candidate_that_outputs_inf_is_strict_json(tmp_path: Path) -> None:
    reference, candidate = _scaled(tmp_path / "ref.onnx", 1.0), _scaled(tmp_path / "inf.onnx", math.inf)
    result = CliRunner().invoke(cli, ["parity", str(reference), str(candidate), "--random", "1", "--json"])
    assert result.exit_code == 1, result.output
    assert _strict(result.stdout)["outcome"] == "check-failed"
