"""Parity reports a typed count of the inputs it compared (the CLI draws it as a bar)."""

from __future__ import annotations

from pathlib import Path

from deploykit.parity.compare import ParitySettings, run_parity
from deploykit.parity.inputs import resolve_inputs
from deploykit.targets.resolve import open_target
from deploykit.types import Progressed


def test_parity_counts_its_inputs(zoo_onnx: Path) -> None:
    reference, candidate = open_target(str(zoo_onnx)), open_target(str(zoo_onnx))
    events: list[object] = []
    inputs = resolve_inputs([reference, candidate], random=3)
    run_parity(reference, [candidate], inputs, ParitySettings(), progress=events.append)
    assert [e for e in events if isinstance(e, Progressed)] == [Progressed("parity (inputs)", k, 3) for k in (1, 2, 3)]
