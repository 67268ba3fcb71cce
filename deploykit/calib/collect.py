"""Streaming activation statistics: max |x| and a fixed-size histogram of |x| per tensor.

ONNX Runtime's own calibrators keep every intermediate output of every calibration batch until the end
(memory blow-ups in ONNX Runtime #10503, #21979). Here the model runs on one input at a time with the wanted
tensors exposed as extra outputs; each output updates its tensor's statistics and is dropped before the next
input, so peak memory is one input's activations plus BINS counters per tensor, whatever the number of inputs.

The histogram covers [0, range) with BINS bins. When a later input exceeds the range, the range grows by a
power of two and existing counts merge 2^k bins into one, so histograms stay fixed-size and mergeable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from deploykit.errors import InputError
from deploykit.evaluate import RUN_FAILURES, node_failure, session_from_onnx
from deploykit.graph.tensors import index_graph
from deploykit.types import Progress, Progressed

BINS = 2048


@dataclass
class TensorStats:
    """Statistics of one tensor over all inputs seen so far."""

    absmax: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    count: int = 0
    hist: np.ndarray | None = None  # BINS counts of |x| over [0, hist_range)
    hist_range: float = 0.0

    def update(self, x: np.ndarray, *, histogram: bool) -> None:
        if x.size == 0:
            return
        finite = x if np.isfinite(x).all() else x[np.isfinite(x)]
        if finite.size == 0:
            return
        low, high = float(finite.min()), float(finite.max())
        self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)
        self.absmax = max(self.absmax, abs(low), abs(high))
        self.count += int(x.size)
        if histogram:
            self._add_histogram(np.abs(finite.astype(np.float32, copy=False)))

    def _add_histogram(self, magnitude: np.ndarray) -> None:
        """Count |x| (a fresh array, scaled in place: a third less time than with copies, which matters when
        every activation of a 513x513 model is counted for every calibration input)."""
        if self.hist is None:
            self.hist = np.zeros(BINS, dtype=np.int64)
        if self.absmax > self.hist_range:
            self._grow(self.absmax)
        if self.hist_range == 0.0:  # all zeros so far
            self.hist[0] += magnitude.size
            return
        np.multiply(magnitude, BINS / self.hist_range, out=magnitude)
        np.minimum(magnitude, BINS - 1, out=magnitude)
        self.hist += np.bincount(magnitude.astype(np.int32).ravel(), minlength=BINS)

    def _grow(self, needed: float) -> None:
        """Enlarge the range to cover `needed`: x2^k, merging 2^k old bins into each new one."""
        assert self.hist is not None
        if self.hist_range == 0.0:
            zeros = int(self.hist.sum())
            self.hist_range = needed
            self.hist[:] = 0
            self.hist[0] = zeros
            return
        factor = 1 << max(0, math.ceil(math.log2(needed / self.hist_range)))
        if factor >= BINS:
            total = int(self.hist.sum())
            self.hist[:] = 0
            self.hist[0] = total
        else:
            merged = self.hist.reshape(BINS // factor, factor).sum(axis=1)
            self.hist[:] = 0
            self.hist[: merged.size] = merged
        self.hist_range *= factor

    def to_dict(self) -> dict[str, float]:
        return {"absmax": self.absmax, "min": self.minimum, "max": self.maximum}


@dataclass
class Collection:
    stats: dict[str, TensorStats] = field(default_factory=dict)
    inputs: int = 0


def probe_model(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph also outputs `tensors`, typed as the graph types them (float32 if unknown)."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    types = index_graph(probe).types
    present = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in present:
            probe.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
    return probe


def collect_stats(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    inputs: Iterable[np.ndarray],
    *,
    histograms: Iterable[str] = (),
    threads: int | None = None,
    progress: Progress | None = None,
) -> Collection:
    """Run `model` on each input (one at a time) and gather statistics of `tensors` (float32 tensors).

    Graph inputs among `tensors` are measured from the feed itself. Only tensors named in `histograms`
    keep a histogram (INT8 calibration); max |x| alone is enough for the FP16 overflow guard.
    """
    graph_inputs = [v.name for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise ValueError(f"calibration needs a single-input model; this one has inputs {graph_inputs}")
    input_name = graph_inputs[0]
    with_hist = set(histograms)
    inner = [t for t in dict.fromkeys(tensors) if t != input_name]
    session = session_from_onnx(probe_model(model, inner).SerializeToString(), threads=threads,
                                optimization="basic")
    collection = Collection({name: TensorStats() for name in dict.fromkeys(tensors)})
    total = len(inputs) if isinstance(inputs, Sized) else 0
    for count, batch in enumerate(inputs, start=1):
        values = _run(session, inner, input_name, batch, count)
        if input_name in collection.stats:
            collection.stats[input_name].update(batch, histogram=input_name in with_hist)
        for name, value in zip(inner, values, strict=True):
            collection.stats[name].update(np.asarray(value), histogram=name in with_hist)
        del values  # drop this input's activations before the next one
        collection.inputs = count
        if progress and total:
            progress(Progressed("calibration (inputs)", count, total))
        elif progress and count % 8 == 0:
            progress(f"calibration: {count} inputs")
    return collection


def _run(session: ort.InferenceSession, outputs: list[str], input_name: str, batch: np.ndarray,
         index: int) -> list[Any]:
    """One calibration input through the probe graph; a shape the model cannot take (an array below U-Net's
    smallest tile: arrays are fed as they are, images are resized to the model's size) is bad input."""
    try:
        values: list[Any] = session.run(outputs, {input_name: batch})
    except RUN_FAILURES as exc:
        shape = "x".join(map(str, batch.shape))
        raise InputError(f"calibration input {index} of shape {shape}: the model cannot run on it "
                         f"({node_failure(exc)}); give calibration inputs of a size the model takes, e.g. "
                         "the size it was exported at") from exc
    return values
