"""Built artifacts and their sidecar JSON: what was built, from what, for which runtime and device.

`model.onnx` / `model.plan` sits beside `model.onnx.deploykit.json` / `model.plan.deploykit.json`.
Every command that takes an artifact loads it through `deploykit.targets.resolve.open_target`, which reads the
sidecar first (`read_sidecar` checks its schema version and fields); every backend's open checks that the sidecar
belongs to the artifact (`verify_sidecar`: backend, file kind, the sha256 of the artifact and its companions), and
the TensorRT runner checks it against the running TensorRT and GPU. Hashing costs about 0.2 s per 100 MB
(AMD EPYC with SHA extensions, one core), once per process: deploykit.io.digests.sha256_file caches it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploykit.errors import InputError, first_line
from deploykit.io.digests import sha256_file

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
    companions_sha256: Mapping[str, str] = field(default_factory=dict)  # companion suffix (".bin") -> sha256
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sidecar:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    return Path(str(artifact) + SIDECAR_SUFFIX)


REQUIRED = {"backend": str, "precision": str, "artifact_sha256": str, "source_onnx_sha256": str,
            "deploykit_version": str, "backend_version": str}
REBUILD = "rebuild the artifact with `deploykit build-engine`"


def read_sidecar(artifact: str | os.PathLike[str]) -> Sidecar | None:
    """The artifact's sidecar, or None for a plain ONNX file that was not built by deploykit. A sidecar of
    another schema version, or without the fields every sidecar has, is refused in one line."""
    path = sidecar_path(artifact)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"sidecar {path} is unreadable ({first_line(exc, 200)}); {REBUILD}") from None
    if not isinstance(data, dict):
        raise InputError(f"sidecar {path} is not a deploykit sidecar (JSON {type(data).__name__}, not an object); "
                         f"{REBUILD}")
    schema = data.get("schema")
    if schema != SCHEMA or isinstance(schema, bool):  # JSON true equals 1 in Python
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
            raise InputError(f"sidecar {path} has schema version {schema}, newer than this deploykit reads "
                             f"({SCHEMA}): upgrade deploykit, or {REBUILD} of this version")
        raise InputError(f"sidecar {path} has schema version {schema!r}, not {SCHEMA}: it was not written by "
                         f"deploykit or was edited; {REBUILD}")
    wrong = [k for k, kind in REQUIRED.items() if not isinstance(data.get(k), kind)]
    mappings = [k for k in ("device", "build_options", "precision_report", "model", "companions_sha256")
                if k in data and not isinstance(data[k], dict)]
    if wrong or mappings:
        raise InputError(f"sidecar {path} lacks or garbles {', '.join(wrong + mappings)}; {REBUILD}")
    return Sidecar.from_dict(data)


def verify_sidecar(artifact: str | os.PathLike[str], sidecar: Sidecar, *, backend: str, suffixes: Sequence[str],
                   companions: Mapping[str, Path]) -> None:
    """That `sidecar` belongs to `artifact`: it names `backend` (the one opening it), the file ends like that
    backend's artifacts, and the artifact and each companion (suffix -> path) hash as the sidecar recorded."""
    path = Path(artifact)
    side = sidecar_path(path).name
    if sidecar.backend != backend:
        raise InputError(f"{path}: its sidecar {side} names backend {sidecar.backend!r}, but it is opened as "
                         f"{backend}; {REBUILD}")
    if suffixes and not path.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise InputError(f"{path}: its sidecar {side} says it is a {backend} artifact ({', '.join(suffixes)}), "
                         f"but the file is named {path.name}; rename it back, or {REBUILD}")
    if not sidecar.artifact_sha256:
        raise InputError(f"{path}: its sidecar {side} records no artifact_sha256; {REBUILD}")
    if sha256_file(path) != sidecar.artifact_sha256:
        raise InputError(f"{path} does not match its sidecar {side} (sha256 differs): the artifact was replaced "
                         f"or the sidecar is another artifact's; {REBUILD}, or copy each artifact with its own sidecar")
    for suffix, recorded in sidecar.companions_sha256.items():
        companion = companions.get(suffix)
        if companion is None:
            continue  # a companion this backend no longer has
        if not companion.is_file():
            raise InputError(f"{path}: its {companion.name} is missing; copy it with the artifact, or {REBUILD}")
        if sha256_file(companion) != recorded:
            raise InputError(f"{companion} does not match the sidecar {side} of {path.name} (sha256 differs): "
                             f"copy the artifact's own {suffix} beside it, or {REBUILD}")

