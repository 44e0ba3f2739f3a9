"""Files → structured blocks: each block is a heading, a paragraph, a list item or a whole table,
with the headings above it. PDF (pypdf), DOCX (python-docx), HTML (BeautifulSoup), Markdown
and plain text. Every parser failure becomes ``DocumentRejected`` with a reason a person can act
on; nothing here touches the store.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.errors import DocumentRejected

BlockKind = Literal["heading", "text", "table"]


@dataclass(frozen=True)
class Block:
    """One structural piece of a document. ``headings`` is the path of headings above it;
    ``page`` is the PDF page it starts on (1-based), else None."""

    kind: BlockKind
    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None


@dataclass
class Parsed:
    """A document's title (its first heading, its metadata, or its file name) and blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    pages: int = 1


FORMATS = {".pdf": "pdf", ".docx": "docx", ".md": "markdown", ".markdown": "markdown",
           ".html": "html", ".htm": "html", ".txt": "text", ".text": "text", ".rst": "text"}


def format_of(name: str) -> str:
    """The parser a file name asks for; an unknown extension is refused."""
    kind = FORMATS.get(Path(name).suffix.lower())
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        raise DocumentRejected(f"{name}: unsupported file type; the knowledge base reads {known}")
    return kind


def parse(name: str, data: bytes) -> Parsed:
    """Parse ``data`` (the content of a file called ``name``) into blocks."""
    kind = format_of(name)
    parser: Callable[[bytes], Parsed] = PARSERS[kind]
    try:
        parsed = parser(data)
    except DocumentRejected:
        raise
    except Exception as exc:  # each library has its own error types; all mean "malformed"
        raise DocumentRejected(f"{name}: not a readable {kind} file ({type(exc).__name__}: "
                               f"{str(exc)[:200]})") from exc
    parsed.blocks = [b for b in parsed.blocks if b.text.strip()]
    if not any(b.kind != "heading" for b in parsed.blocks):
        raise DocumentRejected(f"{name}: no text found (a scanned PDF needs OCR first)")
    if not parsed.title:
        parsed.title = Path(name).stem
    return parsed


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentRejected("binary data where text was expected")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


class _Outline:
    """The heading path while walking a document in order."""

    def __init__(self) -> None:
        self.levels: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        self.levels = [(lv, t) for lv, t in self.levels if lv < level] + [(level, title)]

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.levels)


def _paragraphs(text: str) -> Iterator[str]:
    for part in re.split(r"\n\s*\n", text):
        cleaned = re.sub(r"[ \t]+", " ", part).strip()
        if cleaned:
            yield cleaned


def parse_text(data: bytes) -> Parsed:
    text = _decode(data)
    return Parsed(title="", blocks=[Block("text", p) for p in _paragraphs(text)])


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_SETEXT = re.compile(r"^(=+|-+)\s*$")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")


def parse_markdown(data: bytes) -> Parsed:
    """Markdown by its block structure: ATX/setext headings, fenced code, pipe tables (kept
    whole), paragraphs and list items."""
    lines = _decode(data).splitlines()
    outline = _Outline()
    blocks: list[Block] = []
    title = ""
    buffer: list[str] = []
    table: list[str] = []
    fence: list[str] | None = None

    def flush() -> None:
        if buffer:
            blocks.append(Block("text", " ".join(s.strip() for s in buffer), outline.path))
            buffer.clear()
        if table:
            blocks.append(Block("table", "\n".join(table), outline.path))
            table.clear()

    def heading(level: int, text: str) -> None:
        nonlocal title
        flush()
        outline.enter(level, text)
        blocks.append(Block("heading", text, outline.path))
        if not title and level == 1:
            title = text

    for index, line in enumerate(lines):
        if fence is not None:
            fence.append(line)
            if _MD_FENCE.match(line):
                blocks.append(Block("text", "\n".join(fence), outline.path))
                fence = None
            continue
        if _MD_FENCE.match(line):
            flush()
            fence = [line]
            continue
        match = _MD_HEADING.match(line)
        if match:
            heading(len(match.group(1)), match.group(2))
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and buffer == [] and not table and _MD_SETEXT.match(following) \
                and not line.lstrip().startswith(("|", "-", "*")):
            heading(1 if following.startswith("=") else 2, line.strip())
            continue
        if _MD_SETEXT.match(line) and blocks and blocks[-1].kind == "heading" and not buffer:
            continue  # the underline of a setext heading
        if line.lstrip().startswith("|"):
            if buffer:
                flush()
            table.append(line.strip())
            continue
        if table:
            flush()
        if not line.strip():
            flush()
        elif re.match(r"^\s*([-*+]|\d+[.)])\s+", line):
            flush()
            buffer.append(line.strip())
        else:
            buffer.append(line)
    if fence is not None:
        blocks.append(Block("text", "\n".join(fence), outline.path))
    flush()
    return Parsed(title=title, blocks=blocks)


# Block elements the HTML reader keeps. Only the outermost of them become blocks (a paragraph in
# a list item, a cell in a cell, is part of the outer one's text), found in one pass over the
# tree, so each text node lands in one block. The earlier reader (html.parser, every element
# asked for its ancestors, nested blocks emitted too) cost time and text quadratic in the file:
# html.parser never closes a <p> implicitly, so 16 KB of "<p>x" made 16 MB of text in 5 s and
# 256 KB ran past ten minutes. lxml builds the tree as browsers do (a <p>, <li> or <td> ends at
# the next one or at a heading), which documents that omit the end tags need anyway.
HTML_BLOCKS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "table", "pre",
                         "blockquote", "dt", "dd"})


def _outermost(root: Any, names: frozenset[str]) -> Iterator[Any]:
    """Elements under ``root`` named ``names`` and not inside another one, in document order."""
    from bs4 import Tag

    stack = list(reversed(root.contents))
    while stack:  # iterative: an upload can nest elements far past Python's recursion limit
        node = stack.pop()
        if not isinstance(node, Tag):
            continue
        if node.name in names:
            yield node
        else:
            stack.extend(reversed(node.contents))


def parse_html(data: bytes) -> Parsed:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    outline = _Outline()
    blocks: list[Block] = []
    body = soup.body or soup
    for element in _outermost(body, HTML_BLOCKS):
        name = element.name
        if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
            text = element.get_text(" ", strip=True)
            if text:
                outline.enter(int(name[1]), text)
                blocks.append(Block("heading", text, outline.path))
                title = title or text
        elif name == "table":
            rows = [" | ".join(cell.get_text(" ", strip=True)
                               for cell in _outermost(row, frozenset({"th", "td"})))
                    for row in _outermost(element, frozenset({"tr"}))]
            blocks.append(Block("table", "\n".join(r for r in rows if r.strip()), outline.path))
        else:
            text = element.get_text("\n" if name == "pre" else " ", strip=True)
            blocks.append(Block("text", re.sub(r"[ \t]+", " ", text), outline.path))
    if not blocks:  # markup without block elements: its text, by paragraphs
        blocks = [Block("text", p) for p in _paragraphs(body.get_text("\n"))]
    return Parsed(title=title, blocks=blocks)


# A DOCX is a zip, and its XML compresses ~300:1: measured, a 0.7 MB file holding 200 MB of
# document.xml took python-docx 24 s and 644 MB, so a file under ASSISTANT_KNOWLEDGE_MAX_MB could
# exhaust a worker's memory. The XML parts' declared sizes are bounded before python-docx opens
# them (zipfile never inflates a member past its declared size: a member that lies fails its
# CRC check instead). A 1,000-page report's document.xml is a few tens of MB.
MAX_DOCX_XML_BYTES = 64 << 20


def parse_docx(data: bytes) -> Parsed:
    import zipfile

    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        xml = sum(info.file_size for info in archive.infolist()
                  if info.filename.lower().endswith((".xml", ".rels")))
    if xml > MAX_DOCX_XML_BYTES:
        raise DocumentRejected(f"the DOCX's XML would unpack to {xml / 2**20:,.1f} MB; the "
                               f"limit is {MAX_DOCX_XML_BYTES >> 20} MB (a compressed-file "
                               f"bomb, or a document to split)")
    document = docx.Document(io.BytesIO(data))
    title = (document.core_properties.title or "").strip()
    outline = _Outline()
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows]
            blocks.append(Block("table", "\n".join(rows), outline.path))
        elif isinstance(item, Paragraph):
            text = item.text.strip()
            style = (item.style.name if item.style is not None else "") or ""
            level = _docx_heading_level(style)
            if level is not None and text:
                outline.enter(level, text)
                blocks.append(Block("heading", text, outline.path))
                title = title or text
            elif text:
                blocks.append(Block("text", text, outline.path))
    return Parsed(title=title, blocks=blocks)


def _docx_heading_level(style: str) -> int | None:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else None


# A PDF's page content is a compressed stream of drawing operators that pypdf parses in Python,
# more than linearly: measured, 2 MB of text operators on one page took 2.8 s, 8 MB 19 s, and
# 8 MB compress to 25 KB, so a file under ASSISTANT_KNOWLEDGE_MAX_MB could hold a thousand such
# pages (hours of a worker, which also answers chats). pypdf caps one stream at 75 MB; these
# cap what is parsed, per page (its content and the forms it draws) and per file, before any
# page's text is read. Text pages hold tens of KB; a dense vector drawing a few MB.
MAX_PDF_PAGE_CONTENT_BYTES = 8 << 20
MAX_PDF_CONTENT_BYTES = 64 << 20


def _pdf_page_content_bytes(page: Any) -> int:
    """The decoded size of a page's content streams and of the form XObjects it can draw,
    forms within forms included (each form counted once)."""
    from pypdf.generic import StreamObject

    contents = page.get_contents()
    size = len(contents.get_data()) if contents is not None else 0
    seen: set[int] = set()
    pending = [page.get("/Resources")]
    while pending:
        resources = pending.pop()
        resources = resources.get_object() if resources is not None else None
        xobjects = resources.get("/XObject") if isinstance(resources, dict) else None
        xobjects = xobjects.get_object() if xobjects is not None else None
        for xobject in (xobjects.values() if isinstance(xobjects, dict) else ()):
            form = xobject.get_object()
            if not isinstance(form, StreamObject) or id(form) in seen or \
                    form.get("/Subtype") != "/Form":
                continue
            seen.add(id(form))
            size += len(form.get_data())
            pending.append(form.get("/Resources"))
    return size


def parse_pdf(data: bytes) -> Parsed:
    """PDF text page by page (pypdf), split into paragraphs; the outline's titles, when the
    file has them, become the headings of the pages they point to."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        raise DocumentRejected("the PDF is encrypted; save an unencrypted copy")
    total = 0
    for number, page in enumerate(reader.pages, start=1):
        size = _pdf_page_content_bytes(page)
        total += size
        if size > MAX_PDF_PAGE_CONTENT_BYTES or total > MAX_PDF_CONTENT_BYTES:
            raise DocumentRejected(
                f"page {number} holds {size / 2**20:,.1f} MB of drawing instructions "
                f"({total / 2**20:,.1f} MB up to there); the limits are "
                f"{MAX_PDF_PAGE_CONTENT_BYTES >> 20} MB a page and "
                f"{MAX_PDF_CONTENT_BYTES >> 20} MB a file (a compressed-stream bomb, or a "
                f"document to split)")
    headings = _pdf_outline(reader)
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title).strip()
    blocks: list[Block] = []
    path: tuple[str, ...] = ()
    for number, page in enumerate(reader.pages, start=1):
        path = headings.get(number, path)
        text = page.extract_text() or ""
        for paragraph in _paragraphs(_join_pdf_lines(text)):
            blocks.append(Block("text", paragraph, path, page=number))
    return Parsed(title=title, blocks=blocks, pages=len(reader.pages))


def _join_pdf_lines(text: str) -> str:
    # pypdf gives one line per printed line: a hyphen at a line's end joins the word; the
    # chunker cuts long paragraphs at sentence ends (assistant/knowledge/chunk.py).
    text = re.sub(r"(\w)-\n(?=[a-z])", r"\1", text)
    return re.sub(r"(?<!\n)\n(?!\n)", " ", text)


def _pdf_outline(reader: object) -> dict[int, tuple[str, ...]]:
    found: dict[int, tuple[str, ...]] = {}

    def walk(items: list[object], parents: tuple[str, ...]) -> None:
        last: tuple[str, ...] = parents
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item) + 1  # type: ignore[attr-defined]
                title = str(item.title).strip()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a broken outline entry only loses a heading
                continue
            last = (*parents, title)
            found.setdefault(page, last)

    try:
        walk(list(reader.outline), ())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no outline, or a malformed one: pages have no headings
        return {}
    return found


PARSERS: dict[str, Callable[[bytes], Parsed]] = {
    "pdf": parse_pdf, "docx": parse_docx, "markdown": parse_markdown, "html": parse_html,
    "text": parse_text,
}
