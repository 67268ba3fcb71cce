"""Checkpoints whose keys carry what wrapped the model in training (deploykit.zoo.checkpoints.align_keys):
torch.compile's `_orig_mod.`, a Lightning module's `model.` beside a loss's own weights, DataParallel, a wrapper
in the user's factory; and EMA weights beside the model's. Taken only where they fit exactly; anything else is
still refused naming the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deploykit.errors import CheckpointError
from deploykit.zoo.checkpoints import load_state_dict_strict
from deploykit.zoo.sources import load_model
from tests.fixtures.user_models import TinySegmenter

USER = "tests.fixtures.user_models:tiny_segmenter"
State = dict[str, torch.Tensor]


def _compiled(state: State) -> State:
    return {f"_orig_mod.{k}": v for k, v in state.items()}


def _compiled_submodule(state: State) -> State:
    return {k.replace("stem.", "stem._orig_mod.", 1): v for k, v in state.items()}


def _data_parallel(state: State) -> State:
    return {f"module.{k}": v for k, v in state.items()}


def _lightning(state: State) -> State:
    return {**{f"model.{k}": v for k, v in state.items()}, "criterion.weight": torch.ones(3)}


def _lightning_net(state: State) -> State:
    return {f"net.{k}": v for k, v in state.items()}


WRAPPERS = {"compile": _compiled, "compiled submodule": _compiled_submodule, "DataParallel": _data_parallel,
            "Lightning": _lightning, "Lightning net": _lightning_net}


def _trained(seed: int) -> State:
    torch.manual_seed(seed)
    model = TinySegmenter()
    for p in model.parameters():
        p.data.normal_()
    return model.state_dict()


def _same(module: nn.Module, state: State, prefix: str = "") -> bool:
    own = module.state_dict()
    return all(torch.equal(own[prefix + k], v) for k, v in state.items())


@settings(max_examples=30, deadline=None)
@given(chain=st.lists(st.sampled_from(sorted(WRAPPERS)), min_size=1, max_size=2, unique=True),
       seed=st.integers(0, 2**16))
def test_a_wrapped_models_checkpoint_loads_its_exact_weights(chain: list[str], seed: int) -> None:
    state = _trained(seed)
    saved = state
    for name in chain:
        saved = WRAPPERS[name](saved)
    model = TinySegmenter()
    report = load_state_dict_strict(model, saved, allow_partial=False, source="state_dict")
    assert _same(model, state) and report.note


@settings(max_examples=20, deadline=None)
@given(wrapper=st.sampled_from(sorted(WRAPPERS)), damage=st.sampled_from(["drop", "rename", "reshape"]),
       index=st.integers(0, 9))
def test_a_wrapped_checkpoint_that_does_not_fit_is_refused_naming_the_key(wrapper: str, damage: str,
                                                                           index: int) -> None:
    state = _trained(0)
    key = sorted(k for k in state if not k.endswith("num_batches_tracked"))[index % 9]
    if damage == "drop":
        del state[key]
    elif damage == "rename":
        state[key + "_old"] = state.pop(key)
    else:
        state[key] = torch.zeros(7, *state[key].shape)
    with pytest.raises(CheckpointError, match="does not fit the model") as error:
        load_state_dict_strict(TinySegmenter(), WRAPPERS[wrapper](state), allow_partial=False, source="state_dict")
    assert f"{key}_old" in str(error.value) if damage == "rename" else key in str(error.value)


def test_another_architectures_checkpoint_is_named_by_its_keys_not_by_a_prefix_that_leaves_fewer_over() -> None:
    """Its keys share the head's names with the model and carry many of their own; taking the ones under a
    prefix ('classifier.') left 2 over instead of 10, and the message then named 'bias, weight' only."""
    state = _trained(0)
    foreign = {"head.weight": state["head.weight"], "head.bias": state["head.bias"],
               **{f"features.{i}.weight": torch.zeros(4) for i in range(10)},
               "classifier.weight": torch.zeros(3), "classifier.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError) as error:
        load_state_dict_strict(TinySegmenter(), foreign, allow_partial=False, source="state_dict")
    message = str(error.value)
    assert "taken" not in message and "unexpected: classifier.bias, classifier.weight, features.0.weight" in message


def test_a_checkpoint_without_the_prefix_of_the_users_wrapper_loads() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = TinySegmenter()

    state = _trained(1)
    model = Wrapper()
    report = load_state_dict_strict(model, state, allow_partial=False, source="state_dict")
    assert _same(model, state, "inner.") and "'inner.'" in report.note


@pytest.mark.parametrize("layout", ["model_ema", "state_dict_ema", "ema"])
def test_ema_weights_beside_the_models_are_named_and_alone_are_taken(layout: str, tmp_path: Path) -> None:
    weights, ema = _trained(2), _trained(3)
    torch.save({"model" if layout != "state_dict_ema" else "state_dict": weights, layout: ema}, tmp_path / "both.pt")
    loaded = load_model(USER, weights=tmp_path / "both.pt")
    assert _same(loaded.module, weights) and loaded.load_report is not None
    assert f"EMA weights under {layout!r}, not taken" in loaded.load_report.note
    torch.save({layout: ema, "epoch": 3}, tmp_path / "ema.pt")
    assert _same(load_model(USER, weights=tmp_path / "ema.pt").module, ema)
