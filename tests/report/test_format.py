import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploykit.report.format import fmt, markdown_table


@given(st.integers(min_value=-9, max_value=9))
def test_a_small_whole_float_reads_like_the_same_int(value: int) -> None:
    assert fmt(float(value)) == fmt(value)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_every_finite_float_reads_back_close_to_itself(value: float) -> None:
    shown = float(fmt(value).replace(",", ""))
    assert math.isclose(shown, value, rel_tol=0.01, abs_tol=1e-4)


@pytest.mark.parametrize("values", [(1, 1.0), (1.0, 0.9999999), (0.5, 0.5)])
def test_one_column_shows_one_form(values: tuple[float, float]) -> None:
    rows = markdown_table(["iou"], [[v] for v in values]).splitlines()[2:]
    assert rows[0] == rows[1]
