"""The layers hold without hiding: a function-local import is only for an optional or heavy third-party package
(import-linter, run by scripts/test.sh, checks the layers themselves, counting function-local imports)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deploykit"
# Optional extras, torch (a dependency, but 3 s to import: `deploykit --help` and `doctor` must not pay for it), and
# onnxruntime where the module that imports it also turns its telemetry off first (deploykit.environment).
LAZY = {"tensorrt", "openvino", "matplotlib", "skimage", "onnxslim", "transformers", "tritonclient", "google",
        "torch", "cuda", "pycuda", "pynvml", "onnxruntime", "aiohttp", "yarl", "grpc"}  # yarl: aiohttp's URLs


def _imported(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.ImportFrom):
        return {"." * node.level + (node.module or "")}
    return {alias.name for alias in node.names}


def _local_imports(tree: ast.AST, in_function: bool = False) -> list[tuple[int, str]]:
    found = []
    for child in ast.iter_child_nodes(tree):
        inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if in_function and isinstance(child, ast.Import | ast.ImportFrom):
            found += [(child.lineno, name) for name in sorted(_imported(child))]
        found += _local_imports(child, inside)
    return found


def offences(root: Path) -> list[str]:
    listed = []
    for path in sorted(root.rglob("*.py")):
        for line, name in _local_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name.split(".")[0] not in LAZY:
                listed.append(f"{path.relative_to(root.parent).as_posix()}:{line}: {name}")
    return listed


def test_function_local_imports_are_only_for_optional_or_heavy_packages() -> None:
    assert offences(PACKAGE) == []


def test_the_rule_finds_what_it_should(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text("import json\n\ndef f():\n    import deploykit.build\n    from . import x\n"
                                  "    import matplotlib.pyplot\n\n\nclass C:\n"
                                  "    def g(self):\n        import numpy\n")
    assert offences(package) == ["pkg/m.py:4: deploykit.build", "pkg/m.py:5: .", "pkg/m.py:11: numpy"]
