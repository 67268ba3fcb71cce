"""A package outside deploykit, pip-installed into a folder of its own, and deploykit run with that folder on
its path in a fresh process: its entry points are found the way an installed plugin's are (importlib.metadata
reads the dist-info pip wrote), and this test process's tables stay as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def install(root: Path, name: str, group: str, entry: str, modules: dict[str, str]) -> Path:
    """Write package `name` (its modules' sources, an entry point `entry` in `group`) and pip-install it into
    root/site; returns that folder."""
    source = root / "src"
    package = source / name.replace("-", "_")
    package.mkdir(parents=True)
    for module, text in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(text))
    (source / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.1.0"

        [project.entry-points."{group}"]
        {entry}
    """))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--no-index", "--target", str(site), str(source)],
                   check=True, capture_output=True, text=True)
    return site


def run_commands(site: Path, folder: Path, commands: list[list[str]]) -> list[dict[str, Any]]:
    """Each `deploykit` command in one fresh process with `site` on its path, run in `folder`: the exit code,
    stdout ("output") and everything it printed ("log") of each."""
    script = textwrap.dedent(f"""
        import json
        from click.testing import CliRunner
        from deploykit.cli import cli
        runner = CliRunner()
        results = []
        for args in {commands!r}:
            got = runner.invoke(cli, args)
            results.append({{"args": args, "exit_code": got.exit_code, "output": got.stdout, "log": got.output}})
        print(json.dumps(results))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "DEPLOYKIT_CACHE_DIR": str(folder / "cache")}
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                          check=True)
    results: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results
