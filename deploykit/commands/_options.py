"""Option bundles shared by several commands (simonw/llm style), and rendering helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from deploykit.types import Progressed, ProgressEvent

F = TypeVar("F", bound=Callable[..., Any])


def model_source_options(func: F) -> F:
    """--set, --weights, --allow-partial, --task: how a zoo name or user factory becomes a model."""
    for option in reversed([
        click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
                     help="Model option passed to the builder (repeatable), e.g. --set output_stride=8."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Checkpoint: a state_dict or a popular repo's layout (see `deploykit models NAME`)."),
        click.option("--allow-partial", is_flag=True,
                     help="Accept weights that cover only part of the model (e.g. backbone-only); lists the rest."),
        click.option("--task", type=click.Choice(["segmentation", "saliency"]), default=None,
                     help="Task of a user model (zoo models know theirs)."),
    ]):
        func = option(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")(func)


def force_option(func: F) -> F:
    return click.option("--force", is_flag=True, help="Overwrite existing outputs.")(func)


def given(**values: Any) -> dict[str, Any]:
    """The options the user gave (None means "not given"), to pass on as keywords so that the library's own
    defaults apply to the rest: a command never restates a library default."""
    return {name: value for name, value in values.items() if value is not None}


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def progress(event: ProgressEvent) -> None:
    """Progress goes to stderr so stdout stays clean for --json; a counted step is drawn as a bar."""
    if isinstance(event, Progressed):
        done = round(20 * event.done / event.total) if event.total > 0 else 0
        click.echo(f"… [{'#' * done}{'.' * (20 - done)}] {event.what} {event.done}/{event.total}", err=True)
        return
    click.echo(f"… {event}", err=True)
