"""--input-shape is refused when parsed if the float32 input alone cannot fit in the memory the machine has
(deploykit.zoo.sources.parse_shape), whatever machine runs the tests: the free memory is set here."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploykit.errors import InputError
from deploykit.zoo.sources import parse_shape

FREE = 64 * 2**20  # 64 MiB


@given(st.lists(st.integers(1, 4096), min_size=4, max_size=4))
def test_a_shape_is_taken_exactly_when_its_input_fits(dims: list[int]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deploykit.environment.available_memory", lambda: FREE)
        text = ",".join(map(str, dims))
        if math.prod(dims) * 4 <= FREE:
            assert parse_shape(text) == tuple(dims)
        else:
            with pytest.raises(InputError, match="for the float32 input alone"):
                parse_shape(text)


def test_unknown_free_memory_refuses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: None)
    assert parse_shape("64,3,100000,100000") == (64, 3, 100000, 100000)
