"""Model metadata carried inside ONNX files (metadata_props) so later steps need no side channel."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from deploykit.errors import InputError, first_line
from deploykit.types import TASKS, Preprocessing, Task

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
        """Metadata from a sidecar's `model` field (keys prefixed or not, values as text or JSON); None when it
        does not hold valid metadata (the artifact's own graph is read instead)."""
        text = {k if k.startswith(PREFIX) else PREFIX + k: v if isinstance(v, str) else json.dumps(v)
                for k, v in record.items()}
        try:
            return cls.from_props(text)
        except InputError:
            return None

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: object = "the model") -> ModelMetadata | None:
        """Parse `deploykit.*` props; None when the model was not exported by deploykit. A prop that is missing
        or does not hold what export writes (an edited or garbled file) is an InputError naming it and `source`,
        before any step reads it."""
        mine = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if "model" not in mine:
            return None
        known = {
            "model", "task", "num_classes", "preprocessing", "input_size", "input_names",
            "output_names", "options", "exporter", "versions", "weights", "precision",
        }

        def read(key: str, parse: Callable[[str], Any], default: str | None = None) -> Any:
            text = mine.get(key, default)
            try:
                if text is None:
                    raise ValueError("it is missing")
                return parse(text)
            except (ValueError, TypeError, KeyError) as exc:
                shown = "" if text is None else f" {text[:60]!r}"
                raise InputError(f"{source}: its metadata {PREFIX}{key}{shown} is not what `deploykit export` "
                                 f"writes ({first_line(exc, 120)}); export the model again, or remove its "
                                 f"{PREFIX}* metadata_props to run it as a plain ONNX model") from None

        return cls(
            model=mine["model"],
            task=read("task", _task),
            num_classes=read("num_classes", _count),
            preprocessing=read("preprocessing", lambda t: Preprocessing.from_dict(_json(t, dict))),
            input_size=read("input_size", _size),
            input_names=read("input_names", _names),
            output_names=read("output_names", _names),
            options=read("options", lambda t: _json(t, dict), "{}"),
            exporter=mine.get("exporter", ""),
            versions=read("versions", lambda t: _json(t, dict), "{}"),
            weights=mine.get("weights", ""),
            precision=mine.get("precision", "fp32"),
            extra={k: v for k, v in mine.items() if k not in known},
        )


def _json(text: str, kind: type) -> Any:
    value = json.loads(text)
    if not isinstance(value, kind):
        raise ValueError(f"JSON {type(value).__name__}, not {kind.__name__}")
    return value


def _task(text: str) -> Task:
    if text not in TASKS:
        raise ValueError(f"tasks: {', '.join(TASKS)}")
    return text  # type: ignore[return-value]


def _count(text: str) -> int:
    number = int(text)
    if number < 0:
        raise ValueError("a class count is at least 0")
    return number


def _size(text: str) -> tuple[int, int]:
    size = _json(text, list)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError("expected [height, width], two positive integers")
    return int(size[0]), int(size[1])


def _names(text: str) -> tuple[str, ...]:
    names = _json(text, list)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("expected a JSON list of tensor names")
    return tuple(names)


def write_metadata(model: onnx.ModelProto, meta: ModelMetadata) -> None:
    """Replace the model's deploykit.* metadata_props with `meta` (other props are kept)."""
    kept = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **meta.to_props()})


def read_metadata(model: onnx.ModelProto, source: object = "the model") -> ModelMetadata | None:
    """The deploykit metadata of `model` (None without any); garbled metadata is an InputError naming `source`."""
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source)


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



