"""The README's Layout section names only paths that exist, and every package folder appears in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_every_path_in_the_layout_exists() -> None:
    block = _layout()
    named = re.findall(r"(deploykit/[\w/.]*|benchmarks/)", block)
    assert named
    for path in named:
        assert (ROOT / path.rstrip(",")).exists(), path
    for word in re.findall(r"\b([\w]+\.py)\b", block):
        assert list((ROOT / "deploykit").rglob(word)) or (ROOT / "benchmarks" / word).exists(), word


def test_every_package_folder_is_in_the_layout() -> None:
    block = _layout()
    folders = sorted(p.name for p in (ROOT / "deploykit").iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert [f for f in folders if f"{f}/" not in block] == []
