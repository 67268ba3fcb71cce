"""Accuracy-budgeted INT8: keep the fewest weighted nodes in float that bring a metric within budget.

The budget is measured on held-out inputs (not used for calibration) against the FP32 model's outputs, with
the parity task metrics (pixel_agreement, miou for segmentation; cc, sim, kld, nss for saliency) or the
numeric cosine of the first output.

Search (cheap on a laptop CPU: one session per tried assignment, a few held-out inputs):
1. all nodes INT8; if that meets the budget, done;
2. sensitivity, one of:
   - "local" (default; two model runs per held-out input): in the all-INT8 model, the relative noise power
     each weighted node's output has beyond its input's (the error the node itself adds, as ONNX Runtime's
     qdq_loss_debug compares activations), by both models' intermediate outputs, streamed;
   - "single" (one run per node): each node quantized alone, everything else float, scored by 1 - cosine of
     the outputs; it sees downstream amplification, at a cost that grows with the model;
3. the nodes kept in float are always a prefix of the most sensitive ones; the cap (all candidates, or
   max_kept) is tried first, and if even that misses the budget the search fails with CalibrationError;
4. doubling k = 1, 2, 4, ... to the first prefix that meets the budget, then bisection for the shortest
   (assuming keeping more nodes in float does not hurt, which holds for all but noise-level differences).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from deploykit.backends.onnxruntime import session_from_onnx
from deploykit.errors import CalibrationError, InputError

# metric -> (task it needs or None for any, True when higher is better)
METRICS: dict[str, tuple[str | None, bool]] = {
    "cosine": (None, True),
    "pixel_agreement": ("segmentation", True),
    "miou": ("segmentation", True),
    "cc": ("saliency", True),
    "sim": ("saliency", True),
    "nss": ("saliency", True),
    "kld": ("saliency", False),
}
ALIASES = {"mIoU": "miou", "CC": "cc", "KLD": "kld", "SIM": "sim", "NSS": "nss", "agreement": "pixel_agreement"}
_BUDGET = re.compile(r"^\s*(?P<metric>[A-Za-z_]+)\s*(?P<op>>=|<=)\s*(?P<value>[-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Budget:
    metric: str
    op: str  # ">=" or "<="
    threshold: float

    def met(self, value: float) -> bool:
        if np.isnan(value):
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def describe(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_budget(text: str, task: str | None) -> Budget:
    match = _BUDGET.match(text)
    if match is None:
        raise InputError(f"accuracy budget {text!r} is not METRIC>=VALUE (or <= for kld); write e.g. "
                         "'pixel_agreement>=0.995', 'miou>=0.95', 'cc>=0.99' or 'cosine>=0.999'")
    metric = ALIASES.get(match["metric"], match["metric"].lower())
    if metric not in METRICS:
        raise InputError(f"accuracy budget {text!r}: unknown metric; choose one of {', '.join(METRICS)}")
    needs, higher = METRICS[metric]
    if needs is not None and needs != task:
        raise InputError(f"accuracy budget {text!r}: {metric} is a {needs} metric, but the model is "
                         f"{'a ' + task + ' model' if task else 'of unknown task (no deploykit metadata)'}; "
                         "use cosine>=VALUE or a metric of its task")
    op = match["op"]
    if (op == ">=") != higher:
        raise InputError(f"accuracy budget {text!r}: {metric} is {'higher' if higher else 'lower'}-is-better; "
                         f"write {metric}{'>=' if higher else '<='}{match['value']}")
    return Budget(metric, op, float(match["value"]))


class Evaluator:
    """Held-out inputs with the FP32 model's outputs; scores candidate models against them."""

    def __init__(self, reference: bytes, inputs: Sequence[np.ndarray], task: str | None,
                 threads: int | None = None) -> None:
        if not inputs:
            raise CalibrationError("an accuracy budget needs at least one held-out input")
        self.inputs = list(inputs)
        self.task = task
        self.threads = threads
        self.evaluations = 0
        self.references = self._run(reference)

    def _run(self, model: bytes) -> list[list[np.ndarray]]:
        session = session_from_onnx(model, threads=self.threads)
        name = session.get_inputs()[0].name
        return [list(session.run(None, {name: x})) for x in self.inputs]

    def score(self, model: bytes) -> dict[str, float]:
        """cosine (worst output, mean over inputs) and, for a known task, the task metrics of output 0."""
        from deploykit.parity.metrics import numeric_metrics, task_metrics

        self.evaluations += 1
        outputs = self._run(model)
        cosines = [min(numeric_metrics(r, c).cosine for r, c in zip(ref, out, strict=True))
                   for ref, out in zip(self.references, outputs, strict=True)]
        scores = {"cosine": float(np.mean(cosines))}
        if self.task is not None:
            reference = np.concatenate([ref[0] for ref in self.references])
            candidate = np.concatenate([out[0] for out in outputs])
            scores.update(task_metrics(self.task, reference, candidate))
        return scores


@dataclass
class BudgetResult:
    budget: str
    metric: str
    reached: float  # the metric of the chosen assignment
    kept: list[str]  # weighted nodes kept in float, most sensitive first
    candidates: int
    evaluations: int
    all_int8: float  # the metric with every candidate quantized
    trace: list[dict[str, object]] = field(default_factory=list)  # (kept count, metric) of each try
    sensitivity: dict[str, float] = field(default_factory=dict)  # node -> 1 - cosine when quantized alone

    def to_dict(self) -> dict[str, object]:
        return {"budget": self.budget, "metric": self.metric, "reached": self.reached, "kept_float": self.kept,
                "candidates": self.candidates, "evaluations": self.evaluations, "all_int8": self.all_int8,
                "trace": self.trace, "sensitivity": self.sensitivity}


Build = Callable[[frozenset[str]], bytes]  # nodes kept in float -> candidate model (serialized)


def sensitivities(build: Build, candidates: Sequence[str], evaluator: Evaluator,
                  progress: Callable[[str], None] | None = None) -> dict[str, float]:
    everything = frozenset(candidates)
    result: dict[str, float] = {}
    for count, node in enumerate(candidates, start=1):
        result[node] = 1.0 - evaluator.score(build(everything - {node}))["cosine"]
        if progress and count % 10 == 0:
            progress(f"sensitivity: {count}/{len(candidates)} nodes")
    return result


def local_sensitivities(reference: onnx.ModelProto, quantized: onnx.ModelProto,
                        nodes: Sequence[tuple[str, str, str]], inputs: Sequence[np.ndarray],
                        threads: int | None = None) -> dict[str, float]:
    """node -> relative noise power of its output minus that of its activation input, in `quantized` against
    `reference` (nodes given as (name, input tensor, output tensor), tensors named as in both models)."""
    from deploykit.calib.collect import probe_model

    tensors = list(dict.fromkeys(t for _, x, y in nodes for t in (x, y)))
    sessions = [session_from_onnx(probe_model(m, tensors).SerializeToString(), threads=threads,
                                  optimization="basic") for m in (reference, quantized)]
    name = sessions[0].get_inputs()[0].name
    noise = dict.fromkeys(tensors, 0.0)
    power = dict.fromkeys(tensors, 0.0)
    for x in inputs:
        ref, got = (dict(zip(tensors, s.run(tensors, {name: x}), strict=True)) for s in sessions)
        for tensor in tensors:
            r = ref[tensor].astype(np.float64)
            noise[tensor] += float(np.sum((got[tensor] - r) ** 2))
            power[tensor] += float(np.sum(r**2))
    ratio = {t: noise[t] / power[t] if power[t] > 0 else 0.0 for t in tensors}
    return {node: max(0.0, ratio[y] - ratio[x]) for node, x, y in nodes}


def search(build: Build, candidates: Sequence[str], evaluator: Evaluator, budget: Budget, *,
           max_kept: int | None = None, sensitivity: Mapping[str, float] | None = None,
           progress: Callable[[str], None] | None = None) -> BudgetResult:
    """The shortest prefix of the sensitivity order that meets `budget` (see the module docstring)."""
    say = progress or (lambda _m: None)
    trace: list[dict[str, object]] = []

    def measure(kept: Sequence[str]) -> float:
        value = evaluator.score(build(frozenset(kept)))[budget.metric]
        trace.append({"kept": len(kept), budget.metric: value})
        say(f"budget search: {len(kept)} node(s) in float -> {budget.metric} {value:.6g}")
        return value

    all_int8 = measure(())
    if budget.met(all_int8) or not candidates:
        if not budget.met(all_int8):
            raise CalibrationError(f"{budget.describe()} is not reached ({budget.metric} {all_int8:.6g}) and the "
                                   "model has no weighted node to keep in float")
        return BudgetResult(budget.describe(), budget.metric, all_int8, [], len(candidates),
                            evaluator.evaluations, all_int8, trace)
    if sensitivity is None:
        say(f"measuring the sensitivity of {len(candidates)} weighted nodes, one at a time")
        sensitivity = sensitivities(build, candidates, evaluator, say)
    order = sorted(candidates, key=lambda n: -sensitivity[n])
    cap = len(order) if max_kept is None else max(0, min(max_kept, len(order)))
    at_cap = measure(order[:cap])
    if not budget.met(at_cap):
        scope = "every weighted node" if cap == len(order) else f"the {cap} most sensitive of {len(order)} nodes"
        raise CalibrationError(
            f"no assignment reaches {budget.describe()}: all INT8 gives {budget.metric} {all_int8:.6g}, and even "
            f"keeping {scope} in float gives {at_cap:.6g}; relax the budget, use more held-out images, "
            "or build --fp16"
        )
    failing, passing, values = 0, cap, {cap: at_cap}
    k = 1
    while k < cap:  # doubling: the first power of two that meets the budget bounds the answer
        values[k] = measure(order[:k])
        if budget.met(values[k]):
            passing = k
            break
        failing, k = k, k * 2
    while passing - failing > 1:
        middle = (failing + passing) // 2
        values[middle] = measure(order[:middle])
        if budget.met(values[middle]):
            passing = middle
        else:
            failing = middle
    return BudgetResult(budget.describe(), budget.metric, values[passing], order[:passing], len(order),
                        evaluator.evaluations, all_int8, trace, {n: sensitivity[n] for n in order})
