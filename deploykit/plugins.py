"""Entries from other packages: the tables (BACKENDS, PRECISIONS, METRICS) take the built-in entries plus those a
package registers under an entry-point group (pytest's and Polygraphy's plugin model), so a package outside
deploykit adds a backend, a precision or a metric without touching deploykit:

    [project.entry-points."deploykit.backends"]
    refonnx = "deploykit_refonnx:BACKEND"      # a deploykit.backends.base.Backend (or a list of them)

Groups: `deploykit.backends` (Backend), `deploykit.precisions` (deploykit.precision.table.Precision),
`deploykit.metrics` (deploykit.metrics.table.Metric). An entry point that cannot be loaded, names an object of
another kind, or takes a name already in the table fails loudly (PluginError naming the package): an entry
silently missing or replacing a built-in would change what a command does without a word (MMDeploy's
registries swallow import failures into warnings; deploykit does not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, TypeVar

from deploykit.errors import PluginError


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


def _provider(point: EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"{point.group} entry point {point.name!r} of {dist.name if dist is not None else 'a package'}"


def with_plugins(group: str, kind: type[T], builtin: Mapping[str, T]) -> dict[str, T]:
    """`builtin` plus every entry registered under `group` (see the module docstring), in that order."""
    table = dict(builtin)
    for point in entry_points(group=group):
        try:
            loaded = point.load()
        except Exception as exc:  # whatever the package raises on import is its failure, reported as such
            raise PluginError(f"{_provider(point)} cannot be loaded: {type(exc).__name__}: {exc}; fix or "
                              "uninstall that package") from exc
        found: Iterable[object] = loaded if isinstance(loaded, list | tuple) else [loaded]
        for entry in found:
            if not isinstance(entry, kind):
                raise PluginError(f"{_provider(point)} gives a {type(entry).__name__}, not a {kind.__name__}")
            if entry.name in table:
                raise PluginError(f"{_provider(point)} registers {entry.name!r}, which deploykit already has; "
                                  "rename the entry")
            table[entry.name] = entry
    return table
