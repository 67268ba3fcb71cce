"""`--set KEY=VALUE` values take the type of the option's default (as `deploykit models NAME` lists it): a value
of another kind is refused, naming the option, before the builder runs (decoder=maybe used to build a model with
a truthy string, num_classes=2.5 and width_multiplier=nan reached torch)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploykit.errors import ConfigConflict
from deploykit.zoo import list_models
from deploykit.zoo._registry import COUNTS, get_model_spec
from deploykit.zoo.sources import parse_option_value

PLAIN = [(name, option, get_model_spec(name).defaults.get(option, parameter.default))
         for name in list_models() for option, parameter in get_model_spec(name).options().items()
         if type(get_model_spec(name).defaults.get(option, parameter.default)) in (bool, int, float, str)]
texts = st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=10)


def _fits(value: Any, default: Any) -> bool:
    """Whether `value` (as --set parsed it) is of the kind of `default`, by the rule users read in the help."""
    if isinstance(default, bool):
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    if isinstance(default, int):
        return type(value) is int
    if isinstance(default, float):
        try:
            return not isinstance(value, bool) and math.isfinite(float(value))
        except (TypeError, ValueError):
            return False
    return isinstance(value, str)


@given(entry=st.sampled_from(PLAIN), text=st.one_of(texts, st.sampled_from(
    ["maybe", "2", "1", "0", "true", "False", "2.5", "8.0", "nan", "-inf", "1e3", "(1, 2)", "None", "'x'"])))
def test_a_set_value_of_another_kind_is_refused_before_the_builder_runs(entry: tuple[str, str, Any],
                                                                       text: str) -> None:
    name, option, default = entry
    value = parse_option_value(text)
    if _fits(value, default):
        return  # building a real model per example is the export tests' job
    with pytest.raises(ConfigConflict, match=f"--set {option} takes "):
        get_model_spec(name).build(**{option: value})


def test_the_zoo_has_options_of_every_plain_kind() -> None:
    assert {type(default) for _, _, default in PLAIN} == {bool, int, float, str}


COUNTED = [(name, option) for name, option, _ in PLAIN if option in COUNTS]


@given(entry=st.sampled_from(COUNTED), value=st.integers(max_value=0))
def test_a_count_below_one_is_refused_before_the_builder_runs(entry: tuple[str, str], value: int) -> None:
    """num_classes=-1 reached torch ("negative dimension", exit 3), 0 a ZeroDivisionError in DilatedNet's context."""
    name, option = entry
    with pytest.raises(ConfigConflict, match=f"--set {option} takes a positive integer"):
        get_model_spec(name).build(**{option: value})


def test_every_zoo_model_counts_classes() -> None:
    assert {name for name, option in COUNTED if option == "num_classes"} >= set(list_models()) - {"msinet"}
