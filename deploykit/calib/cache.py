"""Calibration cache: per-tensor ranges as JSON, keyed by the ONNX file, the data and the method (for
--calib-method auto, the list of its candidates: one file holds each candidate's ranges, all from one pass).

Location: an explicit path (--calib-cache), else $DEPLOYKIT_CACHE_DIR, else $XDG_CACHE_HOME/deploykit, else
~/.cache/deploykit, in calibration/<key>.json. A cache whose key does not match is ignored, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deploykit
from deploykit.errors import DeployKitError, InputError, first_line
from deploykit.io.outputs import write_json

SCHEMA = 4  # bump when a range method's algorithm or the cache's fields change, so old caches are not trusted


def cache_dir() -> Path:
    if os.environ.get("DEPLOYKIT_CACHE_DIR"):
        return Path(os.environ["DEPLOYKIT_CACHE_DIR"])
    # The XDG base directory spec ignores a relative XDG_CACHE_HOME; an empty or relative HOME (HOME="" made
    # ~ the root folder) is taken as unset, so the account's home from the password database is used.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "deploykit"
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:  # a uid with no account (a container's): a temporary folder, still a working cache
            home = tempfile.gettempdir()
    return Path(home) / ".cache" / "deploykit"


def cache_key(onnx_sha256: str, data_sha256: str, method: Mapping[str, Any]) -> str:
    text = json.dumps({"schema": SCHEMA, "deploykit": deploykit.__version__, "onnx": onnx_sha256,
                       "data": data_sha256, "method": dict(method)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedRanges:
    key: str
    amax: dict[str, dict[str, float]]  # range method name -> its range per tensor (auto: each candidate's)
    absmax: dict[str, float]  # max |x| per tensor (the FP16 overflow guard reads these)
    inputs: int  # how many calibration inputs were seen
    observed: dict[str, tuple[float, float]] = field(default_factory=dict)  # (min, max) per tensor


def default_path(key: str) -> Path:
    return cache_dir() / "calibration" / f"{key[:32]}.json"


def _read(path: Path) -> dict[str, Any] | None:
    """The cache file's fields, or None when it is not a calibration cache deploykit wrote (of any version)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"schema", "key", "amax", "absmax"} <= set(data) else None


def load(path: Path, key: str) -> CachedRanges | None:
    data = _read(path)
    if data is None or data.get("key") != key or data.get("schema") != SCHEMA:
        return None
    try:
        return CachedRanges(key=key, amax={m: {k: float(v) for k, v in ranges.items()}
                                           for m, ranges in data["amax"].items()},
                            absmax={k: float(v) for k, v in data["absmax"].items()}, inputs=int(data["inputs"]),
                            observed={k: (float(v[0]), float(v[1])) for k, v in data.get("observed", {}).items()})
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):  # edited by hand: recalibrate
        return None


def check_cache_path(path: str | os.PathLike[str]) -> None:
    """An explicit --calib-cache is read if it holds a cache and written after the work: a file there that is
    not a calibration cache (a typo, another file) would be overwritten, so it is refused before the work."""
    file = Path(path)
    if os.path.lexists(file) and _read(file) is None:
        raise InputError(f"--calib-cache {file} exists and is not a deploykit calibration cache, which would "
                         "replace it; give a new path (or one a build wrote before)")


def store(path: Path, ranges: CachedRanges, *, onnx_sha256: str, data_sha256: str,
          method: Mapping[str, Any]) -> str | None:
    """Write the cache atomically. A cache that cannot be written only costs time next run, so the build goes
    on: returns why it was not written (for the caller to say), or None when it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"schema": SCHEMA, "key": ranges.key, "onnx_sha256": onnx_sha256,
                          "data_sha256": data_sha256, "method": dict(method), "inputs": ranges.inputs,
                          "amax": ranges.amax, "absmax": ranges.absmax,
                          "observed": {k: list(v) for k, v in ranges.observed.items()}}, force=True)
    except (OSError, DeployKitError) as exc:
        return first_line(exc, 300)
    return None
