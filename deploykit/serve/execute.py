"""What the artifact's Triton model does with a batch of requests: the dynamic batcher hands over requests
that arrived together; those whose inputs have the same shapes and dtypes are concatenated along the batch
axis and run as one inference, then split back. A group that fails gets its error; the others are answered.
Runs inside Triton's Python backend stub (deploykit/serve/triton_runner.py), one Runner per model instance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploykit.errors import DeployKitError, InputError, first_line
from deploykit.runner import Runner
from deploykit.targets.resolve import open_target

Feed = Mapping[str, np.ndarray]
Answer = dict[str, np.ndarray] | DeployKitError


@dataclass
class BatchedRunner:
    runner: Runner  # entered
    batched: bool  # whether the artifact has a batch axis to concatenate along
    max_elements: int  # per request and input: larger tensors are refused

    @classmethod
    def open(cls, artifact: str, *, batched: bool, max_elements: int, threads: int | None = None) -> BatchedRunner:
        runner = open_target(artifact, threads=threads).runner
        runner.__enter__()
        return cls(runner, batched, max_elements)

    def close(self) -> None:
        self.runner.__exit__(None, None, None)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.runner.input_specs()]

    def run(self, feeds: Sequence[Feed]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(feeds)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, feed in enumerate(feeds):
            too_large = [f"{name} has {array.size} values" for name, array in feed.items()
                         if array.size > self.max_elements]
            if too_large:
                answers[index] = InputError(f"input too large: {', '.join(too_large)}; this server takes at most "
                                            f"{self.max_elements} per input (serve --max-input-mb)")
                continue
            empty = [f"{name} has shape {list(array.shape)}" for name, array in feed.items() if array.size == 0]
            if empty:
                answers[index] = InputError(f"empty input: {', '.join(empty)}; every dimension must be at least 1")
                continue
            not_finite = [f"{name} has {np.count_nonzero(~np.isfinite(array))} of {array.size}"
                          for name, array in feed.items() if array.dtype.kind == "f" and not np.isfinite(array).all()]
            if not_finite:
                answers[index] = InputError(f"NaN or infinite values: {', '.join(not_finite)}; send finite numbers")
                continue
            key = tuple((name, feed[name].shape[1:] if self.batched else feed[name].shape, feed[name].dtype.str)
                        for name in sorted(feed))
            groups.setdefault(key if self.batched else (index,), []).append(index)
        for members in groups.values():
            for index, answer in zip(members, self._run_group([feeds[i] for i in members]), strict=True):
                answers[index] = answer
        return [a if a is not None else InputError("no answer") for a in answers]

    def _run_group(self, feeds: Sequence[Feed]) -> list[Answer]:
        merged = feeds[0] if len(feeds) == 1 else {name: np.concatenate([f[name] for f in feeds])
                                                   for name in feeds[0]}
        try:
            outputs = self.runner.infer(merged)
        except DeployKitError as exc:
            return [exc] * len(feeds)
        except Exception as exc:  # the runtime's own refusal (a size the graph cannot take): the request's fault
            first = first_line(exc, 400)
            return [InputError(f"{self.runner.describe()} could not run this input: {first}")] * len(feeds)
        if len(feeds) == 1:
            return [outputs]
        bounds = np.cumsum([next(iter(f.values())).shape[0] for f in feeds])[:-1]
        parts = {name: np.split(value, bounds) for name, value in outputs.items()}
        return [{name: parts[name][i] for name in outputs} for i in range(len(feeds))]


def max_elements_of(megabytes: float) -> int:
    """Values per input tensor allowed by a limit in MB of float32."""
    return max(1, math.floor(megabytes * 2**20 / 4))
