"""report.md and report.html say the same things: names from the user (a model, a file, a class, a node) with
Markdown's or HTML's punctuation, newlines or great length in them read back as the same text from both."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploykit.report.document import Block, Bullets, Code, Heading, Note, Paragraph, table, to_html, to_markdown
from deploykit.report.format import printable

markdown_it = pytest.importorskip("markdown_it")

LEAVES = {"h1", "h2", "p", "li", "th", "td"}


class _Texts(HTMLParser):
    """The text of each leaf block (heading, paragraph, list item, table cell), whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[tuple[str, str]] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LEAVES:
            self._open.append(tag)
            self.texts.append((tag, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in LEAVES and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            tag, text = self.texts[-1]
            self.texts[-1] = (tag, text + data)


def _read(page: str) -> list[tuple[str, str]]:
    parser = _Texts()
    parser.feed(page)
    return [(tag, " ".join(text.split())) for tag, text in parser.texts]


def _commonmark(markdown: str) -> str:
    return str(markdown_it.MarkdownIt("commonmark").enable("table").render(markdown))


# Names as users write them, and the punctuation that means something to Markdown or HTML
NAMES = st.text(alphabet=st.sampled_from([*"ab _-.:/0123456789", *"|<>&*#[]()!\\`~=+\n\r\t", "é", "\x00", " "]),
                min_size=1, max_size=40).filter(lambda text: printable(text).strip())


def _blocks(name: str) -> list[Block]:
    return [Heading(f"deploykit report: {name}", 1), Heading(name), Paragraph(name),
            Paragraph(f"Worst candidate: {name} (int8)"), Paragraph(("reference ", Code(name), " raced")), Note(name),
            Bullets((name, f"not {name} (fp16): passes", (Code(name),))),
            table(["candidate", f"{name} IoU"], [[name, 0.5], ["fp32", 1.0]])]


@settings(max_examples=300, deadline=None)
@given(NAMES)
def test_markdown_and_html_read_back_as_the_same_text(name: str) -> None:
    blocks = _blocks(name)
    html_texts = _read(to_html(blocks, "t"))
    assert _read(_commonmark(to_markdown(blocks))) == html_texts
    shown = " ".join(printable(name).split())
    assert ("p", shown) in html_texts and ("td", shown) in html_texts and ("li", shown) in html_texts


def test_a_name_with_a_newline_stays_on_its_line_and_shows_it() -> None:
    markdown = to_markdown(_blocks("my\nmodel|v2 <b>&amp;"))
    lines = markdown.splitlines()
    assert "# deploykit report: my\\nmodel|v2 \\<b>\\&amp;" in lines
    assert "| my\\nmodel\\|v2 \\<b>\\&amp; | 0.5 |" in lines
    page = to_html(_blocks("my\nmodel|v2 <b>&amp;"), "t")
    assert "<h2>my\\nmodel|v2 &lt;b&gt;&amp;amp;</h2>" in page


def test_plain_text_stays_readable_as_markdown() -> None:
    """Only what Markdown would read as markup is escaped: report.md is also read as text (--print-report)."""
    text = "budget missed: pixel_agreement 0.98 < 0.99 & miou_major >= 0.9; pip install 'deploykit[plots]' | C:\\x"
    assert to_markdown([Paragraph(text)]) == text + "\n"


def test_a_long_name_wraps_in_the_html_page() -> None:
    page = to_html([Heading("x" * 400, 1), Paragraph("y" * 400)], "t")
    style = page[page.index("<style>"):page.index("</style>")]
    assert "overflow-wrap:break-word" in style[style.index("body{"):].split("}")[0]
    assert "overflow-wrap:anywhere" not in style  # numbers, headers and words never break inside
