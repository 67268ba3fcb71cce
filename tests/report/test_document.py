"""Markdown and HTML come from the same blocks: every table cell and text appears in both."""

from __future__ import annotations

from pathlib import Path

from deploykit.report.document import Bullets, Code, Heading, Image, Note, Paragraph, table, to_html, to_markdown


def test_markdown_and_html_render_the_same_blocks(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG fake")
    blocks = [Heading("Report <x>", 1), Paragraph("a | b"), Note("busy machine"), Bullets(("one", "two")),
              table(["name", "value"], [["cosine", 0.99999], ["nan", 0]]), Image("plot", png)]
    markdown = to_markdown(blocks)
    html = to_html(blocks, "t")
    # "<x>" would be an HTML tag to a Markdown renderer ("a | b" breaks only a table's cell)
    assert markdown.startswith("# Report \\<x>\n\na | b")
    assert "| cosine |" in markdown and "| name | value |" in markdown
    assert "> busy machine" in markdown and "- two" in markdown and "![plot](plot.png)" in markdown
    assert "<h1>Report &lt;x&gt;</h1>" in html and "<blockquote><p>busy machine</p></blockquote>" in html
    assert "<td class=t>cosine</td>" in html and "<li>two</li>" in html and "data:image/png;base64," in html
    assert html.count("<tr>") == 3  # the header and two rows, never a Markdown rule parsed as a row


def test_code_parts_are_code_in_html_and_code_spans_in_markdown() -> None:
    blocks = [Paragraph((Code("--backend auto"), " raced <both>")),
              Bullets((("keep ", Code("a"), " and ", Code("b`c")), "one ` alone"))]
    html = to_html(blocks, "t")
    assert "<p><code>--backend auto</code> raced &lt;both&gt;</p>" in html
    assert "<li>keep <code>a</code> and <code>b`c</code></li>" in html and "<li>one ` alone</li>" in html
    markdown = to_markdown(blocks)
    assert markdown.startswith("`--backend auto` raced \\<both>") and "- keep `a` and ``b`c``" in markdown
    assert "- one \\` alone" in markdown
