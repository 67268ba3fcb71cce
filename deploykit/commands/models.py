"""`deploykit models`: the zoo, with sizes and costs."""

from __future__ import annotations

import inspect
from typing import Any

import click

from deploykit.commands._options import echo_json, json_option
from deploykit.report.format import text_table
from deploykit.zoo import aliases, get_model_spec, list_models
from deploykit.zoo.flops import complexity_at
from deploykit.zoo.sources import zoo_spec


def _summary(name: str) -> dict[str, Any]:
    spec = get_model_spec(name)
    h, w = spec.input_size
    cost = complexity_at(spec.build, (1, 3, h, w))
    return {"name": spec.name, "task": spec.task, "input_size": [h, w], "num_classes": spec.num_classes,
            "params": cost.params, "madds": cost.madds, "paper": spec.paper}


def _details(name: str) -> dict[str, Any]:
    spec = zoo_spec(name)
    options = {}
    for option, param in spec.options().items():
        default = spec.defaults.get(option, param.default)
        options[option] = None if default is inspect.Parameter.empty else default
    return {**_summary(spec.name), "description": spec.description, "options": options,
            "preprocessing": spec.preprocessing.to_dict(), "input_names": list(spec.input_names),
            "output_names": list(spec.output_names), "checkpoint_formats": list(spec.checkpoint_formats),
            "size_multiple": spec.size_multiple, "exporter": spec.exporter}


@click.command()
@click.argument("name", required=False)
@json_option
def models(name: str | None, as_json: bool) -> None:
    """List every registered model with task, default input size, parameters and multiply-adds at that
    size; with NAME, show its spec, preprocessing and builder options (pass them with --set KEY=VALUE)."""
    if name is not None:
        info = _details(name)
        if as_json:
            echo_json(info)
            return
        for key in ("name", "task", "paper", "description", "input_size", "num_classes", "params", "madds",
                    "preprocessing", "input_names", "output_names", "checkpoint_formats", "size_multiple",
                    "exporter"):
            click.echo(f"{key:<19} {info[key]}")
        click.echo("options (--set KEY=VALUE):")
        for option, default in info["options"].items():
            click.echo(f"  {option:<17} default {default!r}")
        return
    rows = [_summary(n) for n in list_models()]
    if as_json:
        echo_json({"models": rows, "aliases": aliases()})
        return
    click.echo(text_table(
        ["model", "task", "input", "params (M)", "MAdds (G)"],
        [[r["name"], r["task"], "x".join(map(str, r["input_size"])), r["params"] / 1e6, r["madds"] / 1e9]
         for r in rows],
    ))
    click.echo("aliases: " + ", ".join(f"{a} -> {t}" for a, t in sorted(aliases().items())))
