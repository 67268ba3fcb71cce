"""The shapes an export is verified on."""

from __future__ import annotations

from deploykit.export.verification_shapes import verification_shapes


def test_verification_shapes_keep_the_multiple() -> None:
    assert verification_shapes((1, 3, 512, 512), True, 1) == [(1, 3, 512, 512), (2, 3, 520, 528)]
    assert verification_shapes((1, 3, 512, 512), True, 16) == [(1, 3, 512, 512), (2, 3, 528, 544)]
    assert verification_shapes((1, 3, 60, 60), True, 12) == [(1, 3, 60, 60), (2, 3, 72, 84)]
    assert verification_shapes((1, 3, 64, 64), False, 16) == [(1, 3, 64, 64)] * 2
