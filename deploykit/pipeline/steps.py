"""Re-running a multi-step flow: a step is skipped when its inputs (hashed) and outputs are unchanged.

The record lives in OUT/.deploykit-steps.json: step name -> key (sha256 of its inputs), its outputs with
their sha256, so a changed or deleted output also reruns the step, and the files its action was seen to read
(deploykit.io.reads, known only once it ran) with theirs, which a rerun digests again before it skips.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from deploykit.io.digests import sha256_file
from deploykit.io.output_checks import remove_output
from deploykit.io.outputs import write_json
from deploykit.io.reads import ReadSet

T = TypeVar("T")
RECORD = ".deploykit-steps.json"


def inputs_key(inputs: Mapping[str, Any]) -> str:
    """A stable hash of a step's inputs; Paths are hashed by content, everything else by its JSON form."""
    def normalise(value: Any) -> Any:
        if isinstance(value, Path):
            return {"file": value.name, "sha256": sha256_file(value) if value.is_file() else None}
        if isinstance(value, Mapping):
            return {str(k): normalise(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [normalise(v) for v in value]
        return value
    text = json.dumps(normalise(dict(inputs)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _well_formed(entry: Any) -> bool:
    """A record entry as StepRecord.run writes it: {"key": str, "outputs": {relative path: sha256}, "reads":
    {name: sha256}}."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return False
    files = [entry.get("outputs", {}), entry.get("reads", {})]
    return all(isinstance(f, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in f.items())
               for f in files)


@dataclass
class StepOutcome:
    name: str
    skipped: bool
    result: Any
    changed_read: str | None = None  # why it ran: a file its action read last time changed (ReadSet.changed)


class StepRecord:
    """The flow's memory of which steps ran with which inputs."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RECORD
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        # An edited or foreign record (a list, an entry without its key or outputs) only means "not done": those
        # steps run again (it was an AttributeError, exit 3).
        self.entries: dict[str, Any] = {name: entry for name, entry in entries.items() if _well_formed(entry)} \
            if isinstance(entries, dict) else {}
        self.earlier = {output for entry in self.entries.values() for output in entry.get("outputs", {})}  # for `prune`

    def _fresh(self, name: str, key: str) -> bool:
        entry = self.entries.get(name)
        if not entry or entry.get("key") != key:
            return False
        for output, digest in entry.get("outputs", {}).items():
            file = self.folder / output
            if not file.is_file() or sha256_file(file) != digest:
                return False
        return True

    def run(self, name: str, inputs: Mapping[str, Any], outputs: Sequence[Path] | Callable[[T], Sequence[Path]],
            action: Callable[[], T], load: Callable[[], T], reads: ReadSet | None = None) -> StepOutcome:
        """Run `action` unless the step is fresh, in which case `load` rebuilds its result from the outputs.
        `outputs` may depend on the result (a raced build's artifact is named after the winner). `reads`: what
        the action reads that its inputs cannot name beforehand, watched as it runs (ReadSet.watch)."""
        key = inputs_key(inputs)
        changed = None
        if self._fresh(name, key) and (
                reads is None or (changed := reads.changed(self.entries[name].get("reads", {}))) is None):
            return StepOutcome(name, True, load())
        self.entries.pop(name, None)  # a failed rerun must not leave the old record claiming freshness
        self._save()
        result = action()
        self.entries[name] = {
            "key": key,
            "outputs": {str(p.relative_to(self.folder)): sha256_file(p)
                        for p in (outputs(result) if callable(outputs) else outputs) if p.is_file()},
            **({"reads": dict(reads.digests)} if reads is not None else {}),
        }
        self._save()
        return StepOutcome(name, False, result, changed)

    def _save(self) -> None:
        write_json(self.path, self.entries, force=True)

    def prune(self, names: Collection[str]) -> None:
        """Forget the steps not among `names` (this run's) and remove the files an earlier run's steps wrote that
        no step of this run claims: a precision dropped from --precisions, or an artifact of another --backend,
        stayed in the folder beside this run's, which a fresh run's folder does not hold."""
        self.entries = {name: entry for name, entry in self.entries.items() if name in names}
        kept = {output for entry in self.entries.values() for output in entry.get("outputs", {})}
        for output in sorted(self.earlier - kept):
            if Path(output).name == output:  # a name in the folder, as run() records them (not an edited path)
                remove_output(self.folder / output)
        self._save()
