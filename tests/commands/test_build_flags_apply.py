"""build-engine refuses a flag the build would ignore, naming it, before any work: an INT8 flag on an FP32 or
FP16 build, a calibration flag on an FP32 build, a budget-search flag without --accuracy-budget. Before, e.g.
`build-engine m.onnx --calib-method entropy` built FP32 and exited 0, and the user believed it was INT8."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploykit.cli import cli
from deploykit.precision.table import BUDGET_FLAGS, FLAG_NEEDS, PRECISIONS

VALUES = {"--calib-data": "synthetic", "--calib-n": "2", "--calib-cache": "{t}/cache.json", "--no-calib-cache": None,
          "--calib-method": "entropy", "--percentile": "99.9", "--qdq-layout": "inputs", "--int8-float": "fp16",
          "--int8-grouped": "int8", "--int8-rounding": "adaround", "--int8-bias-correction": None,
          "--int8-equalize": "relu", "--holdout": "1", "--labels": "{t}", "--max-float": "1", "--sensitivity": "local"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flags") / "m.onnx"
    result = CliRunner().invoke(cli, ["export", "tests.fixtures.user_models:tiny_segmenter", "--input-shape",
                                      "1,3,32,32", "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(precision=st.sampled_from(["fp32", "fp16", "int8"]),
       flags=st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=4, unique=True))
def test_every_flag_the_build_would_ignore_is_named_before_any_work(model: Path, tmp_path: Path, precision: str,
                                                                    flags: list[str]) -> None:
    entry = PRECISIONS[precision]
    ignored = [f for f in flags if (f in FLAG_NEEDS and FLAG_NEEDS[f] not in entry.options) or f in BUDGET_FLAGS]
    if not ignored:
        return  # every flag applies: whether the build then succeeds is other tests' business
    args = ["build-engine", str(model), f"--{precision}", "-o", str(tmp_path / "x.onnx"), "--force"]
    for flag in flags:
        args += [flag] if VALUES[flag] is None else [flag, str(VALUES[flag]).format(t=tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("deploykit: error: ") and all(flag in last for flag in ignored), last
    assert not any(tmp_path.glob("x*")), list(tmp_path.iterdir())
