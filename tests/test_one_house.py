"""One table per axis: no backend, precision, metric or task name is compared with a string literal outside its
own entry (deploykit.backends.base.BACKENDS and the backend's folder, deploykit.precision.table.PRECISIONS,
deploykit.metrics.table.METRICS, deploykit.types.TASKS), and the tables are complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploykit.backends.base import BACKENDS, BENCH_CHOICES, resolve_backend
from deploykit.metrics.table import METRICS, parse_condition
from deploykit.precision.table import PRECISIONS
from deploykit.types import TASKS

PACKAGE = Path(__file__).resolve().parents[1] / "deploykit"
NAMES = {
    "backend": (set(BACKENDS) | set(BENCH_CHOICES), {"backends/base.py"}),
    "precision": (set(PRECISIONS), {"precision/table.py"}),
    "metric": (set(METRICS), {"metrics/table.py"}),
    "task": (set(TASKS), {"types.py"}),
}


def _comparisons(names: set[str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    literal = rf"""["'](?:{alternatives})["']"""
    # name == "x", "x" != name, name in ("x", ...), name not in {"x"}
    return re.compile(rf"""(?:[=!]=\s*{literal})|(?:{literal}\s*[=!]=)|(?:\bin\s*[(\[{{]\s*{literal})""")


def _own_folder(relative: str, name: str) -> bool:
    entry = BENCH_CHOICES.get(name) or BACKENDS.get(name)
    return entry is not None and relative.startswith(f"backends/{entry.name}")


def _offences(axis: str) -> list[str]:
    names, own = NAMES[axis]
    pattern = _comparisons(names)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in own:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in pattern.finditer(line):
                name = re.findall(r"""["']([^"']+)["']""", match.group(0))[0]
                if axis == "backend" and _own_folder(relative, name):
                    continue  # a backend's own folder may name itself
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize("axis", sorted(NAMES))
def test_no_name_is_compared_with_a_literal_outside_its_entry(axis: str) -> None:
    assert _offences(axis) == []


def test_the_grep_finds_what_it_should() -> None:
    pattern = _comparisons({"tensorrt", "int8"})
    for line in ('if backend == "tensorrt":', "if 'int8' != p:", 'x in ("int8", "fp16")'):
        assert pattern.search(line), line
    assert not pattern.search('lint_model(model, target="tensorrt")')


def test_every_backend_entry_names_a_module_with_the_protocol() -> None:
    for entry in BACKENDS.values():
        module = entry.load()
        assert callable(module.availability), entry.name
        if not entry.reference:
            for name in ("compile", "open", "preflight", "as_deployed"):
                assert callable(getattr(module, name)), f"{entry.name}.{name}"
            assert entry.suffix and entry.suffixes and entry.servable, entry.name


def test_auto_takes_the_ready_backend_of_highest_rank() -> None:
    chosen, note = resolve_backend(None)
    ready = [b for b in BACKENDS.values() if b.auto_rank and b.availability().ready]
    assert chosen is max(ready, key=lambda b: b.auto_rank) and note


def test_every_precision_has_gates_for_every_task_metric_with_a_bound() -> None:
    bounded = {m.name for m in METRICS.values() if m.task is not None and m.perfect is not None and m.default_gate}
    for entry in PRECISIONS.values():
        gated = {parse_condition(g).metric.name for g in entry.gates}
        assert bounded <= gated, entry.name


def test_one_parser_serves_gates_and_budgets() -> None:
    from deploykit.parity.gates import parse_gate
    from deploykit.precision.budget import parse_term

    assert parse_gate("logits:mIoU>=0.9").metric == "miou"
    assert parse_term("mIoU>=0.9", "segmentation").metric == "miou"
    with pytest.raises(ValueError, match="unknown metric"):
        parse_condition("accuracy>=0.9")


def test_every_metric_entry_computes_itself() -> None:
    for metric in METRICS.values():
        assert (metric.compute is None) != (metric.derive is None), metric.name  # one way to get its value
        assert metric.task is None or metric.task in TASKS, metric.name


def test_availability_is_probed_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploykit.backends import base

    entry = next(b for b in BACKENDS.values() if not b.reference)
    module = entry.load()
    calls: list[int] = []
    real = module.availability
    monkeypatch.setattr(base, "_PROBED", {})
    monkeypatch.setattr(module, "availability", lambda: calls.append(1) or real())
    first, again = entry.availability(), entry.availability()
    assert first is again and calls == [1]
    base.forget_availability()
    entry.availability()
    assert calls == [1, 1]


def test_choice_lists_and_defaults_come_from_the_tables() -> None:
    from click.testing import CliRunner

    from deploykit.cli import cli

    runner = CliRunner()
    build = runner.invoke(cli, ["build-engine", "--help"]).output
    for entry in PRECISIONS.values():
        assert entry.flag in build and (not entry.keep_option or f"--{entry.keep_option.replace('_', '-')}" in build)
    for entry in BACKENDS.values():
        for option in entry.options_group():  # each backend's own group, from its entry
            assert option.flag in build, option.flag
    bench = " ".join(runner.invoke(cli, ["bench", "run", "--help"]).output.split())
    assert all(choice in bench for choice in BENCH_CHOICES)
    parity = " ".join(runner.invoke(cli, ["parity", "--help"]).output.split())
    assert all(f"{p.name} {p.localize_tolerance:g}" in parity for p in PRECISIONS.values())
