"""Model metadata carried inside ONNX files (metadata_props) so later steps need no side channel."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from deploykit.types import Preprocessing, Task

PREFIX = "deploykit."


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    task: Task
    num_classes: int
    preprocessing: Preprocessing
    input_size: tuple[int, int]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    exporter: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    weights: str = ""  # "name sha256" of the checkpoint, or "" for the builder's initialisation
    precision: str = "fp32"
    extra: Mapping[str, str] = field(default_factory=dict)  # passes' own records (fp16 kept nodes, calibration...)

    def to_props(self) -> dict[str, str]:
        props = {
            "model": self.model,
            "task": self.task,
            "num_classes": str(self.num_classes),
            "preprocessing": json.dumps(self.preprocessing.to_dict()),
            "input_size": json.dumps(list(self.input_size)),
            "input_names": json.dumps(list(self.input_names)),
            "output_names": json.dumps(list(self.output_names)),
            "options": json.dumps(dict(self.options), default=str, sort_keys=True),
            "exporter": self.exporter,
            "versions": json.dumps(dict(self.versions), sort_keys=True),
            "weights": self.weights,
            "precision": self.precision,
        }
        props.update(self.extra)
        return {PREFIX + key: value for key, value in props.items()}

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Class names (`deploykit.class_names`, a JSON list, lands in `extra`), or None."""
        if "class_names" not in self.extra:
            return None
        try:
            names = json.loads(self.extra["class_names"])
        except ValueError:
            return None
        return tuple(str(n) for n in names) if isinstance(names, list) else None

    def to_record(self) -> dict[str, Any]:
        """As plain JSON values, for an artifact sidecar's `model` field (read back by from_record)."""
        return {
            "model": self.model, "task": self.task, "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.to_dict(), "input_size": list(self.input_size),
            "input_names": list(self.input_names), "output_names": list(self.output_names),
            "options": dict(self.options), "exporter": self.exporter, "versions": dict(self.versions),
            "weights": self.weights, "precision": self.precision, **dict(self.extra),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelMetadata | None:
        """Metadata from a sidecar's `model` field (keys prefixed or not, values as text or JSON)."""
        text = {k if k.startswith(PREFIX) else PREFIX + k: v if isinstance(v, str) else json.dumps(v)
                for k, v in record.items()}
        try:
            return cls.from_props(text)
        except (KeyError, ValueError, TypeError):
            return None

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ModelMetadata | None:
        """Parse `deploykit.*` props; None when the model was not exported by deploykit."""
        mine = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if "model" not in mine:
            return None
        known = {
            "model", "task", "num_classes", "preprocessing", "input_size", "input_names",
            "output_names", "options", "exporter", "versions", "weights", "precision",
        }
        return cls(
            model=mine["model"],
            task=mine["task"],  # type: ignore[arg-type]
            num_classes=int(mine["num_classes"]),
            preprocessing=Preprocessing.from_dict(json.loads(mine["preprocessing"])),
            input_size=(int(json.loads(mine["input_size"])[0]), int(json.loads(mine["input_size"])[1])),
            input_names=tuple(json.loads(mine["input_names"])),
            output_names=tuple(json.loads(mine["output_names"])),
            options=json.loads(mine.get("options", "{}")),
            exporter=mine.get("exporter", ""),
            versions=json.loads(mine.get("versions", "{}")),
            weights=mine.get("weights", ""),
            precision=mine.get("precision", "fp32"),
            extra={k: v for k, v in mine.items() if k not in known},
        )


def write_metadata(model: onnx.ModelProto, meta: ModelMetadata) -> None:
    """Replace the model's deploykit.* metadata_props with `meta` (other props are kept)."""
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **meta.to_props()})


def read_metadata(model: onnx.ModelProto) -> ModelMetadata | None:
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})


# The observed [min, max] of each quantized activation of an INT8 graph, for CPU lowerings that may use
# asymmetric ranges (deploykit.graph.unsigned); outside the deploykit.* namespace, so model
# metadata rewrites keep it and sidecars do not copy it.
RANGES_KEY = "deploykit-int8.observed_ranges"


def write_observed_ranges(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]]) -> None:
    kept = [p for p in model.metadata_props if p.key != RANGES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    rounded = {name: [float(f"{low:.7g}"), float(f"{high:.7g}")] for name, (low, high) in sorted(ranges.items())}
    model.metadata_props.add(key=RANGES_KEY, value=json.dumps(rounded, separators=(",", ":")))


def read_observed_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """tensor -> (min, max) as the INT8 pass observed it on the calibration data ({} when not recorded)."""
    text = next((p.value for p in model.metadata_props if p.key == RANGES_KEY), "")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(k): (float(v[0]), float(v[1])) for k, v in data.items() if isinstance(v, list) and len(v) == 2}



