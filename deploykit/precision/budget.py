"""Accuracy budgets: keep the fewest nodes in higher precision (INT8 -> float, FP16 -> FP32) that bring every
budgeted metric within bounds.

A budget is one or more METRIC>=VALUE (kld: <=) terms, all of which must hold, measured on held-out inputs
(not used for calibration) against the FP32 model's outputs, with the parity task metrics (pixel_agreement,
miou for segmentation; cc, sim, kld, nss for saliency) or the numeric cosine (worst output, worst input, as
the parity gates take it).

Search (cheap on a laptop CPU: one session per tried assignment, a few held-out inputs):
1. every candidate node in low precision; if that meets the budget, done;
2. sensitivity, one of:
   - "single" (default; one evaluation per candidate): each node alone in low precision, everything else in
     high, scored by 1 - cosine of the outputs on the first `rank_inputs` held-out inputs (passes.RANK_INPUTS;
     the budget itself is always judged on all of them); it sees downstream amplification. In the demo's
     deploy (61 candidates, 4 held-out 513x513 inputs) ranking on 2 inputs kept 13 nodes where 4 kept 12.
     A model with dynamic height and width is ranked on those inputs at half size (`halved`): on the demo's
     model the ranking at 256x256 had Spearman 0.99 with the one at 513x513 and the same 8 first nodes, and
     took a quarter of the time (8 s against 36 s under load; the session builds then dominate);
   - "local" (two runs per held-out input, for very large models): in the all-low model, the relative noise
     power each node's output has beyond its noisiest input's (ONNX Runtime's qdq_loss_debug compares
     activations alike). Coarser: a node whose input error shrinks through it scores 0. Measured on the
     trained small MSI-Net with budget cosine>=0.99: single kept 6 of 23 convs in float, local 22;
3. the nodes kept in higher precision are always a prefix of the most sensitive ones; the cap (all
   candidates, or max_kept) is tried first, and if even that misses the budget the search fails with
   CalibrationError;
4. bisection between none and the cap for the shortest prefix that meets the budget (assuming keeping more
   nodes in higher precision does not hurt, true but for noise-level differences): log2(cap) tries. Doubling
   k = 1, 2, 4, ... first took twice as many where many nodes are kept (the demo's 21 of 61: 10 tries against
   6), and every try runs every held-out input at full size, the search's main cost.

What "meets" means (issue 20: a budget is a promise on the user's data, not on the held-out share): a task
metric pooled over the held-out inputs is, for same-sized inputs, the mean of its per-input values, and another
set of inputs of the same kind scatters around it by their spread over sqrt(count). The search takes a plan
only when the one-sided CONFIDENCE lower bound of each budgeted task metric (upper for kld) meets the budget:
pooled value -/+ t(CONFIDENCE, n - 1) * sd(per-input values) / sqrt(n), Student's t over the n held-out inputs
("{metric}:bound" in the scores). Few or very unequal held-out inputs widen the bound, so the search keeps
more in higher precision rather than promising what it did not see; cosine is already the worst input's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from deploykit.backends.onnxruntime.runner import tensor_specs
from deploykit.calib.collect import probe_model
from deploykit.errors import CalibrationError, CheckFailed, InputError
from deploykit.evaluate import session_from_onnx
from deploykit.metrics.pair import Shared
from deploykit.metrics.scores import Scores, needing_truth, task_metrics
from deploykit.metrics.table import METRICS, Unreachable, against, parse_condition
from deploykit.metrics.tasks import task_of
from deploykit.types import Progress, Progressed

CONFIDENCE = 0.9
# Student's t quantile at CONFIDENCE, one-sided, by degrees of freedom (held-out inputs - 1); 1.2816 beyond 30.
T_QUANTILE = {1: 3.078, 2: 1.886, 3: 1.638, 4: 1.533, 5: 1.476, 6: 1.440, 7: 1.415, 8: 1.397, 9: 1.383,
              10: 1.372, 11: 1.363, 12: 1.356, 13: 1.350, 14: 1.345, 15: 1.341, 16: 1.337, 17: 1.333, 18: 1.330,
              19: 1.328, 20: 1.325, 25: 1.316, 30: 1.310}
BOUND = ":bound"  # scores key suffix: the metric's confidence bound over the held-out inputs


def confidence_margin(per_input: Sequence[float]) -> float:
    """t * sd / sqrt(n) over per-input values (module docstring); 0 for fewer than two inputs."""
    n = len(per_input)
    if n < 2:
        return 0.0
    t = T_QUANTILE[max(k for k in T_QUANTILE if k <= n - 1)] if n - 1 <= 30 else 1.2816  # the next smaller df
    return float(t * np.std(np.asarray(per_input, dtype=np.float64), ddof=1) / np.sqrt(n))


@dataclass(frozen=True)
class Term:
    metric: str
    op: str  # ">=" or "<="
    threshold: float

    def met(self, value: float) -> bool:
        if np.isnan(value):
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def value(self, scores: Mapping[str, float]) -> float:
        """What the term is judged on: the metric's confidence bound where measured, else the metric."""
        return float(scores.get(self.metric + BOUND, scores[self.metric]))

    def describe(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class Budget:
    terms: tuple[Term, ...]

    def met(self, scores: Mapping[str, float]) -> bool:
        return all(term.met(term.value(scores)) for term in self.terms)

    def describe(self) -> str:
        return " and ".join(term.describe() for term in self.terms)

    def values(self, scores: Mapping[str, float]) -> dict[str, float]:
        """The budgeted metrics and, where measured, their confidence bounds (module docstring)."""
        return {key: float(scores[key]) for term in self.terms for key in (term.metric, term.metric + BOUND)
                if key in scores}

    def show(self, scores: Mapping[str, float]) -> str:
        """The budgeted metrics as tables show them, with the digits that tell them from the threshold."""
        return ", ".join(f"{term.metric} {against(scores[term.metric], term.threshold)}"
                         + (f" (bound {against(scores[term.metric + BOUND], term.threshold)})"
                            if term.metric + BOUND in scores else "")
                         for term in self.terms)

    @property
    def needs_labels(self) -> bool:
        """Whether a term is measured against ground truth (miou_gt, miou_drop: --labels)."""
        return any(METRICS[term.metric].needs_labels for term in self.terms)


def parse_term(text: str, task: str | None) -> Term:
    budgeted = [m.name for m in METRICS.values() if m.budget]
    try:
        found = parse_condition(text, ops=(">=", "<="), outputs=False)
    except ValueError as exc:
        if "unknown metric" in str(exc):
            raise InputError(f"accuracy budget {text!r}: unknown metric; choose one of {', '.join(budgeted)}") \
                from None
        if isinstance(exc, Unreachable):
            raise InputError(f"accuracy budget {text!r}: {exc}") from None
        raise InputError(f"accuracy budget {text!r} is not METRIC>=VALUE (or <= for kld); write e.g. "
                         "'pixel_agreement>=0.995', 'miou>=0.95', 'cc>=0.99' or 'cosine>=0.999'") from None
    metric, needs, higher = found.metric.name, found.metric.task, found.metric.higher_is_better
    if not found.metric.budget:
        raise InputError(f"accuracy budget {text!r}: unknown metric; choose one of {', '.join(budgeted)}")
    if needs is not None and needs != task:
        fix = ("use cosine>=VALUE or a metric of its task" if task else
               f"name it with --task {needs} (deploy, export), or use cosine>=VALUE")
        raise InputError(f"accuracy budget {text!r}: {metric} is a {needs} metric, but the model is "
                         f"{'a ' + task + ' model' if task else 'of unknown task (no deploykit metadata)'}; {fix}")
    op = found.op
    if (op == ">=") != higher:
        raise InputError(f"accuracy budget {text!r}: {metric} is {'higher' if higher else 'lower'}-is-better; "
                         f"write {metric}{'>=' if higher else '<='}{found.threshold:g}")
    return Term(metric, op, found.threshold)


def parse_budget(texts: str | Sequence[str], task: str | None) -> Budget:
    """One budget from one or more terms (a comma also separates terms): all must hold."""
    items = [texts] if isinstance(texts, str) else list(texts)
    parts = [part for text in items for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError("an empty accuracy budget; write e.g. 'pixel_agreement>=0.995'")
    return Budget(tuple(parse_term(part, task) for part in parts))


class Evaluator:
    """Held-out inputs with the FP32 model's outputs; scores candidate models against them.

    Only the cosine is computed for sensitivities (`score(model, tasks=False)`), in one float64-accumulated
    pass per output with the reference norms computed once: parity's full numeric_metrics (percentiles,
    relative errors) took 148 of the 154 s the demo's budget search spent scoring (cProfile, 71 scores of 4
    held-out 513x513 inputs, 21 classes). `rank_inputs` (the first n held-out inputs) is what sensitivities
    are measured on: ranking needs less evidence than the budget, which is always judged on every input.
    """

    def __init__(self, reference: bytes, inputs: Sequence[np.ndarray], task: str | None,
                 threads: int | None = None, rank_inputs: int | None = None,
                 truth: Sequence[np.ndarray] | None = None, disabled_optimizers: Sequence[str] = ()) -> None:
        if not inputs:
            raise CalibrationError("an accuracy budget needs at least one held-out input")
        if truth is not None and len(truth) != len(inputs):
            raise CalibrationError(f"{len(truth)} ground-truth masks for {len(inputs)} held-out inputs")
        self.inputs = list(inputs)
        self.task = task
        self.threads = threads
        self.disabled_optimizers = tuple(disabled_optimizers)
        self.truth = list(truth) if truth is not None else None
        self.evaluations = 0
        self.rank_inputs = max(1, min(rank_inputs or len(self.inputs), len(self.inputs)))
        self.references = self._run(reference, len(self.inputs))
        self._norms = [[_norm(r) for r in ref] for ref in self.references]
        # Each input's reference labels, taken once: every try forks them (an argmax of 21 x 513 x 513 scores
        # is about 20 ms, and the pooled and per-input metrics of each try needed four per input).
        self._shared = [Shared() for _ in self.references]
        entry = task_of(task)
        if entry is not None and entry.labelled:
            for shared, ref in zip(self._shared, self.references, strict=True):
                shared.labels(ref[0])
        # The reference scored against the ground truth itself, for the metrics derived from both (miou_drop).
        self.reference_scores = self._task_scores(self.references, names=needing_truth()) if truth else {}

    def _task_scores(self, outputs: Sequence[Sequence[np.ndarray]], names: Sequence[str] | None = None,
                     shared: Sequence[Shared] | None = None) -> dict[str, float]:
        """The task metrics of output 0 over the held-out inputs (deploykit.metrics.scores)."""
        scores = Scores(task_of(self.task), numeric=False, truth=self.truth is not None, names=names)
        for index, (ref, out) in enumerate(zip(self.references, outputs, strict=False)):
            scores.add(ref[0], out[0], self.truth[index] if self.truth is not None else None,
                       shared=shared[index] if shared is not None else None)
        return scores.result(self.reference_scores if names is None else None)

    def _run(self, model: bytes, count: int) -> list[list[np.ndarray]]:
        session = session_from_onnx(model, threads=self.threads, disabled_optimizers=self.disabled_optimizers)
        spec = tensor_specs(session.get_inputs())[0]  # float16 with --fp16-io, uint8 for a model taking pixels
        return [list(session.run(None, {spec.name: spec.feed(x)})) for x in self.inputs[:count]]

    def score(self, model: bytes, tasks: bool = True) -> dict[str, float]:
        """cosine (worst output, worst input) and, for a known task and `tasks`, the task metrics of output 0;
        without `tasks`, the cosine over the first `rank_inputs` inputs only."""
        self.evaluations += 1
        outputs = self._run(model, len(self.inputs) if tasks else self.rank_inputs)
        cosines = [_cosine(r, norm, c) for ref, norms, out in zip(self.references, self._norms, outputs, strict=False)
                   for r, norm, c in zip(ref, norms, out, strict=True)]
        scores = {"cosine": float(min(cosines))}
        if self.task is not None and tasks:
            shared = [kept.fork() for kept in self._shared]
            scores.update(self._task_scores(outputs, shared=shared))
            scores.update(self._bounds(scores, outputs, shared))
        return scores

    def _bounds(self, pooled: Mapping[str, float], outputs: Sequence[Sequence[np.ndarray]],
                shared: Sequence[Shared]) -> dict[str, float]:
        """The confidence bound of each budgeted task metric over the inputs (module docstring)."""
        if len(outputs) < 2:
            return {}
        assert self.task is not None
        per_input = [task_metrics(self.task, ref[0], out[0], shared=kept)
                     for ref, out, kept in zip(self.references, outputs, shared, strict=False)]
        bounds = {}
        for metric in per_input[0]:
            entry = METRICS.get(metric)
            if entry is None or not entry.budget or entry.higher_is_better is None or metric not in pooled:
                continue
            margin = confidence_margin([values[metric] for values in per_input])
            bounds[metric + BOUND] = pooled[metric] - margin if entry.higher_is_better else pooled[metric] + margin
        return bounds


def _norm(x: np.ndarray) -> float:
    flat = np.asarray(x, dtype=np.float32).ravel()
    return float(np.sqrt(np.dot(flat.astype(np.float64), flat.astype(np.float64))))


def _cosine(reference: np.ndarray, reference_norm: float, candidate: np.ndarray) -> float:
    """numeric_metrics' cosine (1 for two zero outputs, 0 for one, NaN for a non-finite candidate)."""
    if reference.shape != candidate.shape:
        raise CalibrationError(f"a candidate output has shape {list(candidate.shape)}, the reference's "
                               f"{list(reference.shape)}")
    r = np.asarray(reference, dtype=np.float64).ravel()
    c = np.asarray(candidate, dtype=np.float64).ravel()
    dot, norm = float(np.dot(r, c)), float(np.sqrt(np.dot(c, c)))
    if not np.isfinite(norm):
        return float("nan")
    if reference_norm == 0.0 or norm == 0.0:
        return 1.0 if reference_norm == norm else 0.0
    return dot / (reference_norm * norm)


@dataclass
class BudgetResult:
    budget: str
    reached: dict[str, float]  # the budgeted metrics of the chosen assignment
    kept: list[str]  # nodes kept in higher precision, most sensitive first
    candidates: int
    evaluations: int
    unrestricted: dict[str, float]  # the budgeted metrics with every candidate in low precision
    # Every plan the search evaluated, in order (the report's speed/accuracy frontier): "kept" (count),
    # "nodes" (kept in higher precision), the budgeted metrics at top level, "scores" (every metric measured),
    # and with multiply-add counts "low_macs_share" (share of the graph's multiply-adds in low precision).
    trace: list[dict[str, object]] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)  # node -> its sensitivity score

    def to_dict(self) -> dict[str, object]:
        return {"budget": self.budget, "reached": self.reached, "kept": self.kept, "candidates": self.candidates,
                "evaluations": self.evaluations, "unrestricted": self.unrestricted, "trace": self.trace,
                "sensitivity": self.sensitivity}


@dataclass(frozen=True)
class MacShare:
    """Multiply-adds per node and of the whole graph (graph.macs.count_onnx_macs), for the trace's shares."""

    by_node: Mapping[str, int]
    total: int


Build = Callable[[frozenset[str]], bytes]  # nodes kept in higher precision -> candidate model (serialized)


def halved(x: np.ndarray) -> np.ndarray:
    """An N,C,H,W input at half its height and width (2x2 means; an odd last row or column is dropped)."""
    n, c, h, w = x.shape
    pooled = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return np.ascontiguousarray(pooled, dtype=x.dtype)


def sensitivities(build: Build, candidates: Sequence[str], evaluator: Evaluator,
                  progress: Progress | None = None) -> dict[str, float]:
    """node -> 1 - cosine of the outputs with only that node in low precision ("single")."""
    everything = frozenset(candidates)
    result: dict[str, float] = {}
    for count, node in enumerate(candidates, start=1):
        result[node] = 1.0 - evaluator.score(build(everything - {node}), tasks=False)["cosine"]
        if progress:
            progress(Progressed("sensitivity (nodes)", count, len(candidates)))
    return result


def local_sensitivities(reference: onnx.ModelProto, lowered: onnx.ModelProto,
                        nodes: Sequence[tuple[str, Sequence[str], str]], inputs: Sequence[np.ndarray],
                        threads: int | None = None) -> dict[str, float]:
    """node -> relative noise power of its output minus that of its noisiest input, in `lowered` against
    `reference` (nodes as (name, input tensors, output tensor), tensors named alike in both models)."""
    tensors = list(dict.fromkeys(t for _, xs, y in nodes for t in (*xs, y)))
    sessions = [session_from_onnx(probe_model(m, tensors).SerializeToString(), threads=threads,
                                  optimization="basic") for m in (reference, lowered)]
    name = sessions[0].get_inputs()[0].name
    noise = dict.fromkeys(tensors, 0.0)
    power = dict.fromkeys(tensors, 0.0)
    for x in inputs:
        ref, got = (dict(zip(tensors, s.run(tensors, {name: x}), strict=True)) for s in sessions)
        for tensor in tensors:
            r = np.asarray(ref[tensor], dtype=np.float64)
            noise[tensor] += float(np.sum((np.asarray(got[tensor], dtype=np.float64) - r) ** 2))
            power[tensor] += float(np.sum(r**2))
    ratio = {t: noise[t] / power[t] if power[t] > 0 else 0.0 for t in tensors}
    return {node: max(0.0, ratio[y] - max((ratio[x] for x in xs), default=0.0)) for node, xs, y in nodes}


def search(build: Build, candidates: Sequence[str], evaluator: Evaluator, budget: Budget, *,
           max_kept: int | None = None, sensitivity: Mapping[str, float] | None = None,
           rank_build: Build | None = None, rank_evaluator: Evaluator | None = None, low: str = "INT8",
           macs: MacShare | None = None, progress: Progress | None = None) -> BudgetResult:
    """The shortest prefix of the sensitivity order that meets `budget` (see the module docstring).
    `rank_build` (default `build`) makes the models the "single" sensitivity scores and `rank_evaluator`
    (default `evaluator`) scores them: a cheaper stand-in for the deployed model and smaller inputs are
    enough to rank nodes. `macs` (node -> multiply-adds, and the graph's total) lets each plan of the trace
    record the share of multiply-adds it runs in low precision."""
    say = progress or (lambda _m: None)
    trace: list[dict[str, object]] = []
    # tries at most: all low, the cap, then bisection over at most log2(cap) steps
    most = 2 + max(1, len(candidates) - 1).bit_length()

    def measure(kept: Sequence[str]) -> dict[str, float]:
        scores = evaluator.score(build(frozenset(kept)))
        entry: dict[str, object] = {"kept": len(kept), **budget.values(scores), "nodes": list(kept),
                                    "scores": dict(scores)}
        if macs is not None and macs.total > 0:
            low_set = set(candidates) - set(kept)
            entry["low_macs_share"] = sum(macs.by_node.get(n, 0) for n in low_set) / macs.total
        trace.append(entry)
        say(f"budget search: {len(kept)} node(s) kept -> {budget.show(scores)}")
        say(Progressed("budget search (tries, at most)", min(len(trace), most - 1), most))
        return scores

    def finish(result: BudgetResult) -> BudgetResult:
        say(Progressed("budget search (tries, at most)", most, most))
        return result

    unrestricted = measure(())
    if budget.met(unrestricted) or not candidates:
        if not budget.met(unrestricted):
            raise CheckFailed(f"{budget.describe()} is not reached ({budget.show(unrestricted)}) and the "
                                   "model has no candidate node to keep in higher precision")
        return finish(BudgetResult(budget.describe(), budget.values(unrestricted), [], len(candidates),
                                   evaluator.evaluations, budget.values(unrestricted), trace))
    if sensitivity is None:
        say(f"measuring the sensitivity of {len(candidates)} nodes, one at a time")
        sensitivity = sensitivities(rank_build or build, candidates, rank_evaluator or evaluator, say)
    order = sorted(candidates, key=lambda n: -sensitivity[n])
    cap = len(order) if max_kept is None else max(0, min(max_kept, len(order)))
    at_cap = measure(order[:cap])
    if not budget.met(at_cap):
        scope = "every candidate node" if cap == len(order) else f"the {cap} most sensitive of {len(order)} nodes"
        raise CheckFailed(
            f"no assignment reaches {budget.describe()}: all {low} gives {budget.show(unrestricted)}, and even "
            f"keeping {scope} in higher precision gives {budget.show(at_cap)}; relax the budget, use more "
            "held-out images, or choose a higher precision"
        )
    failing, passing, values = 0, cap, {cap: at_cap}
    while passing - failing > 1:
        middle = (failing + passing) // 2
        values[middle] = measure(order[:middle])
        if budget.met(values[middle]):
            passing = middle
        else:
            failing = middle
    return finish(BudgetResult(budget.describe(), budget.values(values[passing]), order[:passing], len(order),
                               evaluator.evaluations, budget.values(unrestricted), trace,
                               {n: sensitivity[n] for n in order}))
