"""Whether a parity run fits in the memory available, judged before any target runs: under overcommit the
allocations succeed and the kernel's OOM killer ends the run without a word (a batch of 65536 small images was
killed so, exit 137)."""

from __future__ import annotations

from collections.abc import Sequence

from deploykit.environment import available_memory
from deploykit.errors import InputError
from deploykit.graph.macs import arena_bytes
from deploykit.io.outputs import size_text
from deploykit.runner import Target


def check_run_fits(targets: Sequence[Target], shape: tuple[int, ...]) -> None:
    """Refuse a batch `shape` whose run cannot fit in the memory available. Each ONNX Runtime session keeps its
    arena between runs; a PyTorch model is counted like the first ONNX graph (the same network, freed after each
    run); targets without a graph are not counted."""
    free = available_memory()
    graphs = [t.onnx_path for t in targets if t.onnx_path is not None]
    if free is None or not graphs:
        return
    try:
        sessions = [arena_bytes(path, shape) for path in graphs]
    except Exception:  # an estimate guards against the OOM killer; never a reason to refuse a run
        return
    needed = sum(sessions) + (sessions[0] if any(t.loaded is not None for t in targets) else 0)
    if needed > free:
        raise InputError(f"a run at {'x'.join(map(str, shape))} needs about {size_text(needed)} for the models' "
                         f"activations and this machine has {size_text(free)} available; give a smaller batch or "
                         "shape")
