"""Accuracy budgets: parsing, the sensitivity-ordered search (fewest nodes, clear failure), on fakes and ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from deploykit.errors import CheckFailed, InputError
from deploykit.metrics.scores import task_metrics
from deploykit.precision.budget import (
    Budget,
    Evaluator,
    MacShare,
    Term,
    confidence_margin,
    halved,
    parse_budget,
    search,
)
from tests.fixtures.precision_models import resize_graph


def test_parse_budget() -> None:
    assert parse_budget("pixel_agreement>=0.995", "segmentation") == Budget((Term("pixel_agreement", ">=", 0.995),))
    assert parse_budget("mIoU >= 0.9", "segmentation").terms[0].metric == "miou"
    assert parse_budget(["kld<=0.05", "cc>=0.9"], "saliency") == Budget((Term("kld", "<=", 0.05),
                                                                          Term("cc", ">=", 0.9)))
    assert parse_budget("cosine>=0.999,pixel_agreement>=0.9", "segmentation").describe() == (
        "cosine>=0.999 and pixel_agreement>=0.9")
    with pytest.raises(InputError, match="saliency metric"):
        parse_budget("cc>=0.99", "segmentation")
    with pytest.raises(InputError, match="lower-is-better"):
        parse_budget("kld>=0.1", "saliency")
    with pytest.raises(InputError, match="METRIC>=VALUE"):
        parse_budget("accuracy 0.9", None)


class FakeEvaluator(Evaluator):
    """Scores a 'model' (the sorted names kept in float, as bytes): the metric rises with each node's weight."""

    def __init__(self, errors: dict[str, float]) -> None:
        self.errors = errors
        self.evaluations = 0

    def score(self, model: bytes, tasks: bool = True) -> dict[str, float]:
        self.evaluations += 1
        kept = set(model.decode().split(",")) - {""}
        remaining = sum(e for n, e in self.errors.items() if n not in kept)
        return {"cosine": 1.0 - remaining / 2, "pixel_agreement": 1.0 - remaining}


def _build(kept: frozenset[str]) -> bytes:
    return ",".join(sorted(kept)).encode()


ERRORS = {f"n{i}": e for i, e in enumerate([0.001, 0.03, 0.002, 0.05, 0.0005, 0.01, 0.004, 0.0001])}


def test_search_keeps_the_fewest_most_sensitive_nodes() -> None:
    evaluator = FakeEvaluator(ERRORS)
    result = search(_build, list(ERRORS), evaluator, parse_budget("pixel_agreement>=0.985", "segmentation"))
    # total error 0.0976: keeping n3 (0.05), n1 (0.03), n5 (0.01) leaves 0.0076 <= 0.015; two nodes leave 0.0176
    assert result.kept == ["n3", "n1", "n5"]
    assert result.reached == {"pixel_agreement": pytest.approx(1 - 0.0076)}
    assert result.unrestricted == {"pixel_agreement": pytest.approx(1 - sum(ERRORS.values()))}
    assert list(result.sensitivity)[:3] == ["n3", "n1", "n5"]
    # the sensitivities, all low, the cap, then bisection over [0, 8]: 3 tries (doubling first took 4)
    assert result.evaluations == evaluator.evaluations == len(ERRORS) + 2 + 3


def test_sensitivities_are_scored_by_the_rank_evaluator_and_the_budget_by_the_main_one() -> None:
    main, ranking = FakeEvaluator(ERRORS), FakeEvaluator(ERRORS)
    result = search(_build, list(ERRORS), main, parse_budget("pixel_agreement>=0.985", "segmentation"),
                    rank_evaluator=ranking)
    assert ranking.evaluations == len(ERRORS) and main.evaluations == len(result.trace) == 2 + 3
    assert result.kept == ["n3", "n1", "n5"]


def test_the_trace_records_every_plan_evaluated_for_the_frontier() -> None:
    macs = MacShare({name: 10 * (i + 1) for i, name in enumerate(ERRORS)}, total=400)  # 360 in candidates
    result = search(_build, list(ERRORS), FakeEvaluator(ERRORS), parse_budget("pixel_agreement>=0.985",
                                                                             "segmentation"), macs=macs)
    assert len(result.trace) == result.evaluations - len(ERRORS)  # every plan, not the sensitivity runs
    assert [t["kept"] for t in result.trace] == [0, 8, 4, 2, 3]  # bisection between none and the cap
    first, cap = result.trace[0], result.trace[1]
    assert first["nodes"] == [] and first["low_macs_share"] == pytest.approx(360 / 400)
    assert cap["kept"] == len(ERRORS) and cap["low_macs_share"] == 0.0
    chosen = next(t for t in result.trace if t["nodes"] == result.kept)
    # n3, n1, n5 (40 + 20 + 60 multiply-adds) back in float
    assert chosen["low_macs_share"] == pytest.approx((360 - 120) / 400)
    assert chosen["scores"] == {"cosine": pytest.approx(1 - 0.0038), "pixel_agreement": pytest.approx(1 - 0.0076)}
    assert chosen["pixel_agreement"] == chosen["scores"]["pixel_agreement"]  # type: ignore[index]


def test_every_term_of_a_budget_must_hold() -> None:
    budget = parse_budget(["pixel_agreement>=0.95", "cosine>=0.999"], "segmentation")
    result = search(_build, list(ERRORS), FakeEvaluator(ERRORS), budget)
    # pixel agreement alone needs n3 (0.0476 left); cosine needs remaining error <= 0.002: n3 n1 n5 n6 n2
    assert result.kept == ["n3", "n1", "n5", "n6", "n2"]


def test_search_returns_at_once_when_all_int8_meets_the_budget() -> None:
    result = search(_build, list(ERRORS), FakeEvaluator(ERRORS), parse_budget("pixel_agreement>=0.5", "segmentation"))
    assert result.kept == [] and result.evaluations == 1


def test_search_fails_clearly_when_no_assignment_reaches_the_budget() -> None:
    with pytest.raises(CheckFailed, match=r"no assignment reaches pixel_agreement>=0\.995.*3 most sensitive"):
        search(_build, list(ERRORS), FakeEvaluator(ERRORS), parse_budget("pixel_agreement>=0.995", "segmentation"),
               max_kept=3)
    with pytest.raises(CheckFailed, match="every candidate node"):  # n3 and the rest stay INT8 whatever is kept
        search(_build, ["n0", "n1"], FakeEvaluator(ERRORS), parse_budget("pixel_agreement>=0.995", "segmentation"))


def test_a_budget_no_score_can_meet_is_refused_before_any_search() -> None:
    for text in ("pixel_agreement>=1.01", "cosine>=inf", "miou>=1.5"):
        with pytest.raises(InputError, match=r"can never hold|not a finite number"):
            parse_budget(text, "segmentation")
    with pytest.raises(InputError, match=r"kld is at least 0 .* can never hold"):  # was accepted: kld is >= 0
        parse_budget("kld<=-0.1", "saliency")
    assert parse_budget("kld<=0", "saliency").terms[0].threshold == 0.0  # identical maps meet it


def test_evaluator_scores_against_fp32_references() -> None:
    model = resize_graph("linear", "half_pixel", "scales")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, 8, 10)).astype(np.float32) for _ in range(2)]
    evaluator = Evaluator(model.SerializeToString(), inputs, "segmentation")
    same = evaluator.score(model.SerializeToString())
    assert same["cosine"] == pytest.approx(1.0) and same["pixel_agreement"] == 1.0
    flipped = onnx.ModelProto.FromString(model.SerializeToString())
    for init in flipped.graph.initializer:
        if init.name == "w2":
            init.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(init), "w2"))
    worse = evaluator.score(flipped.SerializeToString())
    assert worse["cosine"] < 0 and worse["pixel_agreement"] < 0.5 and evaluator.evaluations == 2


def test_search_reports_typed_counts_and_closes_them() -> None:
    from deploykit.types import Progressed

    events: list[object] = []
    search(_build, list(ERRORS), FakeEvaluator(ERRORS), parse_budget("pixel_agreement>=0.985", "segmentation"),
           progress=events.append)
    counts = [e for e in events if isinstance(e, Progressed)]
    sensitivity = [e for e in counts if e.what == "sensitivity (nodes)"]
    assert sensitivity == [Progressed("sensitivity (nodes)", k, len(ERRORS)) for k in range(1, len(ERRORS) + 1)]
    tries = [e for e in counts if e.what.startswith("budget search")]
    assert tries[-1].done == tries[-1].total and all(e.done < e.total for e in tries[:-1])


def test_rank_scores_use_the_first_inputs_and_the_cosine_only() -> None:
    from deploykit.metrics.numeric import numeric_metrics

    model = resize_graph("linear", "half_pixel", "scales")
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, 3, 8, 10)).astype(np.float32) for _ in range(3)]
    evaluator = Evaluator(model.SerializeToString(), inputs, "segmentation", rank_inputs=1)
    noisy = onnx.ModelProto.FromString(model.SerializeToString())
    for init in noisy.graph.initializer:
        if init.name == "w2":
            w = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(w + 0.3 * rng.standard_normal(w.shape).astype(w.dtype), "w2"))
    rank = evaluator.score(noisy.SerializeToString(), tasks=False)
    assert set(rank) == {"cosine"}
    full = Evaluator(noisy.SerializeToString(), inputs[:1], None).references[0]
    expected = min(numeric_metrics(r, c).cosine for r, c in zip(evaluator.references[0], full, strict=True))
    assert rank["cosine"] == pytest.approx(expected, abs=1e-12) and rank["cosine"] < 0.999
    metrics = {"pixel_agreement", "miou", "miou_major"}
    assert set(evaluator.score(noisy.SerializeToString())) == {"cosine", *metrics, *(m + ":bound" for m in metrics)}


def test_a_budget_is_judged_on_its_confidence_bound_over_the_held_out_inputs() -> None:
    """Two candidates with the same pooled pixel agreement: one equal on every input, one that is perfect on
    some inputs and poor on others. Only the first is a promise another set of such inputs can keep."""
    budget = parse_budget("pixel_agreement>=0.99", "segmentation")
    even = [0.995] * 6
    uneven = [1.0, 1.0, 1.0, 0.99, 0.99, 0.99]  # same mean, spread 0.0055: bound 0.9917
    assert confidence_margin(even) == 0.0
    margin = confidence_margin(uneven)
    assert margin == pytest.approx(1.476 * np.std(uneven, ddof=1) / np.sqrt(6))  # Student t(0.9, 5)
    strict = parse_budget("pixel_agreement>=0.993", "segmentation")
    assert strict.met({"pixel_agreement": 0.995, "pixel_agreement:bound": 0.995 - confidence_margin(even)})
    assert not strict.met({"pixel_agreement": 0.995, "pixel_agreement:bound": 0.995 - margin})
    assert budget.met({"pixel_agreement": 0.995, "pixel_agreement:bound": 0.995 - margin})
    assert confidence_margin([0.5]) == 0.0  # one input: no spread to judge by


def test_the_evaluator_scores_the_bound_from_per_input_agreement() -> None:
    model = resize_graph("linear", "half_pixel", "scales")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, 8, 10)).astype(np.float32) for _ in range(4)]
    evaluator = Evaluator(model.SerializeToString(), inputs, "segmentation")
    noisy = onnx.ModelProto.FromString(model.SerializeToString())
    for init in noisy.graph.initializer:
        if init.name == "w2":
            weight = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(weight + 0.3 * rng.standard_normal(weight.shape).astype(
                weight.dtype), "w2"))
    scores = evaluator.score(noisy.SerializeToString())
    per_input = [task_metrics("segmentation", ref[0], out[0])["pixel_agreement"]
                 for ref, out in zip(evaluator.references, evaluator._run(noisy.SerializeToString(), 4), strict=True)]
    assert scores["pixel_agreement"] == pytest.approx(float(np.mean(per_input)))  # same-sized inputs
    assert scores["pixel_agreement:bound"] == pytest.approx(scores["pixel_agreement"] - confidence_margin(per_input))
    assert scores["pixel_agreement:bound"] < scores["pixel_agreement"]


def test_halved_averages_each_2x2_block_and_drops_an_odd_edge() -> None:
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 2, 5, 7)
    small = halved(x)
    assert small.shape == (1, 2, 2, 3) and small.dtype == np.float32
    assert small[0, 1, 1, 2] == pytest.approx(float(np.mean(x[0, 1, 2:4, 4:6])))


def test_a_task_metric_budget_for_a_model_of_unknown_task_says_how_to_name_the_task() -> None:
    """A model of unknown task (an ONNX file without deploykit metadata): a budget in pixel_agreement says how
    to name the task."""
    with pytest.raises(InputError, match="name it with --task segmentation"):
        parse_budget("pixel_agreement>=0.99", None)


def test_budget_figures_read_as_the_tables_show_them_but_never_as_their_threshold() -> None:
    budget = parse_budget("pixel_agreement>=0.99", "segmentation")
    assert budget.show({"pixel_agreement": 0.98641234}) == "pixel_agreement 0.9864"
    assert budget.show({"pixel_agreement": 0.98996, "pixel_agreement:bound": 0.989996}) == \
        "pixel_agreement 0.98996 (bound 0.989996)"
