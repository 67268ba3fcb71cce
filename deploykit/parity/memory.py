"""Whether a parity run fits in the memory available, judged before any target runs: under overcommit the
allocations succeed and the kernel's OOM killer ends the run without a word (a batch of 65536 small images was
killed so, exit 137)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from deploykit.environment import check_memory
from deploykit.errors import size_text
from deploykit.exporters import TORCH_RUN_COPIES, scaled_forward
from deploykit.graph.macs import arena_bytes, output_values
from deploykit.metrics.numeric import COMPARED_BYTES, OUTPUT_BYTES
from deploykit.runner import Target

# Per output value: each target's output as float32, held until every candidate is compared (OUTPUT_BYTES a
# target), and the comparison's float64 arrays (COMPARED_BYTES, deploykit.metrics.numeric).


def check_run_fits(targets: Sequence[Target], shape: tuple[int, ...]) -> None:
    """Refuse a batch `shape` whose run cannot fit in the memory available: the input batch, each ONNX Runtime
    session's arena (kept between runs; a PyTorch model is counted like the first ONNX graph, the same network,
    or, without one, by its own forward scaled from a smaller size: exporters.scaled_forward), every target's
    outputs and their comparison. Engines without a graph are not counted."""
    graphs = [t.onnx_path for t in targets if t.onnx_path is not None]
    torch_models = [t.loaded for t in targets if t.loaded is not None]
    try:
        if graphs:
            sessions = [arena_bytes(path, shape) for path in graphs]
            models = sum(sessions) + (sessions[0] if torch_models else 0)
            values = output_values(graphs[0], shape)
        elif torch_models and (measured := scaled_forward(torch_models[0], shape)) is not None:
            models = TORCH_RUN_COPIES * measured.peak * len(torch_models)
            values = measured.output_values
        else:
            return
    except Exception:  # an estimate guards against the OOM killer; never a reason to refuse a run
        return
    outputs = values * (OUTPUT_BYTES * len(targets) + COMPARED_BYTES)
    check_memory(4 * math.prod(shape) + models + outputs, f"a run at {'x'.join(map(str, shape))}",
                 "give a smaller batch or shape",
                 f"the models' activations {size_text(models)}, their outputs and the comparison {size_text(outputs)}")
