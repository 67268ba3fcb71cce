"""A parity run whose models' activations, outputs and their comparison cannot fit in memory is refused before
any target runs (exit 2), not left to the kernel's OOM killer (a batch of 65536 small images was killed with no
word, exit 137)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
import pytest

from deploykit.errors import InputError
from deploykit.graph.macs import arena_bytes
from deploykit.parity import memory
from deploykit.zoo.sources import load_model
from tests.fixtures.graphs import relu_chain


def _target(path: Path | None, *, torch: bool = False) -> Any:
    return SimpleNamespace(onnx_path=path, loaded=object() if torch else None)


def test_sessions_and_the_pytorch_reference_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chain.onnx"
    onnx.save(relu_chain(3), str(path))
    shape = (64, 4, 5, 5)
    session = arena_bytes(path, shape)
    values = 64 * 4 * 5 * 5  # the chain's output is shaped like its input
    # the reference (PyTorch, counted like the first graph) and two ONNX Runtime sessions; the input batch as
    # float32; three targets' float32 outputs held at once, and the comparison's float64 arrays
    targets = [_target(None, torch=True), _target(path), _target(path)]
    needed = 3 * session + 4 * values + values * (3 * 4 + 48)
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: needed)
    memory.check_run_fits(targets, shape)
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: needed - 1)
    with pytest.raises(InputError, match=r"a run at 64x4x5x5 needs about .*their outputs and the comparison .* "
                                         r"give a smaller batch or shape"):
        memory.check_run_fits(targets, shape)


def test_nothing_is_refused_where_memory_or_the_graphs_are_unknown(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 1)
    memory.check_run_fits([_target(None, torch=True)], (1, 3, 8, 8))  # no ONNX graph to count
    memory.check_run_fits([_target(tmp_path / "missing.onnx")], (1, 3, 8, 8))  # an estimate that fails
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: None)
    path = tmp_path / "chain.onnx"
    onnx.save(relu_chain(2), str(path))
    memory.check_run_fits([_target(path)], (1, 4, 5, 5))


def test_a_run_of_pytorch_models_alone_is_counted_by_their_forward_at_a_smaller_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `parity tiny tiny --input-shape 1,3,16384,16384` had no graph to count and ran into an allocation failure
    # (under overcommit: the OOM killer) while preparing 3 GB images
    tiny = load_model("tests.fixtures.user_models:tiny_segmenter")
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 10**9)
    targets = [SimpleNamespace(onnx_path=None, loaded=tiny), SimpleNamespace(onnx_path=None, loaded=tiny)]
    memory.check_run_fits(targets, (1, 3, 256, 256))  # no larger than the probe: nothing measured
    with pytest.raises(InputError, match=r"a run at 1x3x4096x4096 needs about .*the models' activations"):
        memory.check_run_fits(targets, (1, 3, 4096, 4096))
