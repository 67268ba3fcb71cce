"""The --localize lines of the parity report: the first node names the reference nodes the candidate computes
with it, the nearest few only (a candidate whose pairing breaks early would list the whole network)."""

from __future__ import annotations

from deploykit.parity.compare import CandidateResult
from deploykit.parity.localize import Localization, NodeError
from deploykit.report.document import to_text
from deploykit.report.parity import localization_blocks


def _first_line(through: tuple[str, ...]) -> str:
    first = NodeError(node="act", op_type="Relu", module="head.act", tensor="act_out", error=0.5, input_error=0.0,
                      growth=5.0, cosine=0.9, through=through)
    found = Localization(candidate="c.onnx", reference_onnx="r.onnx", tolerance=1e-4, compared=3, unmatched=1,
                         first=first, top=[first])
    text = to_text(localization_blocks(CandidateResult("c.onnx", "onnxruntime", "fp32", [], 0, found)))
    return next(line for line in text.splitlines() if "first node beyond tolerance" in line)


def test_the_nodes_fused_with_the_first_are_named() -> None:
    assert "computed together with conv (no tensor of their own there)" in _first_line(("conv",))
    assert "computed together" not in _first_line(())


def test_a_long_walk_names_the_nearest_few() -> None:
    line = _first_line(tuple(f"n{i}" for i in range(100)))
    assert "n97, n98, n99 and 97 more" in line and "n0," not in line
