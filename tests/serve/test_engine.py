"""The serving engine's preconditions fail with what to install, before anything starts."""

from __future__ import annotations

import importlib.util
import sysconfig
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.errors import BackendUnavailable
from deploykit.serve import engine


def test_without_the_serve_extra_the_message_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"deploykit\[serve\]"):
        engine.find_bundle()
    result = CliRunner().invoke(cli, ["serve", "model.onnx"])
    assert result.exit_code == 2 and "deploykit[serve]" in result.output


def test_numpy_2_is_refused_before_the_stub_reads_wrong_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(BackendUnavailable, match="numpy < 2"):
        engine.check_runtime()


def test_a_python_without_a_shared_libpython_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "__version__", "1.26.4")
    real = sysconfig.get_config_var

    def static(name: str) -> Any:
        return 0 if name == "Py_ENABLE_SHARED" else real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", static)
    with pytest.raises(BackendUnavailable, match="enable-shared"):
        engine.check_runtime()
