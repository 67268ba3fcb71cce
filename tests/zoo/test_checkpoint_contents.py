"""What a checkpoint holds, as users have it (deploykit.zoo.checkpoints): a state_dict under a key of any name,
NumPy arrays for tensors, several state_dicts (a GAN's), tensors load_state_dict cannot take (meta, sparse,
quantized, complex or integer weights for float parameters), and weights of another configuration: each loads,
or is refused naming what it holds and how to fix it, never as the model's own error (a zoo model's was exit 3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deploykit.errors import CheckpointError
from deploykit.zoo.checkpoints import convert_checkpoint, load_state_dict_strict, read_checkpoint
from tests.fixtures.user_models import tiny_segmenter

WEIGHTS = tiny_segmenter().state_dict()
keys = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(key=keys, others=st.dictionaries(keys, st.integers() | st.text(max_size=4) | st.none(), max_size=3),
       as_numpy=st.booleans())
def test_one_state_dict_under_any_key_loads_the_same_weights(key: str, others: dict[str, object],
                                                            as_numpy: bool) -> None:
    state = {k: v.numpy() if as_numpy else v for k, v in WEIGHTS.items()}
    converted = convert_checkpoint({**{k: v for k, v in others.items() if k != key}, key: state}, ())
    model = tiny_segmenter(num_classes=3)
    load_state_dict_strict(model, converted.state_dict, allow_partial=False, source=converted.source)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, WEIGHTS[name])


def test_numpy_arrays_load_as_tensors_and_several_state_dicts_are_named() -> None:
    converted = convert_checkpoint({k: v.numpy() for k, v in WEIGHTS.items()}, ())
    assert all(torch.equal(converted.state_dict[k], v) for k, v in WEIGHTS.items())
    assert "under 'network' taken" in convert_checkpoint({"network": WEIGHTS, "epoch": 1}, ()).note
    with pytest.raises(CheckpointError, match=r"several state_dicts, under 'generator', 'discriminator'; save the "
                                              r"one to deploy alone with torch.save\(checkpoint\['generator'\]"):
        convert_checkpoint({"generator": WEIGHTS, "discriminator": WEIGHTS}, ())


@pytest.mark.parametrize(("obj", "held"), [
    ({"epoch": 3, "scores": [0.5]}, "but a dict of 'epoch' (an int), 'scores' (a list)"),
    ({**WEIGHTS, "epoch": 3}, "but a dict of 11 tensors and 'epoch' (an int)"),
    ([WEIGHTS["head.weight"]], "but a list"), ({}, "but an empty dict"), (None, "but None"),
])
def test_a_checkpoint_without_a_state_dict_says_what_it_holds(obj: object, held: str) -> None:
    with pytest.raises(CheckpointError, match="holds no state_dict") as info:
        convert_checkpoint(obj, ())
    assert held in str(info.value)


UNUSABLE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "on the meta device": lambda t: torch.empty_like(t, device="meta"),
    "sparse": lambda t: t.to_sparse(),
    "quantized": lambda t: torch.quantize_per_tensor(t.float(), 0.1, 0, torch.qint8),
    "not floating point where the model's are (torch.complex64)": lambda t: t.to(torch.complex64),
    "not floating point where the model's are (torch.int64)": lambda t: t.to(torch.int64),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's deprecation of quantized tensors
@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(UNUSABLE)), which=st.sets(st.sampled_from(sorted(WEIGHTS)), min_size=1))
def test_tensors_the_model_cannot_take_are_refused_naming_them_and_the_fix(kind: str, which: set[str]) -> None:
    floats = {k for k in which if WEIGHTS[k].is_floating_point()}
    if not floats:
        return
    state = {k: UNUSABLE[kind](v) if k in floats else v for k, v in WEIGHTS.items()}
    with pytest.raises(CheckpointError, match="does not fit the model") as info:
        load_state_dict_strict(tiny_segmenter(), state, allow_partial=False, source="state_dict")
    assert f"{kind}" in str(info.value) and sorted(floats)[0] in str(info.value) and "(save " in str(info.value)


def test_weights_of_another_class_count_or_width_say_how_to_build_the_model() -> None:
    with pytest.raises(CheckpointError, match=r"classifier head has 5 outputs and the model's 3: build the model "
                                              r"with 5 classes \(e.g. --set num_classes=5\)"):
        load_state_dict_strict(tiny_segmenter(), tiny_segmenter(num_classes=5).state_dict(), allow_partial=False,
                               source="state_dict")
    with pytest.raises(CheckpointError, match="another configuration of the model: build it with the options"):
        load_state_dict_strict(tiny_segmenter(), tiny_segmenter(width=16).state_dict(), allow_partial=False,
                               source="state_dict")
    with pytest.raises(CheckpointError, match=r"unexpected: extra\.weight; is it this model's checkpoint\?"):
        load_state_dict_strict(tiny_segmenter(), {**WEIGHTS, "extra.weight": torch.zeros(2)}, allow_partial=False,
                               source="state_dict")


# tracing a model with BatchNorm warns about its batch-size check; the archive is all this test wants of it
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(("save", "named"), [
    (lambda p: torch.jit.save(torch.jit.script(tiny_segmenter()), p), "a TorchScript archive (torch.jit.save)"),
    (lambda p: torch.jit.save(torch.jit.trace(tiny_segmenter(), torch.randn(1, 3, 8, 8)), p),
     "a TorchScript archive"),
    (lambda p: np.savez(p, **{k: v.numpy() for k, v in WEIGHTS.items()}), "a NumPy .npz archive"),
    (lambda p: np.save(p, np.zeros(3)), "a NumPy .npy array"),
])
def test_an_archive_of_another_kind_is_named_with_the_conversion(tmp_path: Path, save: Callable[[Path], None],
                                                                 named: str) -> None:
    path = tmp_path / "model.pt"
    with path.open("wb") as handle:  # np.save appends a suffix to a path, not to an open file
        save(handle)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert f"it is {named}" in str(info.value)
    assert "is it complete" not in str(info.value) and "weights_only" not in str(info.value)
