"""Checkpoints as the popular repositories' training scripts keep them (issue 18, item 7), written here with
torch.save in the layout each script saves: the weights beside optimizer and scheduler states, iteration
counters and the best validation score as a NumPy scalar (np.nanmean's float64), DataParallel's `module.`
prefix. They load with weights_only=True kept on (an allow-list, not arbitrary unpickling) and reproduce the
repository's model; anything else a file pickles is refused naming it and --trust-checkpoint.

The real files, saved by each repository's own training code, are compared in benchmarks/results/
checkpoint_oracle.md; these tests keep the structures those files have.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import fractions
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from deploykit.cli import cli
from deploykit.errors import CheckpointError, UserCodeError
from deploykit.zoo.backbones.vgg import scaled
from deploykit.zoo.checkpoints import convert_checkpoint, read_checkpoint
from deploykit.zoo.sources import load_model
from tests.fixtures import user_models
from tests.zoo import foreign, foreign_vgg

pytestmark = pytest.mark.usefixtures("two_threads")


def _trained_optimizer(model: nn.Module, groups: int = 1) -> torch.optim.SGD:
    """SGD with momentum after one step, so its state holds momentum buffers as a trainer's does."""
    params = list(model.parameters())
    split = len(params) // 2 if groups == 2 else len(params)
    param_groups = [{"params": params[:split], "lr": 0.001}] + ([{"params": params[split:]}] if groups == 2 else [])
    optimizer = torch.optim.SGD(param_groups, lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    model(torch.randn(2, 3, 33, 33)).mean().backward()
    optimizer.step()
    model.eval()
    return optimizer


def _score() -> np.float64:
    """A validation mIoU as the scripts compute it: np.nanmean over per-class IoUs."""
    return np.float64(np.nanmean(np.array([0.71, np.nan, 0.64])))


def vainf_best(model: nn.Module) -> dict[str, Any]:
    """main.py save_ckpt (best_<model>_<dataset>_os<N>.pth)."""
    optimizer = _trained_optimizer(model, groups=2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10000, gamma=0.1)  # --lr_policy step
    return {"cur_itrs": 30000, "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "best_score": _score()}


def jfzhang95_best(model: nn.Module, prefix: str = "") -> dict[str, Any]:
    """train.py -> Saver.save_checkpoint (checkpoint.pth.tar, copied to model_best.pth.tar). The script saves
    model.module.state_dict(); forks that save the DataParallel wrapper's state_dict carry `module.`."""
    optimizer = _trained_optimizer(model, groups=2)
    return {"epoch": 50, "state_dict": collections.OrderedDict((prefix + k, v) for k, v in model.state_dict().items()),
            "optimizer": optimizer.state_dict(), "best_pred": _score()}


def wkentaro_best(model: nn.Module) -> dict[str, Any]:
    """torchfcn.Trainer.validate (checkpoint.pth.tar, copied to model_best.pth.tar)."""
    optimizer = _trained_optimizer(model)
    return {"epoch": 3, "iteration": 4000, "arch": type(model).__name__.removeprefix("Wkentaro"),
            "optim_state_dict": optimizer.state_dict(), "model_state_dict": model.state_dict(),
            "best_mean_iu": _score()}


Case = tuple[str, Callable[[], nn.Module], Callable[[nn.Module], dict[str, Any]], dict[str, Any], str]
CASES: dict[str, Case] = {
    "vainf_deeplabv3plus_mobilenet": (
        "deeplabv3plus_mobilenetv2", lambda: foreign.VainfDeepLab("mobilenet"), vainf_best, {},
        "best_deeplabv3plus_mobilenet_voc_os16.pth"),
    "vainf_deeplabv3_mobilenet": (
        "deeplabv3plus_mobilenetv2", lambda: foreign.VainfDeepLab("mobilenet", output_stride=8, plus=False),
        vainf_best, {"output_stride": 8}, "best_deeplabv3_mobilenet_voc_os8.pth"),
    "vainf_deeplabv3plus_mobilenet_separable": (
        "deeplabv3plus_mobilenetv2", lambda: foreign.VainfDeepLab("mobilenet", separable=True), vainf_best, {},
        "best_deeplabv3plus_mobilenet_voc_os16.pth"),
    "jfzhang95_mobilenet": (
        "deeplabv3plus_mobilenetv2", lambda: foreign.JfDeepLab(backbone="mobilenet"), jfzhang95_best, {},
        "model_best.pth.tar"),
    "jfzhang95_mobilenet_dataparallel": (
        "deeplabv3plus_mobilenetv2", lambda: foreign.JfDeepLab(backbone="mobilenet"),
        lambda m: jfzhang95_best(m, "module."), {}, "model_best.pth.tar"),
    "wkentaro_fcn8s": (
        "fcn8s", lambda: foreign_vgg.WkentaroFCN8s(21, ch=lambda c: scaled(c, 0.0625)), wkentaro_best,
        {"width": 0.0625}, "model_best.pth.tar"),
    "wkentaro_fcn8s_at_once": (
        "fcn8s", lambda: foreign_vgg.WkentaroFCN8sAtOnce(21, ch=lambda c: scaled(c, 0.0625)), wkentaro_best,
        {"width": 0.0625}, "model_best.pth.tar"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_training_scripts_best_checkpoint_loads_with_weights_only_and_reproduces_the_model(
        case: str, tmp_path: Path) -> None:
    model_name, make, save, options, file_name = CASES[case]
    theirs = foreign.randomize(make())
    checkpoint = save(theirs)
    path = tmp_path / file_name
    torch.save(checkpoint, path)
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    numpy_modules = {"numpy", "numpy._core.multiarray", "numpy.core.multiarray"}  # NumPy 2 and 1 names
    assert unsafe and {name.rpartition(".")[0] for name in unsafe} <= numpy_modules
    with pytest.raises(Exception, match="Weights only load failed"):  # what a bare weights_only load says
        torch.load(path, weights_only=True)
    loaded = load_model(model_name, weights=path, options=options)
    assert loaded.load_report is not None and loaded.load_report.left_random == ()
    x = torch.randn(1, 3, 65, 65) if model_name != "fcn8s" else torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        error = float((loaded.module(x) - theirs(x)).abs().max())
    assert error <= 1e-4, error


def test_the_cli_exports_a_vainf_best_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "best_deeplabv3_mobilenet_voc_os16.pth"
    torch.save(vainf_best(foreign.randomize(foreign.VainfDeepLab("mobilenet", plus=False))), path)
    result = CliRunner().invoke(cli, ["export", "deeplabv3plus_mobilenetv2", "--weights", str(path), "--set",
                                      "output_stride=16", "--input-shape", "1,3,65,65", "--no-simplify",
                                      "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").is_file()


def _as_numpy_1(path: Path) -> None:
    """Rewrite the pickle's NumPy globals as NumPy 1 names them (numpy.core.multiarray.*)."""
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info, data in entries:
            out.writestr(info, data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                         if info.filename.endswith("data.pkl") else data)


def test_numpy_scalars_pickled_under_numpy_1_names_load(tmp_path: Path) -> None:
    path = tmp_path / "numpy1.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "best_pred": np.float64(0.5), "classes": np.arange(3)}, path)
    _as_numpy_1(path)
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    obj = read_checkpoint(path)
    assert obj["best_pred"] == 0.5 and type(obj["best_pred"]) is np.float64
    np.testing.assert_array_equal(obj["classes"], np.arange(3))


# --- what the allow-list does not cover -----------------------------------------------------------------------

@dataclass
class TrainingConfig:
    """A class of the training code, pickled beside the weights."""

    lr: float


class ExplodingConfig:
    def __init__(self) -> None:
        self.host = "gpu-node-3"

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise SystemExit("config from another machine")  # the line a user must see


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_an_unsafe_global_is_named_with_the_option_that_loads_it(legacy: bool, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "config": TrainingConfig(0.1)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert f"{__name__}.TrainingConfig" in message and "--trust-checkpoint" in message
    assert "not a file saved with torch.save" not in message
    assert read_checkpoint(path, trust=True)["config"].lr == 0.1


def test_trusted_unpickling_that_raises_is_the_users_and_a_missing_class_says_where(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"config": ExplodingConfig()}, path)
    with pytest.raises(UserCodeError, match=r"unpickling checkpoint ckpt\.pth .*raised SystemExit: config from "
                                            r"another machine \(.*test_training_checkpoints\.py:\d+\)"):
        read_checkpoint(path, trust=True)
    with zipfile.ZipFile(path) as src:  # the class renamed to one that does not exist here
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for entry, data in entries:
            out.writestr(entry, data.replace(b"ExplodingConfig", b"VanishedConfigX"))
    with pytest.raises(CheckpointError, match=r"not importable here.*run from the folder of the code that saved it"):
        read_checkpoint(path, trust=True)


def test_a_whole_pickled_model_loads_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "whole.pth"
    model = user_models.tiny_segmenter()
    torch.save({"model": model, "best": np.float64(0.3)}, path)
    runner = CliRunner()
    args = ["export", "tests.fixtures.user_models:tiny_segmenter", "--weights", str(path), "--input-shape",
            "1,3,32,32", "--no-simplify", "-o", str(tmp_path / "m.onnx")]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2 and "tests.fixtures.user_models.TinySegmenter" in refused.stderr
    assert "--trust-checkpoint" in refused.stderr and not (tmp_path / "m.onnx").exists()
    trusted = runner.invoke(cli, [*args, "--trust-checkpoint"])
    assert trusted.exit_code == 0, trusted.output


# --- properties over checkpoint contents --------------------------------------------------------------------

SAFE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_]).flatmap(
        lambda kind: st.integers(0, 100).map(kind))
    | st.integers(0, 4).map(lambda n: np.arange(n, dtype=np.float32))
    | st.integers(0, 4).map(lambda n: torch.zeros(n)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3).map(lambda d: argparse.Namespace(**d))
    | st.dictionaries(st.text(max_size=6), inner, max_size=3).map(collections.OrderedDict),
    max_leaves=8)
WRAPPERS = ("state_dict", "model_state", "model_state_dict", "model", "net", None)


def _weights() -> dict[str, torch.Tensor]:
    return dict(user_models.tiny_segmenter().state_dict())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in WRAPPERS), SAFE_VALUES,
                              max_size=5),
       wrapper=st.sampled_from(WRAPPERS), prefix=st.sampled_from(["", "module."]))
def test_any_mix_of_safe_values_beside_the_weights_loads_the_same_weights(
        extras: dict[str, Any], wrapper: str | None, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    weights = _weights()
    state = collections.OrderedDict((prefix + k, v) for k, v in weights.items())
    checkpoint: Any = {**extras, wrapper: state} if wrapper else state
    path = tmp_path_factory.mktemp("prop") / "ckpt.pth"
    torch.save(checkpoint, path)
    converted = convert_checkpoint(read_checkpoint(path), ())
    assert converted.state_dict.keys() == weights.keys()
    assert all(torch.equal(converted.state_dict[k], v) for k, v in weights.items())


UNSAFE_VALUES = st.sampled_from([TrainingConfig(0.5), Path("runs/exp1"), datetime.date(2024, 1, 1),
                                 fractions.Fraction(1, 3)])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in WRAPPERS), SAFE_VALUES,
                              max_size=3),
       unsafe=UNSAFE_VALUES, key=st.text(min_size=1, max_size=10).filter(lambda k: k not in WRAPPERS))
def test_anything_else_is_refused_naming_its_global_and_loads_when_trusted(
        extras: dict[str, Any], unsafe: Any, key: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("prop") / "ckpt.pth"
    torch.save({**extras, key: unsafe, "state_dict": _weights()}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert type(unsafe).__name__ in str(info.value) and "--trust-checkpoint" in str(info.value)
    assert read_checkpoint(path, trust=True)[key] == unsafe
