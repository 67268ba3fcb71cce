"""Whether a parity run fits in the memory available, judged before any target runs: under overcommit the
allocations succeed and the kernel's OOM killer ends the run without a word (a batch of 65536 small images was
killed so, exit 137)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from deploykit.environment import check_memory
from deploykit.errors import size_text
from deploykit.graph.macs import arena_bytes, output_values
from deploykit.metrics.numeric import COMPARED_BYTES, OUTPUT_BYTES
from deploykit.runner import Target

# Per output value: each target's output as float32, held until every candidate is compared (OUTPUT_BYTES a
# target), and the comparison's float64 arrays (COMPARED_BYTES, deploykit.metrics.numeric).


def check_run_fits(targets: Sequence[Target], shape: tuple[int, ...]) -> None:
    """Refuse a batch `shape` whose run cannot fit in the memory available: the input batch, each ONNX Runtime
    session's arena (kept between runs; a PyTorch model is counted like the first ONNX graph, the same network),
    every target's outputs and their comparison. Targets without a graph are not counted."""
    graphs = [t.onnx_path for t in targets if t.onnx_path is not None]
    if not graphs:
        return
    try:
        sessions = [arena_bytes(path, shape) for path in graphs]
        values = output_values(graphs[0], shape)
    except Exception:  # an estimate guards against the OOM killer; never a reason to refuse a run
        return
    models = sum(sessions) + (sessions[0] if any(t.loaded is not None for t in targets) else 0)
    outputs = values * (OUTPUT_BYTES * len(targets) + COMPARED_BYTES)
    check_memory(4 * math.prod(shape) + models + outputs, f"a run at {'x'.join(map(str, shape))}",
                 "give a smaller batch or shape",
                 f"the models' activations {size_text(models)}, their outputs and the comparison {size_text(outputs)}")
