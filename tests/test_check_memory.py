"""deploykit.environment.check_memory: the one way every command refuses work beyond the memory available."""

from __future__ import annotations

import pytest

from deploykit.environment import check_memory
from deploykit.errors import InputError


def test_a_memory_shortfall_is_one_short_line_naming_the_work_the_estimate_and_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 2 * 10**9)
    check_memory(2 * 10**9, "a run", "give less")
    with pytest.raises(InputError) as refused:
        check_memory(10**300, "a run at 1x3x8x8", "give a smaller shape", "the inputs alone")
    message = str(refused.value)
    assert message == ("a run at 1x3x8x8 needs about 1e+291 GB (the inputs alone) and this machine has 2.0 GB "
                       "available; give a smaller shape"), message
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: None)
    check_memory(10**300, "a run", "give less")  # unknown memory refuses nothing
