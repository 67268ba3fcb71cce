"""Parity orchestration: run a reference and candidates on the same inputs, compare every output, apply gates,
and localise the divergence of failing ONNX candidates.

Each input is fed to every target in turn (one batch in memory at a time), cast to the dtype the target's
input takes (an FP16 model with float16 I/O gets float16). Outputs pair by name, or by position when the names
differ but the counts agree. Every metric of the table that applies to an output streams over the inputs
(deploykit.metrics.scores.Scores: numeric metrics on every output, task metrics on those shaped like the task's
prediction).
For the report (issue 13, items 2 and 3) the run also keeps, from the first task output: per-class damage of
segmentation candidates (parity.classes.DamageAccumulator, in parity.json) and the pictures of the inputs where the
candidates disagree most (parity.pictured.PictureKeeper; in memory, saved by the deploy pipeline as an .npz), so
the report draws without re-running a model. The argmax is taken once per target and input and shared by both.
With ground-truth masks (settings.labels, io/labels.py) every output of a labelled task, the reference's and each
candidate's, is also scored against them (miou_gt, and miou_drop in points, derived from both).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.errors import ConfigConflict, InputError, ParityError
from deploykit.evaluate import provider_chain
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.labels import LabelSet, match_labels
from deploykit.io.model_files import read_onnx
from deploykit.io.outputs import scratch_folder
from deploykit.metrics.pair import Shared
from deploykit.metrics.scores import Scores, needing_truth
from deploykit.metrics.table import METRICS
from deploykit.metrics.tasks import class_labels, is_class_map, resize_mask, task_of
from deploykit.parity import gates as gating
from deploykit.parity.classes import ClassDamageResult, DamageAccumulator
from deploykit.parity.inputs import InputSet
from deploykit.parity.localize import TOP_K, Localization, localize
from deploykit.parity.pictured import PictureKeeper, Pictures
from deploykit.precision.table import BASELINE, PRECISIONS, detect_precision
from deploykit.runner import Target
from deploykit.types import LABELLED, Progress, Progressed, TaskEntry


@dataclass(frozen=True)
class ParitySettings:
    """How to judge a parity run. Gates replace the precision's defaults (gates.py); tolerances of the
    beyond_tol share follow numpy.isclose; localize_tolerance None means the precision entry's."""

    gates: tuple[gating.Gate, ...] = ()
    precision: str | None = None  # None: each candidate's own (sidecar, metadata, or its graph)
    atol: float = 1e-4
    rtol: float = 1e-3
    localize: bool = False
    reference_onnx: str | None = None
    top_k: int | None = None  # None: localize's default
    localize_tolerance: float | None = None
    providers: tuple[str, ...] = ("cpu",)
    labels: str | None = None  # a folder of ground-truth PNG masks matched to --inputs images by file name


@dataclass
class OutputResult:
    name: str  # the reference's output name
    candidate_name: str
    metrics: dict[str, float]
    checks: list[gating.GateCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def failures(self) -> list[str]:
        return [f"{self.name} {c.describe()}" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "candidate_name": self.candidate_name, "passed": self.passed,
                "metrics": self.metrics,
                "gates": [{"gate": c.gate.describe(), "value": c.value, "passed": c.passed,
                           **({"budget": True} if c.gate.budget else {})} for c in self.checks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputResult:
        checks = [gating.GateCheck(replace(gating.parse_gate(g["gate"]), budget=bool(g.get("budget"))),
                                   float(g["value"]), bool(g["passed"])) for g in data.get("gates", [])]
        return cls(name=str(data["name"]), candidate_name=str(data.get("candidate_name", data["name"])),
                   metrics={k: float(v) for k, v in data.get("metrics", {}).items()}, checks=checks)


@dataclass
class CandidateResult:
    label: str
    backend: str
    precision: str
    outputs: list[OutputResult]
    worst_input: int  # index of the input with the lowest cosine on the first output
    localization: Localization | None = None
    localize_note: str = ""

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "backend": self.backend, "precision": self.precision, "passed": self.passed,
            "worst_input": self.worst_input, "localize_note": self.localize_note,
            "localization": self.localization.to_dict() if self.localization else None,
            "outputs": [o.to_dict() for o in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateResult:
        found = data.get("localization")
        return cls(label=str(data["label"]), backend=str(data["backend"]), precision=str(data["precision"]),
                   outputs=[OutputResult.from_dict(o) for o in data.get("outputs", [])],
                   worst_input=int(data.get("worst_input", 0)),
                   localization=Localization.from_dict(found) if found else None,
                   localize_note=str(data.get("localize_note", "")))

    def worst_cosine(self) -> float:
        """The lowest cosine over this candidate's outputs (1.0 when none was measured)."""
        return min((o.metrics.get("cosine", 1.0) for o in self.outputs), default=1.0)


@dataclass
class ParityResult:
    reference: str
    reference_backend: str
    task: str | None
    inputs: str
    input_count: int
    candidates: list[CandidateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # provenance mismatches that explain a failure
    class_damage: ClassDamageResult | None = None  # segmentation: per-class damage of the first task output
    class_names: tuple[str, ...] | None = None  # from the models' metadata (ModelMetadata.class_names)
    pictures: Pictures | None = None  # in memory only: the pipeline saves them and records `pictures_file`
    pictures_file: str | None = None  # relative to the folder parity.json lies in
    # with --labels: the reference's own values of the metrics against ground truth (miou_gt), per output
    reference_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.candidates)

    def summary(self, names: Mapping[str, str] | None = None) -> str:
        """One line; `names` shortens candidate labels (a deploy's report names its artifacts by file name, as
        its verdict does, not by the path they had when it ran)."""
        failed = [c for c in self.candidates if not c.passed]
        if not failed:
            return f"all {len(self.candidates)} candidate(s) match {self.reference} within their gates"
        details = "; ".join(f"{(names or {}).get(c.label, c.label)}: "
                            f"{', '.join(f for o in c.outputs for f in o.failures())}" for c in failed)
        return f"{len(failed)} of {len(self.candidates)} candidate(s) fail parity with {self.reference}: {details}"

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "reference_backend": self.reference_backend, "task": self.task,
                "inputs": self.inputs, "input_count": self.input_count, "passed": self.passed,
                "summary": self.summary(), "notes": self.notes, "candidates": [c.to_dict() for c in self.candidates],
                "class_damage": self.class_damage.to_dict() if self.class_damage else None,
                "class_names": list(self.class_names) if self.class_names is not None else None,
                "pictures_file": self.pictures_file,
                "reference_scores": self.reference_scores}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityResult:
        return cls(reference=str(data["reference"]), reference_backend=str(data["reference_backend"]),
                   task=data.get("task"), inputs=str(data.get("inputs", "")),
                   input_count=int(data.get("input_count", 0)),
                   candidates=[CandidateResult.from_dict(c) for c in data.get("candidates", [])],
                   notes=list(data.get("notes", [])),
                   class_damage=ClassDamageResult.from_dict(damage) if (damage := data.get("class_damage")) else None,
                   class_names=tuple(names) if (names := data.get("class_names")) is not None else None,
                   pictures_file=data.get("pictures_file"),
                   reference_scores={k: {m: float(v) for m, v in scores.items()}
                                     for k, scores in data.get("reference_scores", {}).items()})

    def load_pictures(self, folder: Path) -> None:
        """Read the pictures saved beside parity.json back (a resumed deploy whose parity step was skipped)."""
        if self.pictures is None and self.pictures_file and (folder / self.pictures_file).is_file():
            self.pictures = Pictures.from_npz(folder / self.pictures_file)


EXACT = tuple(m.name for m in METRICS.values() if m.task is None and m.higher_is_better is None)  # NaN, Inf


def _feed(target: Target, x: np.ndarray) -> dict[str, np.ndarray]:
    return {target.input_name: target.runner.input_specs()[0].feed(x)}


def pair_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], label: str) -> list[
        tuple[str, str]]:
    """(reference name, candidate name) pairs: by name, else by position when the counts agree."""
    if set(reference) == set(candidate):
        return [(name, name) for name in reference]
    if len(reference) == len(candidate):
        return list(zip(reference, candidate, strict=True))
    raise ParityError(f"{label} has outputs {', '.join(candidate)}; the reference has {', '.join(reference)}; "
                      "they cannot be paired: compare models with the same outputs (by name, or as many in the same "
                      "order)")


class _Tally:
    """One candidate's running comparison: a Scores per output (deploykit.metrics.scores)."""

    def __init__(self, target: Target, task: TaskEntry | None, atol: float, rtol: float) -> None:
        self.target, self.task, self.atol, self.rtol = target, task, atol, rtol
        self.pairs: list[tuple[str, str]] | None = None
        self.scores: dict[str, Scores] = {}
        self.class_maps: set[str] = set()  # reference outputs compared as class maps (no numeric metrics)
        self.worst = (math.inf, 0)

    def add(self, index: int, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            truth: np.ndarray | None = None, shared: Shared | None = None) -> None:
        self.pairs = self.pairs or pair_outputs(reference, candidate, self.target.label)
        for ref_name, cand_name in self.pairs:
            r, c = reference[ref_name], candidate[cand_name]
            class_map = is_class_map(r) or is_class_map(c)  # an --head argmax output: a label map
            if not class_map and r.shape != c.shape:
                raise ParityError(f"{self.target.label}: output {cand_name} has shape {list(c.shape)}, the "
                                  f"reference's {ref_name} {list(r.shape)}")
            task = self.task if self.task is not None and self.task.fits(r.shape) else None
            scored = truth is not None and task is not None and task.labelled and not class_map
            if ref_name not in self.scores:
                self.scores[ref_name] = Scores(task, class_map=class_map, truth=scored, atol=self.atol,
                                               rtol=self.rtol)
                if class_map:
                    self.class_maps.add(ref_name)
            pair = self.scores[ref_name].add(r, c, truth if scored else None, shared)
            if ref_name != self.pairs[0][0]:
                continue
            # the worst input: the lowest cosine, or for a label map the lowest agreement
            if class_map:
                counts = pair.class_counts
                if counts.agree / counts.pixels < self.worst[0]:
                    self.worst = (counts.agree / counts.pixels, index)
            elif not math.isnan(self.worst[0]) and not pair.numeric.cosine >= self.worst[0]:
                self.worst = (pair.numeric.cosine, index)

    def result(self, precision: str, overrides: Sequence[gating.Gate],
               reference_scores: Mapping[str, Mapping[str, float]], gates_of: str | None = None) -> CandidateResult:
        """`gates_of`: the precision whose default gates judge the candidate (`precision` when None)."""
        assert self.pairs is not None
        gates = gating.gates_for(gates_of or precision, overrides, self.target.budget)
        gating.check_gate_outputs(overrides, [name for name, _ in self.pairs])
        outputs = []
        for ref_name, cand_name in self.pairs:
            # a label map's exact counts (NaN, Inf) are 0: its values are integers
            metrics = {m: 0.0 for m in EXACT} if ref_name in self.class_maps else {}
            metrics.update(self.scores[ref_name].result(reference_scores.get(ref_name, {})))
            outputs.append(OutputResult(ref_name, cand_name, metrics, gating.evaluate(gates, ref_name, metrics)))
        return CandidateResult(label=self.target.label, backend=self.target.runner.describe(), precision=precision,
                               outputs=outputs, worst_input=self.worst[1])


class _Kept:
    """What the report needs from the first task output (module docstring): class damage and pictures."""

    def __init__(self, task: TaskEntry, reference: Target, candidates: Sequence[Target]) -> None:
        self.task = task
        labels = [c.label for c in candidates]
        self.damage = DamageAccumulator(labels) if task.labelled else None
        self.keeper = PictureKeeper(task, labels,
                                    reference.preprocessing or next((c.preprocessing for c in candidates
                                                                     if c.preprocessing), None))
        self.names = next((n for t in (reference, *candidates) if t.metadata and (n := t.metadata.class_names)), None)
        self.name: str | None = None

    def add(self, index: int, x: np.ndarray, expected: dict[str, np.ndarray], outputs: list[dict[str, np.ndarray]],
            tallies: Sequence[_Tally], truth: np.ndarray | None = None, shared: Shared | None = None) -> None:
        if self.name is None:
            self.name = next((n for n, v in expected.items() if self.task.fits(v.shape)), "")
        if not self.name:
            return  # no task output
        names = [dict(t.pairs or [])[self.name] for t in tallies]
        ref, cands = expected[self.name], [out[n] for out, n in zip(outputs, names, strict=True)]
        if self.task.labelled:
            labels = shared.labels if shared else class_labels
            ref, cands = labels(ref), [labels(c) for c in cands]
            assert self.damage is not None
            # --labels: per-class IoU against the ground truth too (one image per batch, mask at the output size)
            gt = resize_mask(truth, ref.shape[-2:])[None] if truth is not None and ref.shape[0] == 1 else None
            self.damage.add(ref, cands, gt)
        if x.ndim == 4 and x.shape[1] == 3:  # inputs that are not RGB images: nothing to picture
            self.keeper.offer(index, x, ref, cands)

    def result(self) -> tuple[ClassDamageResult | None, Pictures | None, tuple[str, ...] | None]:
        if not self.name:
            return None, None, None
        pictures = self.keeper.result()
        return (self.damage.result() if self.damage is not None else None, pictures if pictures.inputs else None,
                self.names)


def compare(
    reference: Target,
    candidates: Sequence[Target],
    inputs: InputSet,
    settings: ParitySettings,
    progress: Progress | None = None,
) -> tuple[ParityResult, list[np.ndarray]]:
    """Compare each candidate with the reference; also returns each candidate's worst input (for --localize)."""
    say = progress or (lambda _msg: None)
    task = task_of(reference.task or next((c.task for c in candidates if c.task), None))
    tallies = [_Tally(c, task, settings.atol, settings.rtol) for c in candidates]
    worst: list[np.ndarray | None] = [None] * len(candidates)
    kept = _Kept(task, reference, candidates) if task is not None and candidates else None
    position = 0
    labels = _labels(settings.labels, task, inputs)
    reference_truth: dict[str, Scores] = {}  # the reference against the masks, for the derived metrics
    with contextlib.ExitStack() as stack:
        for target in (reference, *candidates):
            stack.enter_context(target.runner)
        for index, x in enumerate(inputs.batches()):
            say(Progressed("parity (inputs)", index + 1, inputs.count))
            expected = reference.runner.infer(_feed(reference, x))
            truth = labels.read(index, _classes(reference, task, expected)) if labels is not None else None
            if truth is not None and task is not None:
                for name, value in expected.items():
                    if task.fits(value.shape) and not is_class_map(value):
                        reference_truth.setdefault(name, Scores(task, numeric=False, truth=True,
                                                                names=needing_truth())).add(value, value, truth)
            outputs = []
            shared = Shared()  # what is derived from the reference once for every candidate
            for i, (target, tally) in enumerate(zip(candidates, tallies, strict=True)):
                outputs.append(target.runner.infer(_feed(target, x)))
                tally.add(index, expected, outputs[-1], truth, shared)
                if tally.worst[1] == index:
                    worst[i] = x
            if kept is not None:
                kept.add(position, x, expected, outputs, tallies, truth, shared)
            position += x.shape[0]
    if not any(t.pairs for t in tallies):
        raise ParityError("no inputs were compared; check --inputs / --random / --limit")
    result = ParityResult(reference=reference.label, reference_backend=reference.runner.describe(),
                          task=task.name if task is not None else None, inputs=inputs.description,
                          input_count=inputs.count,
                          reference_scores={k: v.result() for k, v in reference_truth.items()})
    result.candidates = [t.result(settings.precision or c.precision, settings.gates, result.reference_scores,
                                  gates_of=settings.precision or _judged_as(c.precision, reference.precision))
                         for t, c in zip(tallies, candidates, strict=True)]
    if kept is not None:
        result.class_damage, result.pictures, result.class_names = kept.result()
    failed = {c.label for c in result.candidates if not c.passed}
    result.notes = [note for label, note in provenance_notes(reference, candidates) if label in failed]
    return result, [w if w is not None else np.zeros(inputs.shape, np.float32) for w in worst]


def _classes(reference: Target, task: TaskEntry | None, outputs: Mapping[str, np.ndarray]) -> int | None:
    """How many classes the model scores: its metadata's count, else the channels of its first score map."""
    if reference.num_classes:
        return reference.num_classes
    if task is None or not task.labelled:
        return None
    return next((v.shape[1] for v in outputs.values() if task.fits(v.shape) and not is_class_map(v)), None)


def _labels(folder: str | None, task: TaskEntry | None, inputs: InputSet) -> LabelSet | None:
    """The ground-truth mask of each input, checked before any model runs (None without --labels)."""
    if folder is None:
        return None
    if task is None or not task.labelled:
        raise InputError(f"--labels scores {LABELLED.name} masks; this model's task is "
                         f"{task.name if task else 'unknown'} (give --task {LABELLED.name} for a user model)")
    if not inputs.files or len(inputs.files) != inputs.count:
        raise InputError("--labels matches masks to input images by file name; give --inputs DIR (a folder of "
                          "images) and no --random")
    return match_labels(folder, inputs.files)


def provenance_notes(reference: Target, candidates: Sequence[Target]) -> list[tuple[str, str]]:
    """Differences between how a PyTorch reference was built and how each candidate was exported (its
    metadata), as (candidate label, note): the usual cause of a total mismatch is other weights or options."""
    if reference.loaded is None:
        return []
    loaded = reference.loaded
    notes: list[tuple[str, str]] = []
    for target in candidates:
        meta, label = target.metadata, target.label
        if meta is None:
            continue
        if meta.model != loaded.spec.name:
            notes.append((label, f"{label} was exported from {meta.model}, the reference is {loaded.spec.name}"))
        if {k: str(v) for k, v in meta.options.items()} != {k: str(v) for k, v in loaded.options.items()}:
            notes.append((label, f"{label} was exported with options {dict(meta.options)}, the reference is "
                                 f"built with {loaded.options}: pass the same --set"))
        if meta.weights != loaded.weights:
            notes.append((label, f"{label} holds weights {meta.weights or '(builder initialisation)'}, the "
                                 f"reference {loaded.weights or '(builder initialisation)'}: pass the same --weights"))
        elif not meta.weights:
            notes.append((label, f"neither {label} nor the reference has trained weights: they agree only if "
                                 "both come from the same seeded initialisation (deploykit seeds builders with 0)"))
    return notes


def run_parity(reference: Target, candidates: Sequence[Target], inputs: InputSet, settings: ParitySettings,
               progress: Progress | None = None) -> ParityResult:
    """Compare, judge, and with settings.localize localise each failing ONNX candidate."""
    check_localize_options(settings, inputs.shape)
    result, worst = compare(reference, candidates, inputs, settings, progress)
    if settings.localize and not result.passed:
        localize_failures(result, reference, candidates, worst, settings, progress)
    return result


def check_localize_options(settings: ParitySettings, shape: tuple[int, ...]) -> None:
    """Refused before the comparison, not after it: an option of --localize without it (a user who typed it
    expects it to act), and a --reference-onnx that cannot serve."""
    given = [flag for flag, value in (("--reference-onnx", settings.reference_onnx), ("--top-k", settings.top_k),
                                      ("--localize-tol", settings.localize_tolerance)) if value is not None]
    if given and not settings.localize:
        raise ConfigConflict(f"{', '.join(given)} applies only with --localize; add --localize or drop it")
    if settings.localize and settings.reference_onnx is not None:
        check_reference_onnx(settings.reference_onnx, shape)


def check_reference_onnx(path: str, shape: tuple[int, ...]) -> None:
    """--reference-onnx: a readable ONNX model computing in FP32, as every path to a localisation reference is,
    that takes inputs of `shape` (a graph of another model fails only after the whole comparison)."""
    model = read_onnx(path, external_data=False, hint="pass the FP32 .onnx to --reference-onnx")
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != len(shape) or any(d is not None and d != n for d, n in zip(dims, shape, strict=False)):
        takes = "x".join(str(d or "?") for d in dims)
        raise ParityError(f"--reference-onnx {path} takes input {takes}, the inputs are "
                          f"{'x'.join(map(str, shape))}: pass the FP32 .onnx the candidate was built from")
    found = detect_precision(model)
    if found != BASELINE.name:
        raise ParityError(f"--localize compares with an FP32 reference; --reference-onnx {path} computes in {found}: "
                          "pass the FP32 .onnx the candidate was built from")


def localize_failures(result: ParityResult, reference: Target, candidates: Sequence[Target],
                      worst_inputs: Sequence[np.ndarray], settings: ParitySettings,
                      progress: Progress | None = None) -> None:
    """Attach a Localization to each failing candidate that is an ONNX model (see localize.py), computed on
    the input where that candidate's first output was worst."""
    reference_onnx = settings.reference_onnx
    with scratch_folder("deploykit-localize-") as tmp:
        exported: Path | None = None
        for outcome, target, x in zip(result.candidates, candidates, worst_inputs, strict=True):
            if outcome.passed:
                continue
            if target.onnx_path is None:
                outcome.localize_note = ("--localize needs an ONNX candidate; localise the ONNX model this "
                                         "engine was built from instead")
                continue
            if reference_onnx is None and exported is None:
                exported = _reference_onnx(reference, target, x.shape, Path(tmp) / "reference.onnx", progress)
            ref_path = Path(reference_onnx) if reference_onnx is not None else exported
            assert ref_path is not None
            tol = settings.localize_tolerance
            if tol is None:  # the candidate's precision's, else the loosest
                entry = PRECISIONS.get(outcome.precision)
                tol = entry.localize_tolerance if entry else max(p.localize_tolerance for p in PRECISIONS.values())
            outcome.localization = localize(ref_path, target.onnx_path, x, tolerance=tol, top_k=settings.top_k or TOP_K,
                                            providers=provider_chain(settings.providers),
                                            progress=progress)
            if ref_path == exported:  # a scratch file gone when this returns: name what it was made from
                outcome.localization.reference_onnx = f"{reference.label} (exported to ONNX for --localize)"


def _judged_as(candidate: str, reference: str) -> str:
    """The precision whose gates judge a candidate: its own, but a float32 candidate of a reference that
    computes in a reduced precision (a `.half()` PyTorch model) is judged by the reference's: the reference's
    own rounding is all the two can be expected to agree within."""
    return reference if candidate == BASELINE.name else candidate


def _reference_onnx(reference: Target, candidate: Target, shape: tuple[int, ...], out: Path,
                    progress: Progress | None) -> Path:
    """The FP32 reference as ONNX: the reference itself when it is one, else exported from its PyTorch model,
    with the exporter the candidate was made with so node names agree."""
    if reference.onnx_path is not None:
        if reference.precision != BASELINE.name:
            raise ParityError(f"--localize compares with an FP32 reference; {reference.label} is "
                              f"{reference.precision}; pass --reference-onnx")
        return reference.onnx_path
    if reference.loaded is None:
        raise ParityError("--localize needs an FP32 ONNX reference; pass --reference-onnx")

    exporter = candidate.metadata.exporter if candidate.metadata and candidate.metadata.exporter else None
    if progress:
        progress(f"exporting the reference {reference.label} to ONNX for --localize")
    # Not simplified: every node stays distinct (finer localisation), and onnxslim's shape inference is slow.
    exported = onnx_from_torch(reference.loaded, out, input_shape=shape, exporter=exporter,  # type: ignore[arg-type]
                               simplify=False, force=True, progress=progress)
    if not exported.passed:
        raise ParityError(f"exporting {reference.label} for --localize did not match PyTorch; pass --reference-onnx")
    return out
