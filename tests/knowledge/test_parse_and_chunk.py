"""Parsing each format into structured blocks, and chunking by structure with overlap."""

from __future__ import annotations

import pytest

from assistant.errors import DocumentRejected
from assistant.knowledge.chunk import ChunkSize, chunk_blocks
from assistant.knowledge.ingest import Limits, check_size
from assistant.knowledge.parse import Block, parse
from tests.knowledge.files import docx_bytes, pdf_bytes, pdf_drawing_a_form

MARKDOWN = b"""# Handbook

Intro paragraph.

## VPN
Connect with WireGuard.
Keys come from IT.

### Travel
| item | limit |
|------|-------|
| hotel | 150 EUR |

```
code block line
```

Setext title
------------
Under setext.
"""


def test_markdown_keeps_headings_tables_and_code_blocks() -> None:
    parsed = parse("handbook.md", MARKDOWN)
    assert parsed.title == "Handbook"
    kinds = [(b.kind, b.headings, b.text) for b in parsed.blocks]
    assert ("text", ("Handbook", "VPN"), "Connect with WireGuard. Keys come from IT.") in kinds
    table = next(b for b in parsed.blocks if b.kind == "table")
    assert table.headings == ("Handbook", "VPN", "Travel")
    assert table.text.splitlines()[-1] == "| hotel | 150 EUR |"
    assert any(b.text.startswith("```") and "code block line" in b.text for b in parsed.blocks)
    assert ("text", ("Handbook", "Setext title"), "Under setext.") in kinds


def test_html_by_headings_paragraphs_lists_and_tables() -> None:
    html = b"""<html><head><title>Policy</title><script>alert(1)</script></head><body>
    <nav>menu</nav><h1>Security</h1><p>Use a <b>strong</b> password.</p>
    <h2>Devices</h2><ul><li>Lock your screen.</li><li>Encrypt disks.</li></ul>
    <table><tr><th>Device</th><th>Rule</th></tr><tr><td>Phone</td><td>PIN</td></tr></table>
    </body></html>"""
    parsed = parse("policy.html", html)
    assert parsed.title == "Policy"
    texts = [(b.kind, b.headings, b.text) for b in parsed.blocks]
    assert ("text", ("Security",), "Use a strong password.") in texts
    assert ("text", ("Security", "Devices"), "Lock your screen.") in texts
    assert ("table", ("Security", "Devices"), "Device | Rule\nPhone | PIN") in texts
    assert not any("alert" in b.text or "menu" in b.text for b in parsed.blocks)


def test_html_without_end_tags_is_read_as_a_browser_builds_it() -> None:
    """HTML lets a document omit </p>, </li>, </td>: each ends at the next one or at a heading."""
    html = (b"<title>Leave</title><h1>Leave</h1><p>Ask your manager.<p>Then book it."
            b"<h2>Sick days</h2><p>Call in by nine.<ul><li>Fever<li>Injury</ul>"
            b"<table><tr><th>Days<th>Note<tr><td>1-3<td>none</table><dl><dt>HR<dd>Room 4</dl>")
    texts = [(b.kind, b.headings, b.text) for b in parse("leave.html", html).blocks]
    assert texts == [
        ("heading", ("Leave",), "Leave"),
        ("text", ("Leave",), "Ask your manager."),
        ("text", ("Leave",), "Then book it."),
        ("heading", ("Leave", "Sick days"), "Sick days"),
        ("text", ("Leave", "Sick days"), "Call in by nine."),
        ("text", ("Leave", "Sick days"), "Fever"),
        ("text", ("Leave", "Sick days"), "Injury"),
        ("table", ("Leave", "Sick days"), "Days | Note\n1-3 | none"),
        ("text", ("Leave", "Sick days"), "HR"),
        ("text", ("Leave", "Sick days"), "Room 4"),
    ]


@pytest.mark.parametrize("unit", [b"<p>x", b"<li>x", b"<blockquote><p>x", b"<dd><p>x",
                                  b"<table><tr><td>x", b"<div>x", b"<h2>x<p>y"])
def test_nested_html_blocks_cost_text_linear_in_the_file(unit: bytes) -> None:
    """Each text node lands in one block: 4,000 nested or unclosed elements give at most the
    file's own text (the earlier reader gave every nested block all the text inside it: 16 KB
    of "<p>x" made 16 MB of block text), and nesting deeper than Python's recursion limit
    is read without a RecursionError."""
    data = unit * 4000
    text = sum(len(b.text) for b in parse("nested.html", data).blocks)
    assert 0 < text <= len(data)
    deep = b"<div>" * 50_000 + b"<p>inside</p>" + b"</div>" * 50_000 + b"<p>after</p>"
    assert [b.text for b in parse("deep.html", deep).blocks] == ["inside", "after"]


def test_docx_headings_and_tables() -> None:
    parsed = parse("expenses.docx", docx_bytes())
    assert parsed.title == "Expenses guide"
    table = next(b for b in parsed.blocks if b.kind == "table")
    assert table.headings == ("Expenses", "Limits")
    assert table.text == "Item | Limit\nHotel | 150 EUR\nMeals | 40 EUR"
    texts = [b.text for b in parsed.blocks if b.kind == "text"]
    assert texts == ["Submit receipts in the finance portal within thirty days.",
                     "Taxis need a receipt too."]


def test_pdf_text_per_page() -> None:
    parsed = parse("guide.pdf", pdf_bytes(["First page about VPN access.",
                                           "Second page about expenses."], title="Guide"))
    assert parsed.title == "Guide" and parsed.pages == 2
    assert [(b.page, b.text) for b in parsed.blocks] == [
        (1, "First page about VPN access."), (2, "Second page about expenses.")]


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("broken.pdf", b"%PDF-1.4 this is not a pdf", "not a readable pdf"),
    ("broken.docx", b"PK\x03\x04 not a zip", "not a readable docx"),
    ("binary.txt", b"\x00\x01\x02" * 10, "binary data"),
    ("empty.md", b"# Only a heading\n", "no text found"),
    ("script.exe", b"MZ", "unsupported file type"),
])
def test_malformed_or_unsupported_files_are_refused_with_a_reason(
        name: str, data: bytes, reason: str) -> None:
    with pytest.raises(DocumentRejected, match=reason):
        parse(name, data)


def test_a_docx_whose_xml_unpacks_past_the_limit_is_refused_before_it_is_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip bomb: 1.3 MB of one repeated sentence compresses to a few KB. With the limit at 1 MB
    it is refused from the zip's directory, before python-docx inflates anything; the same
    file parses under a limit it fits."""
    import io
    import zipfile

    from assistant.knowledge import parse as parse_module

    source = io.BytesIO(docx_bytes())
    bomb = io.BytesIO()
    with zipfile.ZipFile(source) as original, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as packed:
        for info in original.infolist():
            part = original.read(info.filename)
            if info.filename == "word/document.xml":
                paragraph = (b"<w:p><w:r><w:t>" + b"receipts within thirty days. " * 45_000
                             + b"</w:t></w:r></w:p>")
                part = part.replace(b"</w:body>", paragraph + b"</w:body>", 1)
            packed.writestr(info.filename, part)
    data = bomb.getvalue()
    assert len(data) < 200_000
    monkeypatch.setattr(parse_module, "MAX_DOCX_XML_BYTES", 1 << 20)
    with pytest.raises(DocumentRejected, match=r"unpack to [12]\.[0-9] MB; the limit is 1 MB"):
        parse("bomb.docx", data)
    monkeypatch.setattr(parse_module, "MAX_DOCX_XML_BYTES", 8 << 20)
    assert any(len(block.text) > 1_000_000 for block in parse("bomb.docx", data).blocks)


def test_a_pdf_form_within_a_form_is_read_and_its_size_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Text drawn by a form that another form draws is found (so the check follows what pypdf
    reads), and counted: 8.4 MB of drawing instructions compressed into ~30 KB, two forms away
    from the page, are refused before any text is read (19 s for 8 MB measured unchecked)."""
    from assistant.knowledge import parse as parse_module

    small = parse("forms.pdf", pdf_drawing_a_form("Receipts within thirty days", 3))
    assert "Receipts within thirty days" in small.blocks[0].text
    bomb = pdf_drawing_a_form("hello world again", 180_000)
    assert len(bomb) < 100_000
    with pytest.raises(DocumentRejected, match=r"page 1 holds 8\.[1-9] MB .* 8 MB a page"):
        parse("bomb.pdf", bomb)
    # The per-file limit: ten ordinary pages past a limit set below their sum.
    monkeypatch.setattr(parse_module, "MAX_PDF_CONTENT_BYTES", 300)
    with pytest.raises(DocumentRejected, match="page [5-9] holds .* 0 MB a file"):
        parse("long.pdf", pdf_bytes([f"Page {n} says something." for n in range(10)]))


def test_a_file_over_the_size_limit_is_refused() -> None:
    with pytest.raises(DocumentRejected, match="the limit is 1,000"):
        check_size("huge.pdf", 1001, Limits(max_bytes=1000))


def sentence(n: int) -> str:
    return f"Sentence number {n} has exactly seven words."


def test_chunks_respect_size_overlap_sections_and_keep_tables_whole() -> None:
    body = " ".join(sentence(i) for i in range(30))  # 210 words
    table = "a | b\n" + "\n".join(f"row {i} | value {i}" for i in range(20))  # ~80 words
    blocks = [Block("heading", "Guide", ("Guide",)),
              Block("text", body, ("Guide",)),
              Block("table", table, ("Guide", "Table")),
              Block("text", "After the table.", ("Guide", "Table"))]
    chunks = chunk_blocks(blocks, ChunkSize(words=50, overlap=15, table_words=200))
    text_chunks = [c for c in chunks if c.section == "Guide"]
    assert all(len(c.text.split()) <= 50 for c in text_chunks)
    # Every sentence is in some chunk, in order, and neighbours share a sentence (overlap).
    assert all(any(sentence(i) in c.text for c in text_chunks) for i in range(30))
    for first, second in zip(text_chunks, text_chunks[1:], strict=False):
        assert first.text.split(".")[-2].strip() + "." in second.text
    tables = [c for c in chunks if c.text.startswith("a | b")]
    assert [t.text for t in tables] == [table]  # whole, alone
    assert chunks[-1].text == "After the table." and chunks[-1].section == "Guide › Table"
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_a_table_too_long_is_cut_between_rows_with_its_header() -> None:
    table = "name | value\n" + "\n".join(f"row {i} | {i}" for i in range(100))
    chunks = chunk_blocks([Block("table", table)], ChunkSize(table_words=60))
    assert len(chunks) > 1
    assert all(c.text.startswith("name | value\n") for c in chunks)
    rows = [line for c in chunks for line in c.text.splitlines()[1:]]
    assert rows == table.splitlines()[1:]
