"""The CLI's progress drawing: tqdm bars on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from deploykit.commands._options import ProgressDrawer
from deploykit.types import Progressed


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_per_what_with_count_and_time_left() -> None:
    stream = Terminal()
    draw = ProgressDrawer(stream)
    for done in range(1, 5):
        draw(Progressed("sensitivity (nodes)", done, 4))
        if done == 2:
            draw(Progressed("parity (inputs)", 1, 3))
            draw("a status line")
    text = stream.getvalue()
    assert "\r" in text  # redrawn in place
    assert "sensitivity (nodes)" in text and "4/4" in text and "<" in text  # tqdm's elapsed<left
    assert "parity (inputs)" in text and "1/3" in text
    assert "a status line" in text
    assert list(draw._bars) == ["parity (inputs)"]  # the finished bar is closed, the other stays open


def test_a_repeated_count_starts_a_new_bar() -> None:
    draw = ProgressDrawer(Terminal())
    draw(Progressed("bench (rounds)", 3, 3))
    draw(Progressed("bench (rounds)", 1, 5))
    assert draw._bars["bench (rounds)"].total == 5 and draw._bars["bench (rounds)"].n == 1


def test_not_a_terminal_gets_plain_lines_without_carriage_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    draw = ProgressDrawer(stream)
    clock = iter(range(100))
    monkeypatch.setattr("deploykit.commands._options.time.monotonic", lambda: float(next(clock)))
    draw("starting")
    for done in range(1, 61):
        draw(Progressed("sensitivity (nodes)", done, 60))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "… starting"
    assert lines[-1] == "… sensitivity (nodes): 60/60"
    assert len(lines) == 1 + 11  # the first count, then one line per tenth: 6/60 ... 60/60
    assert lines[1] == "… sensitivity (nodes): 1/60"
    assert lines[2] == "… sensitivity (nodes): 6/60, about 45 s left"  # 5 s for 5 more, 54 to go
