"""A tiny document model: a report is a list of blocks, rendered to Markdown, to HTML and to terminal text from
the same blocks (no format is made by re-parsing another)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.report.format import fmt, markdown_table, text_table


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    text: str  # a warning, shown as a quote


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Image:
    name: str
    path: Path


Block = Heading | Paragraph | Note | Bullets | Table | Image


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    return Table(tuple(headers), tuple(tuple(r) for r in rows))


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            lines.append(block.text)
        elif isinstance(block, Note):
            lines.append(f"> {block.text}")
        elif isinstance(block, Bullets):
            lines.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines.append(markdown_table(block.headers, block.rows))
        else:
            lines.append(f"![{block.name}]({block.path.name})")
        lines.append("")
    return "\n".join(lines)


def to_text(blocks: Sequence[Block]) -> str:
    """For the terminal: headings and paragraphs as lines, bullets one per line, tables aligned; a blank line
    between blocks (images are left out)."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading | Paragraph | Note):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(block.items))
        elif isinstance(block, Table):
            parts.append(text_table(block.headers, block.rows))
    return "\n\n".join(parts)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;"
         "padding:3px 8px;text-align:right}td.t{text-align:left;overflow-wrap:anywhere}th{background:#f3f3f3}"
         "img{max-width:100%}")


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code> (the one inline markup the report's text uses)."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick stays a backtick
        return html.escape(text)
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Note):
        return f"<blockquote>{_inline(block.text)}</blockquote>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td{' class=t' if isinstance(c, str) else ''}>{html.escape(fmt(c))}</td>"
                                        for c in row) + "</tr>" for row in block.rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    data = base64.b64encode(block.path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(block.name)}" src="data:image/png;base64,{data}"></figure>'


def to_html(blocks: Sequence[Block], title: str) -> str:
    """A self-contained page: plots inlined as data URIs."""
    body = "".join(_html_block(b) for b in blocks)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
