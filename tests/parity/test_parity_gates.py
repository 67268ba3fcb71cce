"""Gates: parsing, per-precision defaults, user overrides (general and per output), evaluation."""

from __future__ import annotations

import math
import re

import pytest

from deploykit.errors import InputError
from deploykit.parity.gates import DEFAULT_GATES, Gate, check_gate_outputs, evaluate, gates_for, parse_gate
from deploykit.report.format import fmt


def test_parse_gate_forms() -> None:
    assert parse_gate("pixel_agreement>=0.99") == Gate("pixel_agreement", ">=", 0.99)
    assert parse_gate(" logits : cosine >= 0.9 ") == Gate("cosine", ">=", 0.9, output="logits")
    assert parse_gate("kld<=1e-3") == Gate("kld", "<=", 1e-3)
    assert parse_gate("nan==0").check(0.0) and not parse_gate("nan==0").check(1.0)


@pytest.mark.parametrize("text, fragment", [
    ("cosine=>0.9", "is not [output:]metric OP number"),
    ("cosine>=high", "is not [output:]metric OP number"),
    ("accuracy>=0.9", "unknown metric 'accuracy'"),
])
def test_parse_gate_rejects_bad_text(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=r".*" + fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_gate(text)


def _threshold(precision: str, metric: str) -> float:
    return next(g.threshold for g in gates_for(precision) if g.metric == metric)


@pytest.mark.parametrize("metric", ["cosine", "pixel_agreement", "miou_major", "cc", "sim"])
def test_defaults_loosen_from_fp32_to_int8(metric: str) -> None:
    assert _threshold("fp32", metric) > _threshold("fp16", metric) > _threshold("int8", metric)


def test_kld_defaults_loosen_upwards_and_every_precision_rejects_non_finite() -> None:
    assert _threshold("fp32", "kld") < _threshold("fp16", "kld") < _threshold("int8", "kld")
    for precision in DEFAULT_GATES:
        metrics = {"nan": 1.0, "inf": 0.0, "cosine": 1.0}
        failed = [c.gate.metric for c in evaluate(gates_for(precision), "out", metrics) if not c.passed]
        assert failed == ["nan"]


def test_user_gate_replaces_the_default_on_that_metric() -> None:
    gates = gates_for("fp32", [parse_gate("cosine>=0.5")])
    assert [g.threshold for g in gates if g.metric == "cosine"] == [0.5]
    checks = evaluate(gates, "out", {"cosine": 0.6, "pixel_agreement": 0.99})
    verdicts = {c.gate.metric: c.passed for c in checks}
    assert verdicts == {"cosine": True, "pixel_agreement": False}  # 0.99 < fp32's 0.999; miou absent: no check


def test_output_gate_wins_for_its_output_only() -> None:
    gates = gates_for("fp16", [parse_gate("aux:cosine>=0.5")])
    assert evaluate(gates, "aux", {"cosine": 0.9})[0].passed
    assert not evaluate(gates, "main", {"cosine": 0.9})[0].passed  # the fp16 default 0.999 still holds here


def test_nan_fails_any_gate_and_unknown_precision_or_output_is_an_error() -> None:
    assert not Gate("cosine", ">=", 0.0).check(math.nan)
    with pytest.raises(InputError, match=re.escape("--precision fp32|fp16|int8")):
        gates_for("bf16")
    with pytest.raises(InputError, match="names output 'aux'; the outputs are output"):
        check_gate_outputs([parse_gate("aux:cosine>=0.9")], ["output"])


def test_an_artifacts_budget_is_a_gate_where_it_is_stricter() -> None:
    """An artifact built to an accuracy budget is held to it on the parity inputs (issue 20): the budget's term
    replaces a looser default on the same metric, is marked as the budget, and a user's gate still wins."""
    gates = {g.metric: g for g in gates_for("int8", budget="pixel_agreement>=0.99 and cosine>=0.9")}
    assert gates["pixel_agreement"].threshold == 0.99 and gates["pixel_agreement"].budget
    assert gates["cosine"].threshold == 0.98 and not gates["cosine"].budget  # the default is stricter
    check = evaluate(list(gates.values()), "out", {"pixel_agreement": 0.9872, "cosine": 0.99})
    missed = next(c for c in check if c.gate.metric == "pixel_agreement")
    assert not missed.passed and missed.describe() == "pixel_agreement 0.9872 misses the budget >=0.99"
    user = gates_for("int8", [parse_gate("pixel_agreement>=0.9")], budget="pixel_agreement>=0.99")
    assert [(g.threshold, g.budget) for g in user if g.metric == "pixel_agreement"] == [(0.9, False)]


def test_a_missed_gate_shows_its_value_as_the_tables_and_the_verdict_do() -> None:
    """A deploy's accuracy paragraph said 'pixel_agreement 0.999023 misses the budget >=0.99999' where its table
    and its verdict ('budget missed: pixel_agreement 0.999 < 0.99999') said 0.999: 6 digits against 4."""
    check = evaluate([Gate("pixel_agreement", ">=", 0.99999, budget=True)], "out", {"pixel_agreement": 0.9990234})
    assert check[0].describe() == f"pixel_agreement {fmt(0.9990234)} misses the budget >=0.99999"

