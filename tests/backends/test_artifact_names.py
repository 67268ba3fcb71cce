"""An artifact's file name says its backend: build-engine refuses a name another backend's files use (x.plan for
ONNX Runtime), and for OpenVINO, whose .bin is named after the .xml, any suffix but its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploykit.backends.base import BACKENDS, COMPILERS
from deploykit.errors import ConfigConflict

OWNED = sorted({s for b in BACKENDS.values() for s in (*b.suffixes, *b.companions)})
stems = st.text(st.characters(categories=["L", "N"], include_characters="_-"), min_size=1, max_size=12)


@given(name=st.sampled_from(COMPILERS), stem=stems, suffix=st.sampled_from(OWNED))
def test_a_suffix_is_accepted_exactly_when_it_is_the_backends_own(name: str, stem: str, suffix: str) -> None:
    backend = BACKENDS[name]
    out = Path(stem + suffix)
    if suffix in backend.suffixes:
        backend.check_artifact_name(out)
        return
    with pytest.raises(ConfigConflict, match=f"name the {backend.title} {backend.artifact} "):
        backend.check_artifact_name(out)


@given(stem=stems, suffix=st.sampled_from(["", ".model", ".int8", ".bak"]))
def test_a_suffix_nobody_uses_is_refused_only_where_companions_are_named_after_it(stem: str, suffix: str) -> None:
    for name in COMPILERS:
        backend = BACKENDS[name]
        if backend.companions:  # OpenVINO: x.model would put its weights in x.bin, beside someone else's
            with pytest.raises(ConfigConflict, match=r"\.xml"):
                backend.check_artifact_name(Path(stem + suffix))
        else:
            backend.check_artifact_name(Path(stem + suffix))
