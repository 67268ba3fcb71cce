"""deploykit keeps ONNX Runtime's and OpenVINO's usage telemetry off (deploykit.environment.runtime_telemetry_off):
no file in $TMPDIR or the home folder that the user did not ask for, no event sent, and a user's own setting
wins. Checked from outside, on a real build that imports both runtimes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from deploykit.environment import RUNTIME_TELEMETRY
from tests.fixtures.user_models import tiny_segmenter


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", RUNTIME_TELEMETRY)}
    for name in ("home", "tmp"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {**env, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"), **extra}


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")
def test_a_build_leaves_nothing_in_the_temporary_or_home_folder(tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(tiny_segmenter(), (torch.randn(1, 3, 32, 32),), str(model), dynamo=False,
                          input_names=["input"], output_names=["output"])
    for backend, out in (("onnxruntime", "tiny.ort.onnx"), ("openvino", "tiny.xml")):
        subprocess.run([sys.executable, "-m", "deploykit", "build-engine", str(model), "--backend", backend,
                        "-o", str(tmp_path / out)], check=True, capture_output=True, env=_env(tmp_path))
    left = [p.relative_to(tmp_path) for p in (tmp_path / "home").rglob("*")]
    left += [p.relative_to(tmp_path) for p in (tmp_path / "tmp").rglob("*")]
    assert left == []  # ONNX Runtime 1.32 writes tmp/.ses and home/.cache/Microsoft, OpenVINO home/intel


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, "1 True"),
    ({"ORT_DISABLE_TELEMETRY": "0"}, "0 True"),  # the user's own choice stands
    ({RUNTIME_TELEMETRY: "1"}, "None False"),  # deploykit leaves both as they ship
])
def test_the_switch_is_set_before_the_runtimes_load_and_a_users_setting_wins(
        tmp_path: Path, extra: dict[str, str], expected: str) -> None:
    probe = ("import os, sys; from deploykit.environment import runtime_telemetry_off; runtime_telemetry_off(); "
             "print(os.environ.get('ORT_DISABLE_TELEMETRY'), sys.modules.get('openvino_telemetry', 0) is None)")
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                            env=_env(tmp_path, **extra))
    assert result.stdout.split() == expected.split()

