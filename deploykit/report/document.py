"""A tiny document model: a report is a list of blocks, rendered to Markdown, to HTML and to terminal text from
the same blocks (no format is made by re-parsing another).

Text is plain: whatever a name from the user holds (a model, a file, a class, a node: |, <, &, *, backticks, a
newline) reads back as itself from every format. The one inline markup is explicit, a Code part in a tuple."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.report.format import fmt, markdown_table, markdown_text, printable, text_table


@dataclass(frozen=True)
class Code:
    text: str  # shown as code: a command-line option, a file


Text = str | tuple[str | Code, ...]  # plain text, or plain parts and Code parts in order


@dataclass(frozen=True)
class Heading:
    text: Text
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: Text


@dataclass(frozen=True)
class Note:
    text: Text  # a warning, shown as a quote


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


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


def _spans(text: Text) -> list[tuple[str, bool]]:
    """(part, is code), control characters shown (format.printable): what every renderer reads."""
    parts = (text,) if isinstance(text, str) else text
    return [(printable(p.text), True) if isinstance(p, Code) else (printable(p), False) for p in parts]


def plain(text: Text) -> str:
    return "".join(part for part, _ in _spans(text))


def _code_markdown(part: str) -> str:
    """A CommonMark code span showing `part` as it is: a fence longer than any run of backticks in it, padded
    where it starts or ends with a backtick or a space (CommonMark strips one space from each end)."""
    if not part:
        return ""
    fence = "`" * (max((len(run) for run in re.findall("`+", part)), default=0) + 1)
    pad = " " if part.strip() and (part[0] in " `" or part[-1] in " `") else ""
    return f"{fence}{pad}{part}{pad}{fence}"


# What would make the start of a line a list item, an ordered-list item, a quote, a setext underline, a fence or
# a link reference definition
_BLOCK_START = re.compile(r"^([-+=>\[]|\d+(?=[.)]))")


def _line_markdown(text: Text) -> str:
    """One line of Markdown that a CommonMark renderer reads back as `text` (module docstring)."""
    spans = _spans(text)
    if spans:  # Markdown drops the spaces around a line: so does HTML
        spans[0] = (spans[0][0].lstrip(), spans[0][1])
        spans[-1] = (spans[-1][0].rstrip(), spans[-1][1])
    line = "".join(_code_markdown(part) if code else markdown_text(part) for part, code in spans)
    return _BLOCK_START.sub(lambda m: m.group() + "\\" if m.group()[0].isdigit() else "\\" + m.group(), line)


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines.append(f"{'#' * block.level} {_line_markdown(block.text)}")
        elif isinstance(block, Paragraph):
            lines.append(_line_markdown(block.text))
        elif isinstance(block, Note):
            lines.append(f"> {_line_markdown(block.text)}")
        elif isinstance(block, Bullets):
            lines.append("\n".join(f"- {_line_markdown(item)}" for item in block.items))
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
            parts.append(plain(block.text))
        elif isinstance(block, Bullets):
            parts.append("\n".join(plain(item) for item in block.items))
        elif isinstance(block, Table):
            parts.append(text_table(block.headers, block.rows))
    return "\n\n".join(parts)


# A long name breaks where it would overflow (break-word), never inside a number ("9.69e-08"), a header or a word:
# anywhere
# would let a narrow screen squeeze table columns to a character's width ("onnxrunt|ime", "1x3x|32x32"). A name
# in a table cell may also break after its separators (_wbr); a table still wider than the screen scrolls in its
# own box (div.scroll), so the page never grows wider than a phone's screen.
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 8px;color:#222;"
         "overflow-wrap:break-word}div.scroll{overflow-x:auto;margin:1em 0}"
         "table{border-collapse:collapse;font-size:14px}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td{white-space:nowrap}"
         "td.t{text-align:left;white-space:normal}"
         "th.t{text-align:left}th{background:#f3f3f3}"
         "blockquote{margin:1em 0;padding:.4em 1em;border-left:4px solid #d9a400;background:#fff8e0}"
         "blockquote p{margin:0}img{max-width:100%}")


def _inline(text: Text) -> str:
    """Escaped text with its Code parts as <code>."""
    return "".join(f"<code>{html.escape(part)}</code>" if code else html.escape(part) for part, code in _spans(text))


# Where a long name in a table cell may break: after a path, module or word separator (a dot or a dash only
# before a letter, so a number or a range of numbers, "0.2062-0.3694", stays whole)
_SEPARATOR = re.compile(r"(?<=[/_:,])(?=.)|(?<=[.-])(?=[^\W\d_])")


def _cell(value: object) -> str:
    return html.escape(printable(fmt(value)))


def _name_cell(value: str) -> str:
    """A text cell, with a break opportunity after each separator of a long name ('/backbone/layer4.2/Conv')."""
    return "<wbr>".join(html.escape(part) for part in _SEPARATOR.split(printable(value)))


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Note):
        return f"<blockquote><p>{_inline(block.text)}</p></blockquote>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        text = [all(isinstance(row[i], str) for row in block.rows) for i in range(len(block.headers))]
        head = "".join(f"<th{' class=t' if left else ''}>{_cell(h)}</th>" for h, left in zip(block.headers, text,
                                                                                           strict=True))
        body = "".join("<tr>" + "".join(f"<td class=t>{_name_cell(c)}</td>" if isinstance(c, str) else
                                        f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>"
    data = base64.b64encode(block.path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(block.name)}" src="data:image/png;base64,{data}"></figure>'


def to_html(blocks: Sequence[Block], title: str) -> str:
    """A self-contained page: plots inlined as data URIs."""
    body = "".join(_html_block(b) for b in blocks)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"  # a phone's width, not 980 px
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
