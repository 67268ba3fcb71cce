"""Built artifacts and their sidecar JSON: what was built, from what, for which runtime and device.

`model.onnx` / `model.plan` sits beside `model.onnx.deploykit.json` / `model.plan.deploykit.json`.
Every command that takes an artifact loads it through `deploykit.targets.resolve.open_target`, which reads the
sidecar first (and the TensorRT runner checks it against the running TensorRT and GPU).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploykit.errors import InputError

SIDECAR_SUFFIX = ".deploykit.json"
SCHEMA = 1


@dataclass(frozen=True)
class Sidecar:
    backend: str  # "onnxruntime" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    artifact_sha256: str
    source_onnx_sha256: str
    deploykit_version: str
    backend_version: str
    device: Mapping[str, Any] = field(default_factory=dict)  # cpu model / GPU name + compute capability
    build_options: Mapping[str, Any] = field(default_factory=dict)
    calibration_sha256: str = ""
    precision_report: Mapping[str, Any] = field(default_factory=dict)  # nodes kept in higher precision, budget
    model: Mapping[str, Any] = field(default_factory=dict)  # ModelMetadata of the source ONNX, as props
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sidecar:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    return Path(str(artifact) + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | os.PathLike[str]) -> Sidecar | None:
    """The artifact's sidecar, or None for a plain ONNX file that was not built by deploykit."""
    path = sidecar_path(artifact)
    if not path.is_file():
        return None
    try:
        return Sidecar.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"sidecar {path} is unreadable ({exc}); rebuild the artifact with build-engine") from exc
