"""The deploy flow's typed results: each step's result and the whole run, with to_dict / from_dict.

The step results are the library's own (ExportResult, BuildResult, ParityResult, BenchReport) plus
LayersResult here; a resumed step rebuilds its result from the JSON it wrote. summary.json is
DeployResult.to_dict(), and the report (deploykit.pipeline.report) renders a DeployResult.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploykit.bench.run import BenchReport
from deploykit.build import BuildResult
from deploykit.export.results import ExportResult
from deploykit.parity.compare import ParityResult
from deploykit.pipeline.verdict import Verdict, decide


@dataclass(frozen=True)
class LayerError:
    node: str
    op_type: str
    module: str  # PyTorch module path ("" when unknown)
    error: float
    growth: float
    cosine: float


@dataclass
class LayersResult:
    """Per-node error of the worst candidate against the FP32 ONNX, in graph order."""

    candidate: str
    precision: str
    nodes: list[LayerError] = field(default_factory=list)
    note: str = ""  # why there are no nodes

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"candidate": self.candidate, "precision": self.precision,
                                "nodes": [vars(n).copy() for n in self.nodes]}
        if self.note:
            data["note"] = self.note
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayersResult:
        return cls(candidate=str(data["candidate"]), precision=str(data["precision"]),
                   nodes=[LayerError(**n) for n in data.get("nodes", [])], note=str(data.get("note", "")))


@dataclass(frozen=True)
class StepLog:
    name: str
    skipped: bool
    seconds: float


@dataclass
class DeployResult:
    out: Path
    model: str
    options: dict[str, Any]
    weights: str | None
    backend: str
    backend_note: str
    export: ExportResult
    builds: list[BuildResult]
    parity: ParityResult
    layers: LayersResult
    bench: BenchReport
    steps: list[StepLog] = field(default_factory=list)
    weights_note: str = ""  # the untrained-weights warning (pipeline.deploy.untrained_note), "" with --weights
    require: str | None = None  # deploy --require: the precision the verdict must ship (Verdict.unmet)

    @property
    def verdict(self) -> Verdict:
        """The artifact to ship and why not the others (deploykit.pipeline.verdict)."""
        return decide(self.builds, self.parity, self.bench)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.to_dict(), "require": self.require,
                "require_unmet": self.verdict.unmet(self.require),
                "model": self.model, "options": self.options, "weights": self.weights, "backend": self.backend,
                "backend_note": self.backend_note, "weights_note": self.weights_note, "export": self.export.to_dict(),
                "builds": [build_record(b) for b in self.builds], "parity": self.parity.to_dict(),
                "layers": self.layers.to_dict(), "bench": self.bench.to_dict(),
                "steps": [{"name": s.name, "skipped": s.skipped, "seconds": round(s.seconds, 2)} for s in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], out: Path) -> DeployResult:
        return cls(out=out, model=str(data["model"]), options=dict(data.get("options") or {}),
                   weights=data.get("weights"), backend=str(data["backend"]),
                   backend_note=str(data.get("backend_note", "")), export=ExportResult.from_dict(data["export"]),
                   builds=[build_in(b, out) for b in data["builds"]],
                   parity=parity_from_record(data["parity"], out), layers=LayersResult.from_dict(data["layers"]),
                   bench=BenchReport.from_dict(data["bench"]),
                   steps=[StepLog(s["name"], bool(s["skipped"]), float(s["seconds"])) for s in data.get("steps", [])],
                   weights_note=str(data.get("weights_note", "")), require=data.get("require"))


def build_in(data: Mapping[str, Any], out: Path) -> BuildResult:
    """A deploy's build from its record, its files taken from the deploy folder `out`: the record's paths are as
    the deploy that wrote it was given them (a relative --out is relative to where it ran), and the folder may
    have moved since."""
    files = {key: str(out / Path(data[key]).name) for key in ("path", "precision_onnx") if data.get(key)}
    return BuildResult.from_dict({**data, **files})


def parity_from_record(data: Mapping[str, Any], out: Path) -> ParityResult:
    """A parity result with the pictures it saved beside it (a resumed deploy draws them without re-running)."""
    result = ParityResult.from_dict(data)
    result.load_pictures(out)
    return result


def build_record(build: BuildResult) -> dict[str, Any]:
    """A build as deploy records it: precision_onnx is the graph compiled (the source ONNX for fp32), and with
    --backend auto on a CPU the race (every backend's median, spread and ratio to the chosen, and why)."""
    race = build.sidecar.build_options.get("auto")
    return {**build.to_dict(), "precision_onnx": str(build.graph), **({"race": race} if race else {})}
