"""A value shown beside the threshold it missed never reads as that threshold ("0.995 < 0.995")."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deploykit.metrics.table import against
from deploykit.parity.gates import GateCheck, parse_gate

UNIT = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(UNIT, UNIT)
def test_a_value_other_than_its_threshold_reads_other(value: float, threshold: float) -> None:
    shown = against(value, threshold)
    assert (float(shown) == float(f"{threshold:g}")) is (value == float(f"{threshold:g}"))
    assert len(shown) >= min(len(f"{value:.4g}"), 4)  # never fewer digits than the tables show


def test_a_near_miss_shows_the_digits_that_miss() -> None:
    assert against(0.99496, 0.995) == "0.99496" and against(0.9872, 0.995) == "0.9872"
    gate = parse_gate("pixel_agreement>=0.995")
    assert GateCheck(gate, 0.9949996, False).describe() == "pixel_agreement 0.9949996 fails >=0.995"
