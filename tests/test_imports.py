"""Every module imports, and `deploykit --help` / `doctor` work, with the optional packages absent."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap

import deploykit


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(deploykit.__path__, prefix="deploykit.")
             if m.name != "deploykit.__main__"]
    assert len(names) > 10
    for name in names:
        importlib.import_module(name)


def test_help_and_doctor_without_tensorrt() -> None:
    # A finder that refuses tensorrt and the GPU-only packages, as on a machine without them.
    script = textwrap.dedent("""
        import sys, importlib.abc, json
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] in {'tensorrt', 'pycuda', 'cuda', 'matplotlib'}:
                    raise ModuleNotFoundError(f'No module named {name!r}', name=name)  # as when absent
        sys.meta_path.insert(0, Block())
        from click.testing import CliRunner
        from deploykit.cli import cli
        runner = CliRunner()
        help_ = runner.invoke(cli, ['--help'])
        doctor = runner.invoke(cli, ['doctor', '--json'])
        print(json.dumps({'help': help_.exit_code, 'doctor': doctor.exit_code,
                          'state': json.loads(doctor.output)['backends']['tensorrt']['state'],
                          'heavy': sorted(m for m in sys.modules if m.split('.')[0] == 'tensorrt')}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"help": 0, "doctor": 0, "state": "not installed", "heavy": []}


def test_python_dash_m() -> None:
    out = subprocess.run([sys.executable, "-m", "deploykit", "--version"], capture_output=True, text=True, check=True)
    assert deploykit.__version__ in out.stdout
