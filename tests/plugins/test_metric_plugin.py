"""A metric from outside: a package with an entry point `deploykit.metrics` (here the mean Dice coefficient of
the label maps) is computed by parity on every segmentation output, shown in its table, gated with --gate and
usable as an --accuracy-budget term, without a line of deploykit touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugins.install import install, run_commands

DICE = '''
    """Mean Dice over the classes present in either label map, dataset-level (the sums over every input)."""
    import numpy as np

    from deploykit.metrics.table import Metric
    from deploykit.metrics.tasks import summed


    def mean_dice(parts):
        counts = summed(parts)
        present = counts.union > 0
        both = counts.intersection[present]
        return float(np.mean(2 * both / (counts.union[present] + both)))


    DICE = Metric("dice", "segmentation", True, "Dice", 1.0, budget=True, default_gate=False,
                  compute=lambda pair: pair.class_counts, aggregate=mean_dice)
'''
MODEL = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("dice"), "deploykit-dice", "deploykit.metrics",
                   'dice = "deploykit_dice:DICE"', {"__init__": DICE})


def test_an_installed_metric_is_computed_gated_and_budgeted(site: Path, tmp_path: Path) -> None:
    commands = [
        ["export", MODEL, "--input-shape", "1,3,32,32", "-o", "tiny.onnx"],
        ["parity", MODEL, "tiny.onnx", "--random", "2", "--json", "--gate", "dice>=0.99"],
        ["parity", MODEL, "tiny.onnx", "--random", "2", "--gate", "dice<0.5"],
        ["build-engine", "tiny.onnx", "--fp16", "--calib-data", "synthetic", "--calib-n", "8", "--holdout", "2",
         "--accuracy-budget", "dice>=0.5", "-o", "tiny.fp16.ort.onnx", "--json"],
    ]
    export, passing, failing, budget = run_commands(site, tmp_path, commands)
    assert export["exit_code"] == 0 and passing["exit_code"] == 0, passing["log"]
    output = json.loads(passing["output"])["candidates"][0]["outputs"][0]
    assert output["metrics"]["dice"] == pytest.approx(1.0)  # the same graph: identical labels
    assert {"gate": "dice>=0.99", "value": output["metrics"]["dice"], "passed": True} in output["gates"]
    assert failing["exit_code"] != 0 and "dice" in failing["log"] and "Dice" in failing["log"]  # gate and column
    assert budget["exit_code"] == 0, budget["log"]
    reached = json.loads(budget["output"])["report"]["budget"]["reached"]
    assert reached["dice"] >= 0.5
