"""Markdown and HTML come from the same blocks: every table cell and text appears in both."""

from __future__ import annotations

from pathlib import Path

from deploykit.report.document import Bullets, Heading, Image, Note, Paragraph, table, to_html, to_markdown


def test_markdown_and_html_render_the_same_blocks(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG fake")
    blocks = [Heading("Report <x>", 1), Paragraph("a | b"), Note("busy machine"), Bullets(("one", "two")),
              table(["name", "value"], [["cosine", 0.99999], ["nan", 0]]), Image("plot", png)]
    markdown = to_markdown(blocks)
    html = to_html(blocks, "t")
    assert markdown.startswith("# Report <x>") and "| cosine |" in markdown and "| name | value |" in markdown
    assert "> busy machine" in markdown and "- two" in markdown and "![plot](plot.png)" in markdown
    assert "<h1>Report &lt;x&gt;</h1>" in html and "<blockquote>busy machine</blockquote>" in html
    assert "<td class=t>cosine</td>" in html and "<li>two</li>" in html and "data:image/png;base64," in html
    assert html.count("<tr>") == 3  # the header and two rows, never a Markdown rule parsed as a row


def test_code_spans_are_code_in_html_and_stay_backticks_in_markdown() -> None:
    blocks = [Paragraph("`--backend auto` raced <both>"), Bullets(("keep `a` and `b`", "one ` alone"))]
    html = to_html(blocks, "t")
    assert "<p><code>--backend auto</code> raced &lt;both&gt;</p>" in html
    assert "<li>keep <code>a</code> and <code>b</code></li>" in html and "<li>one ` alone</li>" in html
    assert to_markdown(blocks).startswith("`--backend auto` raced <both>")
