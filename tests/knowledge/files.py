"""Real files of each format, made in the test (no binary fixtures in the repository)."""

from __future__ import annotations

import io


def pdf_bytes(pages: list[str], title: str = "") -> bytes:
    """A valid PDF with one line of Helvetica text per page (written by hand: pypdf reads
    but cannot typeset text), with a correct cross-reference table."""
    objects: list[bytes] = []
    count = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode())
    font_id = 3 + 2 * count
    for index, text in enumerate(pages):
        content_id = 4 + 2 * index
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents "
                       f"{content_id} 0 R /Resources << /Font << /F1 {font_id} 0 R >> >> >>"
                       .encode())
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream
                       + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info_id = None
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
        info_id = len(objects)
    return _pdf_file(objects, info_id)


def pdf_drawing_a_form(text: str, repeat: int) -> bytes:
    """A one-page PDF whose page draws form A, which draws form B, whose compressed content
    writes ``text`` ``repeat`` times: how a decompression bomb can hide from a check of the
    page's own content."""
    import zlib

    line = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET\n".encode() * repeat
    packed = zlib.compress(line, 9)
    box = b"/Type /XObject /Subtype /Form /BBox [0 0 612 792]"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /A 5 0 R >> >> >>",
        b"<< /Length 5 >>\nstream\n/A Do\nendstream",
        b"<< " + box + b" /Resources << /XObject << /B 6 0 R >> >> /Length 5 >>\nstream\n"
        b"/B Do\nendstream",
        b"<< " + box + b" /Resources << /Font << /F1 7 0 R >> >> /Filter /FlateDecode "
        b"/Length %d >>\nstream\n" % len(packed) + packed + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return _pdf_file(objects, None)


def _pdf_file(objects: list[bytes], info_id: int | None) -> bytes:
    """Numbered objects, the cross-reference table and the trailer."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    info = f" /Info {info_id} 0 R" if info_id else ""
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n"
              "%%EOF\n".encode())
    return out.getvalue()


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Expenses guide"
    document.add_heading("Expenses", level=1)
    document.add_paragraph("Submit receipts in the finance portal within thirty days.")
    document.add_heading("Limits", level=2)
    table = document.add_table(rows=3, cols=2)
    for row, (item, limit) in enumerate([("Item", "Limit"), ("Hotel", "150 EUR"),
                                         ("Meals", "40 EUR")]):
        table.cell(row, 0).text = item
        table.cell(row, 1).text = limit
    document.add_paragraph("Taxis need a receipt too.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
