"""Every `deploykit ...` command the README shows still parses: the command exists and takes every option the
README gives it (issue 14: nothing users see changes). Parsing only: the commands that need a GPU, a trained
checkpoint or minutes of work run elsewhere (scripts/demo.sh runs the main job; each command has its tests)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from deploykit.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_commands() -> list[str]:
    """`deploykit ...` lines of the README's code blocks and inline code, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        found += [line.split("#")[0].strip() for line in joined.splitlines() if line.strip().startswith("deploykit ")]
    found += re.findall(r"`(deploykit [^`]+)`", text)
    # placeholders (deploykit bench TARGET, [--json], A|B) are the commands table's syntax, not commands
    return sorted({c for c in found if not re.search(r"[\[|]|\.\.\.|\b[A-Z]{3,}\b", c)})


COMMANDS = _readme_commands()


def test_the_readme_shows_commands() -> None:
    assert any(c.startswith("deploykit deploy ") for c in COMMANDS) and len(COMMANDS) >= 8


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command: str) -> None:
    """Click parses every option before the eager --help acts: an unknown command or option fails here."""
    try:
        cli.main([*shlex.split(command)[1:], "--help"], prog_name="deploykit", standalone_mode=False)
    except click.UsageError as exc:
        pytest.fail(f"{command}: {exc.format_message()}")


def _leaf_command(words: list[str]) -> click.Command:
    """The command `deploykit WORDS...` runs (bench TARGET... is bench run TARGET...)."""
    command: click.Command = cli
    with click.Context(cli) as ctx:
        while isinstance(command, click.Group):
            name = words[0] if words and not words[0].startswith("-") else ""
            found = command.get_command(ctx, name)
            if found is None:  # a group with a default command: bench TARGET...
                found = command.get_command(ctx, "run")
            elif words:
                words = words[1:]
            assert found is not None
            command = found
    return command


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "deploykit --help"])
def test_readme_command_gives_every_required_option(command: str) -> None:
    """An appended --help stops Click before it checks required options: a copied command missing `-o` would
    pass the test above and fail for the user (`deploykit export ... --set decoder=False` without -o did)."""
    words = shlex.split(command)[1:]
    if len(words) == 1:
        return  # a command named in prose (`deploykit serve` runs ...), not a command line
    leaf = _leaf_command(words)
    missing = [p.opts[-1] for p in leaf.params
               if isinstance(p, click.Option) and p.required and not set(p.opts) & set(words)]
    assert not missing, f"{command}: missing {', '.join(missing)}"
