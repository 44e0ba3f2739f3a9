"""Blocks → chunks: by section (the heading path), paragraphs packed up to a size, a few
sentences of overlap between neighbours, tables whole (a very long table is cut between rows,
its header row repeated). Sizes are in words, which the embedding model reads as ~1.3 pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from assistant.knowledge.parse import Block

SECTION_SEPARATOR = " › "
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)")


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece: its text, the section it belongs to, its order in the document,
    and the PDF page it starts on."""

    position: int
    text: str
    section: str
    page: int | None = None


@dataclass(frozen=True)
class ChunkSize:
    """``words``: the most words of a chunk; ``overlap``: words repeated from the chunk
    before (whole sentences, up to this many); ``table_words``: the most words of a table
    kept whole."""

    words: int = 120
    overlap: int = 30
    table_words: int = 400


def words(text: str) -> int:
    return len(text.split())


def sentences(text: str, limit: int) -> list[str]:
    """``text`` cut at sentence ends, and a sentence longer than ``limit`` words cut by words."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        parts = sentence.split()
        for start in range(0, len(parts), limit):
            out.append(" ".join(parts[start:start + limit]))
    return [s for s in out if s]


def _sections(blocks: Sequence[Block]) -> Iterator[tuple[tuple[str, ...], list[Block]]]:
    current: list[Block] = []
    path: tuple[str, ...] | None = None
    for block in blocks:
        if block.kind == "heading" or block.headings != path:
            if current:
                yield path or (), current
            current = []
            path = block.headings
        if block.kind != "heading":
            current.append(block)
    if current:
        yield path or (), current


def _table_pieces(text: str, size: ChunkSize) -> list[str]:
    if words(text) <= size.table_words:
        return [text]
    rows = text.splitlines()
    header, body = rows[0], rows[1:]
    pieces: list[str] = []
    piece: list[str] = [header]
    for row in body:
        if len(piece) > 1 and words("\n".join([*piece, row])) > size.table_words:
            pieces.append("\n".join(piece))
            piece = [header]
        piece.append(row)
    pieces.append("\n".join(piece))
    return pieces


class _Packer:
    """Fills one section's chunks sentence by sentence, carrying an overlap between them."""

    def __init__(self, section: str, size: ChunkSize, out: list[Chunk]) -> None:
        self.section, self.size, self.out = section, size, out
        self.packed: list[str] = []  # sentences of the chunk being filled
        self.fresh = 0  # of those, how many no chunk has shown yet
        self.page: int | None = None

    def emit(self, text: str, page: int | None) -> None:
        self.out.append(Chunk(len(self.out), text.strip(), self.section, page))

    def add(self, sentence: str, page: int | None, paragraph_start: bool) -> None:
        if self.fresh and words(" ".join([*self.packed, sentence])) > self.size.words:
            self.close()
        if not self.fresh:
            self.page = page
        # Paragraphs stay apart in the text: a blank line between them.
        self.packed.append("\n\n" + sentence if paragraph_start and self.packed else sentence)
        self.fresh += 1

    def close(self) -> None:
        if self.fresh:
            self.emit(" ".join(self.packed), self.page)
        # The overlap: the last whole sentences, up to size.overlap words.
        tail: list[str] = []
        for sentence in reversed(self.packed):
            if words(" ".join([sentence, *tail])) > self.size.overlap:
                break
            tail.insert(0, sentence.lstrip("\n"))
        self.packed, self.fresh = tail, 0

    def table(self, block: Block) -> None:
        self.close()
        for piece in _table_pieces(block.text, self.size):
            self.emit(piece, block.page)
        self.packed = []


def chunk_blocks(blocks: Sequence[Block], size: ChunkSize | None = None) -> list[Chunk]:
    """Cut a parsed document into chunks (see the module's docstring)."""
    size = size or ChunkSize()
    chunks: list[Chunk] = []
    for path, section_blocks in _sections(blocks):
        packer = _Packer(SECTION_SEPARATOR.join(path), size, chunks)
        for block in section_blocks:
            if block.kind == "table":
                packer.table(block)
                continue
            for index, sentence in enumerate(sentences(block.text, size.words)):
                packer.add(sentence, block.page, index == 0)
        packer.close()
    return chunks
