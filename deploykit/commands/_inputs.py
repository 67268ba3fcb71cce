"""Which parameters of a command are its inputs, so that no output can overwrite or delete one of them."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from deploykit.backends.base import artifact_files
from deploykit.io.output_checks import check_input_name, reading
from deploykit.io.sidecar import SIDECAR_SUFFIX
from deploykit.zoo.sources import factory_file, is_factory_path

F = TypeVar("F", bound=Callable[..., Any])


def reads(*params: str) -> Callable[[F], F]:
    """Name the command's parameters that hold its inputs (files, folders, package.module:factory sources):
    while the command runs, every output check refuses them and the files that belong to them (sidecars,
    companions, external data: deploykit.backends.base.artifact_files), so no output can overwrite or delete an
    input, with or without --force (deploykit.io.output_checks.reading)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = [kwargs.get(name) for name in params]
            given = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
            paths = [p for value in given if isinstance(value, str) for p in _input_paths(value)]
            with reading(*paths):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _input_paths(value: str) -> list[str | Path]:
    """The files an input argument stands for: an artifact and what belongs to it, a folder, the module file
    of a package.module:factory. A zoo name, a keyword (photos) or a missing file stands for nothing to protect
    (`deploy msinet --out msinet` is fine; a missing input is reported by the command)."""
    if is_factory_path(value):
        return [p for p in [factory_file(value)] if p is not None]
    if os.path.isfile(value):
        check_input_name(Path(value), len(os.fsencode(SIDECAR_SUFFIX)))  # artifact_files looks for its sidecar
        return list(artifact_files(value))
    return [value] if os.path.isdir(value) else []


