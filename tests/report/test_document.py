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


def test_a_table_scrolls_in_its_own_box_on_a_narrow_screen() -> None:
    """At a phone's width (390 px) a wide table scrolls inside its box, never widening the page; a word or a
    number in a cell stays whole ('onnxrunt|ime', '9.69e-|08' at 390 px before); a long name breaks after its
    separators."""
    page = to_html([table(["backend", "node", "max abs"], [["onnxruntime", "/backbone/layer4.2/Conv", 9.69e-08]])],
                   "t")
    assert "<meta name=viewport content='width=device-width,initial-scale=1'>" in page
    assert "<div class=scroll><table>" in page and "</table></div>" in page
    style = page[page.index("<style>"):page.index("</style>")]
    assert "div.scroll{overflow-x:auto" in style and "td{white-space:nowrap}" in style
    assert "<td class=t>onnxruntime</td>" in page and "<td>9.69e-08</td>" in page
    assert "<td class=t>/<wbr>backbone/<wbr>layer4.2/<wbr>Conv</td>" in page
