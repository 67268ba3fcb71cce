"""deploy on untrained weights says so first and in its report (issue 12, item 3): task gates on random
weights measure ties between near-equal scores, not quality; and on --weights, what export says of them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.pipeline.deploy import DeployOptions, _Run, untrained_note
from tests.fixtures.user_models import TinySegmenter

USER = "tests.fixtures.user_models:tiny_segmenter"


def test_the_note_names_zoo_and_user_models_and_is_empty_with_weights() -> None:
    assert untrained_note(DeployOptions(source="deeplabv3plus", out=Path("d"))).startswith(
        "untrained weights: no --weights given, so deeplabv3plus keeps its builder's random initialisation")
    assert "unless the factory loads trained weights itself" in untrained_note(DeployOptions(source=USER,
                                                                                              out=Path("d")))
    assert untrained_note(DeployOptions(source="deeplabv3plus", out=Path("d"), weights="w.pt")) == ""


def test_deploy_on_random_weights_warns_first_and_in_the_report(tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = CliRunner().invoke(cli, ["deploy", USER, "--input-shape", "1,3,64,64", "--precisions", "fp32",
                                      "--out", str(out), "--bench-seconds", "0.1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].startswith("… warning: untrained weights: no --weights given")
    assert "> Untrained weights: no --weights given" in (out / "report.md").read_text(encoding="utf-8")
    assert json.loads((out / "summary.json").read_text())["weights_note"].startswith("untrained weights")



def test_deploy_says_what_export_says_of_the_weights(tmp_path: Path) -> None:
    """The notes on --weights (tensors --allow-partial left random, EMA weights not taken, a renamed prefix, an
    option the checkpoint does not record) were said by export only: deploy took them in silence."""
    torch.manual_seed(0)
    state = {f"model.{k}": v for k, v in TinySegmenter().state_dict().items() if k.startswith("stem.")}
    weights = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, weights)
    said: list[str] = []
    opts = DeployOptions(source=USER, out=tmp_path / "d", weights=str(weights), allow_partial=True,
                         input_shape=(1, 3, 64, 64))
    loaded = _Run(opts, backend=None, backend_note="", say=said.append, racer=None).loaded  # type: ignore[arg-type]
    assert loaded.load_report is not None
    assert "weights: the weights under 'model.' taken" in said
    assert any(s.startswith("weights left 4 tensors at their initialisation (--allow-partial): context.0.bias")
               for s in said), said
