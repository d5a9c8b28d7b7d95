"""Tests for assistant.ingest: every fixture file is built here, in tmp_path."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from assistant.errors import IngestError
from assistant.ingest import SUPPORTED, decode_text, line_of, page_of, read_document, scan_folder
from assistant.types import Document

SIMPLIFIED = "本产品保修期为两年。如果设备出现故障，请先关闭电源，然后联系售后服务中心。\r\n退货政策：七天内可以退货。\n"
TRADITIONAL = "本產品保固期為兩年。如果設備出現故障，請先關閉電源，然後聯繫售後服務中心。\r\n退貨政策：七天內可以退貨。\n"


def make_pdf(pages: list[str | None]) -> bytes:
    """A minimal valid PDF with one Helvetica text line per page (None: a page with no text)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET" if text else "0 0 100 100 re f"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects)} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("ascii")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("ascii")
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode("ascii")
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode("ascii")
    return bytes(out)


def encrypted_pdf(user_password: str, owner_password: str | None = None) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Secret page"]))))
    writer.encrypt(user_password, owner_password)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read_error(path: Path, root: Path, **kwargs) -> str:
    with pytest.raises(IngestError) as caught:
        read_document(path, root, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- text files ----------------------------------------------------------------------------------

def test_utf8_text_is_kept_exactly(tmp_path):
    text = "# Title\r\n\r\n  indented line \t\n\nlast line without newline"
    path = write(tmp_path / "notes" / "a.md", text)
    document = read_document(path, tmp_path)
    assert document.text == text
    assert document.source == "notes/a.md"
    assert document.encoding == "utf-8"
    assert document.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert document.pages == ()


def test_source_outside_root_is_the_file_name(tmp_path):
    path = write(tmp_path / "elsewhere" / "b.txt", "hello")
    assert read_document(path, tmp_path / "corpus").source == "b.txt"


@pytest.mark.parametrize("raw, text, encoding", [
    (b"\xef\xbb\xbfhello\r\nworld", "hello\r\nworld", "utf-8-sig"),
    ("\ufeffhello\r\n世界".encode("utf-16-le"), "hello\r\n世界", "utf-16"),
    ("\ufeffhello\r\n世界".encode("utf-16-be"), "hello\r\n世界", "utf-16"),
    ("plain ascii\nin utf-16".encode("utf-16-le"), "plain ascii\nin utf-16", "utf-16-le"),
    ("plain ascii\nin utf-16".encode("utf-16-be"), "plain ascii\nin utf-16", "utf-16-be"),
    ("naïve café ✓".encode("utf-8"), "naïve café ✓", "utf-8"),
])
def test_decode_text_boms_and_utf16(raw, text, encoding):
    assert decode_text(raw) == (text, encoding)


# Short samples: each needs both signals of the GB18030/Big5 score (frequent characters and the
# encoding's frequent block); with only one of them some of these are decoded with the wrong codec.
@pytest.mark.parametrize("text", [SIMPLIFIED, "你好，世界", "资料库设定", "退货政策", "价格：100元", "发票",
                                  "本產品保", "和發票"])
def test_gb18030_is_detected(text):
    assert decode_text(text.encode("gb18030")) == (text, "gb18030")


@pytest.mark.parametrize("text", [TRADITIONAL, "你好，世界", "資料庫設定", "退貨政策", "價格：100元", "發票",
                                  "修改備份", "障，請"])
def test_big5_is_detected(text):
    assert decode_text(text.encode("big5")) == (text, "big5")


def test_traditional_text_in_gb18030_stays_gb18030():
    assert decode_text(TRADITIONAL.encode("gb18030")) == (TRADITIONAL, "gb18030")


def test_big5_file_is_read_with_exact_text(tmp_path):
    path = write(tmp_path / "zh.txt", TRADITIONAL.encode("big5"))
    document = read_document(path, tmp_path)
    assert (document.text, document.encoding) == (TRADITIONAL, "big5")
    assert "\r\n" in document.text


def test_undecodable_text_names_the_encodings_tried(tmp_path):
    path = write(tmp_path / "latin1.txt", "café au lait, s'il vous plaît".encode("latin-1"))
    message = read_error(path, tmp_path)
    assert message.startswith("latin1.txt: ")
    assert "cannot be decoded as UTF-8, GB18030, Big5 or UTF-16" in message


def test_binary_file_named_txt_is_rejected(tmp_path):
    path = write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" * 20)
    assert "binary content" in read_error(path, tmp_path)


def test_bom_with_invalid_utf16_is_rejected():
    with pytest.raises(IngestError, match="not valid utf-16"):
        decode_text(b"\xff\xfea\x00\x00\xd8")  # a lone surrogate after the BOM


def test_control_characters_without_nul_are_binary():
    with pytest.raises(IngestError, match="binary content"):
        decode_text(bytes(range(1, 32)) * 10)


def test_empty_and_whitespace_files_are_rejected(tmp_path):
    assert "empty" in read_error(write(tmp_path / "empty.md", b""), tmp_path)
    assert "only whitespace" in read_error(write(tmp_path / "blank.txt", " \r\n\t\n"), tmp_path)
    assert "only whitespace" in read_error(write(tmp_path / "bom.txt", b"\xef\xbb\xbf\n"), tmp_path)


def test_unsupported_suffix(tmp_path):
    message = read_error(write(tmp_path / "data.xyz", "text"), tmp_path)
    assert message.startswith("data.xyz: unsupported type .xyz")
    assert all(suffix in message for suffix in SUPPORTED)


def test_oversize_file_names_the_limit(tmp_path):
    path = write(tmp_path / "big.txt", "x" * 100)
    message = read_error(path, tmp_path, max_bytes=10)
    assert "too large" in message and "100 bytes" in message and "limit is 10 bytes" in message
    assert read_document(path, tmp_path, max_bytes=100).text == "x" * 100


# --- PDF -----------------------------------------------------------------------------------------

def test_pdf_pages_and_offsets(tmp_path):
    path = write(tmp_path / "manual.pdf", make_pdf(["Hello first page", None, "Third page text"]))
    document = read_document(path, tmp_path)
    assert document.text == "Hello first page\n\n\n\nThird page text"
    assert document.pages == ((0, 1), (18, 2), (20, 3))
    start = document.text.index("Third")
    assert page_of(document, start) == 3
    assert page_of(document, 5) == 1
    assert page_of(document, len(document.text)) == 3


def test_corrupt_pdf(tmp_path):
    assert "corrupt PDF" in read_error(write(tmp_path / "bad.pdf", b"this is not a pdf" * 20), tmp_path)
    truncated = write(tmp_path / "cut.pdf", make_pdf(["Some text"])[:150])
    assert "corrupt PDF" in read_error(truncated, tmp_path)


def test_encrypted_pdf_with_password_is_rejected(tmp_path):
    message = read_error(write(tmp_path / "locked.pdf", encrypted_pdf("secret")), tmp_path)
    assert "encrypted PDF" in message and "password" in message


def test_encrypted_pdf_with_empty_user_password_is_read(tmp_path):
    path = write(tmp_path / "owner.pdf", encrypted_pdf("", owner_password="owner"))
    assert read_document(path, tmp_path).text == "Secret page"


def test_pdf_without_text_layer(tmp_path):
    message = read_error(write(tmp_path / "scan.pdf", make_pdf([None, None])), tmp_path)
    assert "scanned PDF without a text layer; OCR is not supported" in message


# --- docx ----------------------------------------------------------------------------------------

def test_docx_headings_paragraphs_and_table_in_order(tmp_path):
    word = docx.Document()
    word.add_heading("Manual", 0)
    word.add_heading("Setup", 1)
    word.add_paragraph("First paragraph.")
    word.add_paragraph("")
    table = word.add_table(rows=3, cols=2)  # the third row stays empty and is left out
    for row, values in zip(table.rows, [("Name", "Value"), ("port", "8080")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    word.add_heading("Details", 2)
    word.add_paragraph("Last paragraph.")
    word.save(tmp_path / "manual.docx")
    document = read_document(tmp_path / "manual.docx", tmp_path)
    assert document.text == ("# Manual\n\n# Setup\n\nFirst paragraph.\n\nName | Value\nport | 8080"
                             "\n\n## Details\n\nLast paragraph.")
    assert document.pages == () and page_of(document, 3) is None


def test_docx_merged_cells_appear_once(tmp_path):
    word = docx.Document()
    table = word.add_table(rows=1, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 1))
    merged.text = "wide"
    table.cell(0, 2).text = "narrow"
    word.save(tmp_path / "t.docx")
    assert read_document(tmp_path / "t.docx", tmp_path).text == "wide | narrow"


def test_corrupt_docx(tmp_path):
    assert "corrupt .docx" in read_error(write(tmp_path / "bad.docx", b"PK\x03\x04 garbage" * 10), tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    assert "corrupt .docx" in read_error(write(tmp_path / "zip.docx", buffer.getvalue()), tmp_path)


# --- folders and helpers -------------------------------------------------------------------------

def test_scan_folder_reads_skips_and_reports(tmp_path):
    corpus = tmp_path / "corpus"
    write(corpus / "a.txt", "alpha text")
    write(corpus / "sub" / "b.md", "# beta")
    write(corpus / "sub" / "copy.txt", "alpha text")
    write(corpus / "sub" / "zh.txt", SIMPLIFIED.encode("gb18030"))
    write(corpus / "c.pdf", make_pdf(["PDF page"]))
    write(corpus / ".hidden.txt", "hidden")
    write(corpus / ".git" / "notes.txt", "hidden folder")
    write(corpus / ".DS_Store.xyz", "hidden, unsupported")
    write(corpus / "photo.xyz", "unsupported")
    write(corpus / "empty.txt", b"")
    write(corpus / "broken.pdf", b"garbage")
    outside = write(tmp_path / "secret.txt", "outside the corpus")
    os.symlink(outside, corpus / "link.txt")
    os.symlink(corpus / "sub", corpus / "sublink")  # a folder symlink inside the corpus: not followed
    os.symlink(tmp_path, corpus / "uplink")  # a folder symlink leading out of the corpus
    os.mkfifo(corpus / "pipe.txt")  # reading it would block forever

    documents, skipped = scan_folder(corpus)

    assert [d.source for d in documents] == ["a.txt", "c.pdf", "sub/b.md", "sub/zh.txt"]
    assert all(isinstance(d, Document) for d in documents)
    assert documents[3].encoding == "gb18030" and documents[3].text == SIMPLIFIED
    reasons = dict(skipped)
    assert list(reasons) == ["broken.pdf", "empty.txt", "link.txt", "photo.xyz", "pipe.txt", "sub/copy.txt",
                             "uplink"]
    assert "corrupt PDF" in reasons["broken.pdf"]
    assert "empty" in reasons["empty.txt"]
    assert reasons["link.txt"] == "symlink points outside the corpus"
    assert reasons["photo.xyz"].startswith("unsupported type .xyz")
    assert reasons["sub/copy.txt"] == "duplicate of a.txt"
    assert reasons["pipe.txt"] == "not a regular file"
    assert reasons["uplink"] == "symlink points outside the corpus"
    assert not reasons["broken.pdf"].startswith("broken.pdf")  # the source is not repeated


def test_scan_folder_missing_root(tmp_path):
    with pytest.raises(IngestError, match="corpus folder not found"):
        scan_folder(tmp_path / "nope")


def test_line_of_counts_newlines():
    text = "one\r\ntwo\nthree"
    assert line_of(text, 0) == 1
    assert line_of(text, text.index("two")) == 2
    assert line_of(text, text.index("three")) == 3
    assert line_of(text, len(text)) == 3
