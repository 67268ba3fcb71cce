"""Every numeric option of every command has a documented range, checked before any work (issue 18, item 5).

The options are found by walking the click commands, so an option added later is held to the same rule the
moment it exists: its type is click.IntRange or a finite float range with at least one bound, --help shows the
range, and a value outside it (or nan / inf) is refused on parsing, with exit status 2 and nothing run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.commands._options import CpuCount, FiniteFloatRange
from deploykit.environment import usable_cpus

# The least each command needs to get past argument parsing (nothing here has to exist: a range is checked
# while parsing, before the command runs).
BASE = {
    "export": ["m", "-o", "x.onnx"],
    "build-engine": ["m.onnx", "-o", "x.onnx"],
    "parity": ["a", "b"],
    "bench run": ["t"],
    "bench kernels": [],
    "deploy": ["m", "--out", "o"],
    "package": ["a.onnx", "--triton", "--out", "r"],
    "serve": ["a.onnx"],
    "lint": ["m.onnx"],
    "doctor": [],
    "models": [],
}


def commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """Every command, as --help lists them (the CLI loads each command's module when it is asked for)."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def numeric_options() -> list[tuple[str, click.Option]]:
    return [(name, param) for name, command in commands() for param in command.params
            if isinstance(param, click.Option)
            and isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))]


NUMERIC = numeric_options()


def test_the_walk_finds_the_commands_and_their_numeric_options() -> None:
    assert {name for name, _ in commands()} == set(BASE)
    assert len(NUMERIC) >= 25  # threads, durations, counts, tolerances, Triton's batching ...
    assert not [p for _, c in commands() for p in c.params
                if isinstance(p, click.Argument) and isinstance(p.type, click.types.IntParamType)]


@pytest.mark.parametrize("command, option", NUMERIC, ids=[f"{c}:{o.opts[0]}" for c, o in NUMERIC])
def test_every_numeric_option_has_a_range_shown_in_help(command: str, option: click.Option) -> None:
    kind = option.type
    assert isinstance(kind, click.types._NumberRangeBase), f"{command} {option.opts[0]} has no range"
    assert kind.min is not None or kind.max is not None
    if isinstance(kind, click.types.FloatParamType):
        assert isinstance(kind, FiniteFloatRange), f"{command} {option.opts[0]} accepts nan and inf"
    help_text = CliRunner().invoke(cli, [*command.split(), "--help"]).output
    assert kind._describe_range() in " ".join(help_text.split()), help_text


def _outside(kind: click.types._NumberRangeBase) -> list[str]:
    """Values just outside each bound, and the non-finite ones for floats."""
    step = 1 if isinstance(kind, click.types.IntParamType) else 1e-9
    values = []
    if kind.min is not None:
        values.append(kind.min if kind.min_open else kind.min - step)
    if kind.max is not None:
        values.append(kind.max if kind.max_open else kind.max + step)
    words = [str(v) if isinstance(v, int) or not math.isfinite(v) else repr(float(v)) for v in values]
    return words + (["nan", "inf", "-inf"] if isinstance(kind, click.types.FloatParamType) else [])


@pytest.mark.parametrize("command, option", NUMERIC, ids=[f"{c}:{o.opts[0]}" for c, o in NUMERIC])
def test_values_outside_the_range_are_refused_before_any_work(command: str, option: click.Option,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    target = next(c for name, c in commands() if name == command)
    monkeypatch.setattr(target, "callback", lambda **_kw: ran.append(command))
    assert isinstance(option.type, click.types._NumberRangeBase)
    for value in _outside(option.type):
        result = CliRunner().invoke(cli, [*command.split(), *BASE[command], option.opts[0], value])
        assert result.exit_code == 2, (value, result.output)
        assert option.opts[0] in result.stderr and "Traceback" not in result.output, result.stderr
    assert not ran


def test_values_inside_the_range_reach_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks refuse only what is outside: the bound itself (where closed) passes to the command."""
    for command, option in NUMERIC:
        kind = option.type
        assert isinstance(kind, click.types._NumberRangeBase)
        bound = kind.min if kind.min is not None and not kind.min_open else kind.max
        if bound is None or (bound == kind.max and kind.max_open):
            continue
        seen: list[object] = []
        target = next(c for name, c in commands() if name == command)
        monkeypatch.setattr(target, "callback", lambda _seen=seen, _name=option.name, **kw: _seen.append(kw[_name]))
        result = CliRunner().invoke(cli, [*command.split(), *BASE[command], option.opts[0], str(bound)])
        assert result.exit_code == 0 and seen == [bound], (command, option.opts[0], result.output)


def test_thread_and_instance_counts_stop_at_this_machines_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A count that takes a CPU per unit (threads, served instances) is refused above the CPUs this process may
    use, naming them: `bench --threads 99999` once started 12,354 threads before anything could stop it."""
    counted = {(name, option.opts[0]) for name, option in NUMERIC if isinstance(option.type, CpuCount)}
    assert counted == {("bench run", "--threads"), ("bench kernels", "--threads"), ("build-engine", "--threads"),
                       ("deploy", "--threads"), ("parity", "--threads"), ("serve", "--threads"),
                       ("serve", "--instances")}
    cpus = usable_cpus()
    for command, flag in sorted(counted):
        target = next(c for name, c in commands() if name == command)
        monkeypatch.setattr(target, "callback", lambda **_kw: pytest.fail("the command ran"))
        result = CliRunner().invoke(cli, [*command.split(), *BASE[command], flag, str(cpus + 1)])
        assert result.exit_code == 2 and f"more than the {cpus} CPUs this process may use" in result.stderr, \
            result.stderr


@pytest.mark.parametrize(("command", "option", "above"), [
    ("serve", "--max-batch", 2**31), ("serve", "--queue-delay-us", 2**64), ("serve", "--drain", 2**31),
    ("package", "--max-batch-size", 2**31), ("package", "--instances", 2**31),
    ("package", "--max-queue-delay-us", 2**64)])
def test_a_value_triton_cannot_hold_is_refused_naming_the_option(command: str, option: str, above: int) -> None:
    """Triton's config holds int32 batch sizes and counts and uint64 microseconds, its --exit-timeout-secs an
    int32: beyond those, serve failed after staging with Triton's usage text or "generated config.pbtxt is not
    valid", naming no option."""
    refused = CliRunner().invoke(cli, [command, *BASE[command], option, str(above)])
    assert refused.exit_code == 2 and f"Invalid value for '{option}'" in refused.output, refused.output
    largest = CliRunner().invoke(cli, [command, *BASE[command], option, str(above - 1)])
    assert "Invalid value" not in largest.output, largest.output  # on to the (missing) artifact


def test_every_time_option_stops_at_a_day() -> None:
    """--duration 1e308 (or --warmup, --bench-seconds) was taken and the command ran until killed."""
    timed = {(name, option.opts[0]) for name, option in NUMERIC
             if any(word in option.opts[0] for word in ("seconds", "duration", "warmup"))}
    assert timed == {("bench run", "--warmup"), ("bench run", "--duration"), ("deploy", "--bench-seconds")}
    for command, flag in timed:
        option = next(o for name, o in NUMERIC if name == command and o.opts[0] == flag)
        assert isinstance(option.type, FiniteFloatRange) and option.type.max == 86400, (command, flag)
