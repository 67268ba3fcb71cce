"""Option bundles shared by several commands (simonw/llm style), and rendering helpers."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO, TypeVar

import click
from tqdm import tqdm

from deploykit.backends.base import BACKENDS, Backend, CliOption
from deploykit.commands import JSON_PRINTED, JSON_STREAM
from deploykit.environment import usable_cpus
from deploykit.errors import DONE, ConfigConflict, Outcome
from deploykit.io.outputs import json_text
from deploykit.io.std_streams import unless_hung_up
from deploykit.types import TASKS, Progressed, ProgressEvent

F = TypeVar("F", bound=Callable[..., Any])


def model_source_options(func: F) -> F:
    """--set, --weights, --allow-partial, --trust-checkpoint, --task: how a zoo name or user factory becomes a
    model."""
    for option in reversed([
        click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
                     help="Model option passed to the builder (repeatable), e.g. --set output_stride=8."),
        click.option("--weights", type=click.Path(), default=None,  # a folder is told which file to pass
                     help="Checkpoint: a state_dict or a popular repo's layout (see `deploykit models NAME`)."),
        click.option("--allow-partial", is_flag=True,
                     help="Accept weights that cover only part of the model (e.g. backbone-only); lists the rest."),
        click.option("--trust-checkpoint", is_flag=True,
                     help="Unpickle --weights in full when it holds more than tensors, numbers, NumPy values and "
                          "containers (a class of the training code, a whole model): runs code the file names, "
                          "so only for files you trust."),
        click.option("--task", type=click.Choice(list(TASKS)), default=None,
                     help="Task of a user model (zoo models know theirs)."),
    ]):
        func = option(func)
    return func


def _click_option(option: CliOption) -> Callable[[F], F]:
    bounded = option.low is not None or option.high is not None
    low, high = (None if v is None else int(v) for v in (option.low, option.high))
    kinds: dict[str, Any] = {
        "text": str, "flag": None, "file": click.Path(dir_okay=False), "choice": click.Choice(option.choices),
        "int": click.IntRange(low, high, min_open=option.low_open) if bounded else int,
        "float": FiniteFloatRange(option.low, option.high, min_open=option.low_open) if bounded else float}
    if option.kind == "flag":
        return click.option(option.flag, option.dest, is_flag=True, default=None, help=option.help)
    return click.option(option.flag, option.dest, type=kinds[option.kind], multiple=option.multiple,
                        default=None, metavar=option.metavar, help=option.help)


def backend_option_groups(func: F) -> F:
    """Every backend's own options (Backend.options_group, Polygraphy's argument groups): the command knows none
    of them; `backend_options` sorts what was given back into the groups."""
    for entry in reversed(BACKENDS.values()):
        for option in reversed(entry.options_group()):
            func = _click_option(option)(func)
    return func


@dataclass(frozen=True)
class GivenOptions:
    """The backend options given on the command line, by backend."""

    by_backend: dict[str, dict[str, Any]]

    @property
    def files(self) -> list[str]:
        """Given file options (a cache read if present, written after the work: checked before it starts)."""
        kinds = {o.dest: o.kind for b in BACKENDS.values() for o in b.options_group()}
        return [v for values in self.by_backend.values() for k, v in values.items() if kinds[k] == "file"]

    def typed_for(self, backend: Backend) -> object | None:
        """`backend`'s typed Options (None when none of its options was given); another backend's options
        given too are a ConfigConflict, naming them."""
        foreign = [f"--{k.replace('_', '-')}" for name, values in self.by_backend.items() if name != backend.name
                   for k in values]
        if foreign:
            owners = sorted(BACKENDS[n].title for n in self.by_backend if n != backend.name)
            raise ConfigConflict(f"{', '.join(foreign)}: {' and '.join(owners)} options do not apply to "
                                 f"--backend {backend.name}")
        return backend.options_from_cli(self.by_backend.get(backend.name, {}))


def backend_options(values: dict[str, Any]) -> GivenOptions:
    """The given values (not None, (), False) of the backends' option groups, by the backend owning each."""
    by_backend: dict[str, dict[str, Any]] = {}
    for entry in BACKENDS.values():
        for option in entry.options_group():
            value = values.get(option.dest)
            if value not in (None, (), False):
                by_backend.setdefault(entry.name, {})[option.dest] = value
    return GivenOptions(by_backend)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")(func)


def force_option(func: F) -> F:
    return click.option("--force", is_flag=True, help="Overwrite existing outputs.")(func)


def given(**values: Any) -> dict[str, Any]:
    """The options the user gave (None means "not given"), to pass on as keywords so that the library's own
    defaults apply to the rest: a command never restates a library default."""
    return {name: value for name, value in values.items() if value is not None}


def echo_json(data: Mapping[str, Any], outcome: Outcome = DONE) -> None:
    """The command's one JSON document, with how it ended (outcome, exit_status: deploykit.errors.OUTCOMES);
    a command that raises CheckFailed after it passes outcome=CHECK_FAILED."""
    context = click.get_current_context(silent=True)
    stream = context.meta.get(JSON_STREAM) if context is not None else None
    click.echo(json_text({**data, **outcome.record()}), file=stream)
    if context is not None:
        context.meta[JSON_PRINTED] = True


class ProgressDrawer:
    """Draws the library's progress events on stderr, so stdout stays clean for --json.

    A `Progressed` count becomes a tqdm bar (count, rate, estimated time left), one per `what`, closed when
    done reaches total; a status line is written above open bars. When the stream is not a terminal (logs,
    CI, pipes) there is no bar and no carriage return: one plain line per tenth of the count, and the last.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._bars: dict[str, tqdm[NoReturn]] = {}
        self._started: dict[str, tuple[float, int]] = {}  # what -> (start time, last tenth printed)

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def __call__(self, event: ProgressEvent) -> None:
        with unless_hung_up():  # progress is no output: a terminal gone (SIGHUP) must not change how a command ends
            if not isinstance(event, Progressed):
                self._line(f"… {event}")
            elif self.stream.isatty():
                self._bar(event)
            else:
                self._plain(event)

    def _line(self, text: str) -> None:
        if self._bars:
            tqdm.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _bar(self, event: Progressed) -> None:
        bar = self._bars.get(event.what)
        if bar is not None and (bar.total != event.total or event.done < bar.n):
            bar.close()  # a new count of the same kind: start over
            bar = None
        if bar is None:
            bar = tqdm(total=event.total, desc=event.what, file=self.stream, leave=True, dynamic_ncols=True)
            self._bars[event.what] = bar
        bar.update(event.done - bar.n)
        if event.done >= event.total:
            bar.close()
            del self._bars[event.what]

    def _plain(self, event: Progressed) -> None:
        now = time.monotonic()
        started, shown = self._started.get(event.what, (now, -1))
        tenth = 10 * event.done // event.total if event.total > 0 else 10
        if tenth > shown or event.done >= event.total:
            left = (now - started) / event.done * (event.total - event.done) if event.done > 0 else 0.0
            eta = f", about {left:.0f} s left" if 0 < event.done < event.total and now > started else ""
            self._line(f"… {event.what}: {event.done}/{event.total}{eta}")
            shown = tenth
        if event.done >= event.total:
            self._started.pop(event.what, None)
        else:
            self._started[event.what] = (started, shown)


_DRAWER = ProgressDrawer()


def progress(event: ProgressEvent) -> None:
    """The CLI's progress callback: see ProgressDrawer."""
    _DRAWER(event)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which pass every comparison click makes or run forever)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class CpuCount(click.IntRange):
    """A count of something that each takes a CPU of this machine (threads, served model instances): at least 1
    and at most the CPUs this process may use. More only contend for them, and a mistyped count costs the
    machine: `bench --threads 99999` started 12,354 threads and held 16.7 GB before it was killed."""

    def __init__(self) -> None:
        super().__init__(min=1, max=usable_cpus())  # --help shows the range on this machine

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.INT.convert(value, param, ctx)
        if self.max is not None and number > self.max:
            self.fail(f"{number} is more than the {self.max} CPUs this process may use; give at most {self.max}",
                      param, ctx)
        return super().convert(number, param, ctx)


def threads_option(help: str) -> Callable[[F], F]:
    """--threads, bounded by this machine's CPUs (CpuCount)."""
    return click.option("--threads", type=CpuCount(), default=None, help=help)


MAX_SECONDS = 86400.0  # a time option above a day is a slip (ms for s, a digit too many), not a run to wait for


def seconds(*, open_: bool = False) -> FiniteFloatRange:
    """Seconds of work to do: from 0 (excluded with open_) up to a day, so that --duration 1e308 is refused on
    parse instead of running until killed."""
    return at_least(0, open_=open_, high=MAX_SECONDS)


def at_least(low: float, *, open_: bool = False, high: float | None = None) -> FiniteFloatRange:
    """A finite float >= low (> low with open_), optionally <= high: the range --help shows, checked on parse."""
    return FiniteFloatRange(min=low, max=high, min_open=open_)
