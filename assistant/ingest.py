"""Files -> Document: read .txt, .md, .pdf and .docx, detect text encodings, scan a corpus folder.

``Document.text`` is kept exactly as decoded (no newline or whitespace changes): later stages record
character offsets into it, and a citation must equal ``text[start:end]``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Callable, Iterator

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table, _Row
from docx.text.paragraph import Paragraph
from lxml.etree import XMLSyntaxError
from pypdf import PdfReader
from pypdf.errors import DependencyError, PyPdfError

from . import citations
from .config import Settings
from .errors import IngestError
from .types import Document

log = logging.getLogger(__name__)

SUPPORTED = (".txt", ".md", ".pdf", ".docx")

# Frequent Chinese characters (simplified, then traditional forms that differ) and full-width
# punctuation. Text decoded with the wrong codec (GB18030 vs Big5) rarely contains them.
_COMMON_CJK = frozenset(
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发"
    "后作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但"
    "因只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手"
    "应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教"
    "儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目"
    "太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却"
    "界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规万取请档案料软页图网码错误输"
    "按钮选择删除存文户账号密登录"
    "這個們來為國說時會對於著過發後裡裏種經麼學現當沒動還進樣開從實軍無與長機點業將兩間問並應戰頭體見"
    "產製話內給門兒東聲員論處義幾認條氣題爾別變總電數報結務場計資許統區隊決馬書則聽卻達強難權設記類據"
    "邊張該規萬請檔軟頁圖網碼錯誤輸鈕選擇刪儲帳號登錄"
    "，。、：；？！「」『』（）《》“”…—"
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # tab, newlines and form feed are text
_SAMPLE = 20_000  # characters looked at when judging a decoding
# Zip bombs: a .docx is a zip, checked before python-docx inflates it. The ratio limit is Apache POI's
# (ZipSecureFile's minimum inflate ratio 0.01), for members over 1 MB: small parts of real files exceed it.
_ZIP_MAX_RATIO = 100
_ZIP_RATIO_FROM = 1 << 20
_ZIP_MAX_MEMBERS = 10_000
_XML_BYTES_PER_CHAR = 20  # unpacked, a .docx may hold its file-size limit (images) plus this per character of text
TRUSTED_AFTER_S = 2.0  # an mtime older than this (at the scan) is trusted to change with the file (FAT: 2 s steps)


def check_supported(path: Path | str) -> None:
    """IngestError unless the file's type (its suffix) is one this program reads: ``SUPPORTED``."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED:
        raise IngestError(f"unsupported type {suffix or '(no suffix)'} (supported: {', '.join(SUPPORTED)})")


def max_document_chars() -> int:
    """The most characters of text one document may hold: ASSISTANT_MAX_DOCUMENT_CHARS (Settings.max_document_chars).

    The default of ``read_document`` and ``scan_folder`` when their caller passes no ``max_chars``."""
    name = "ASSISTANT_MAX_DOCUMENT_CHARS"
    return Settings.from_env({name: os.environ.get(name, "")}).max_document_chars


def read_document(path: Path, root: Path, max_bytes: int = 50 << 20, max_chars: int | None = None) -> Document:
    """Read one file into a Document; raise IngestError naming the file and the reason.

    ``max_chars``: a document with more text is refused (default ``max_document_chars()``)."""
    path, root = Path(path), Path(root)
    source = _source(path, root)
    try:
        return _read(path, source, max_bytes, max_chars or max_document_chars())
    except IngestError as e:
        raise IngestError(f"{source}: {e}") from None


def scan_folder(root: Path, max_bytes: int = 50 << 20, max_chars: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[Document], list[tuple[str, str]]]:
    """Read every supported file under ``root``; return (documents, [(source, reason skipped)]).

    ``max_chars``: a document with more text is skipped (default ``max_document_chars()``).
    ``progress(done, total)``: files read, before each one and at the end."""
    scan = scan_corpus(root, max_bytes, max_chars, progress)
    return scan.documents, scan.skipped


@dataclass(frozen=True)
class Known:
    """What the index holds of a file: its size and mtime when it was read, and what was read from it."""

    size: int
    mtime_ns: int  # 0: never trusted (the file is read)
    sha256: str
    encoding: str
    pages: tuple[tuple[int, int], ...]
    chars: int


@dataclass(frozen=True)
class Scan:
    documents: list[Document]
    skipped: list[tuple[str, str]]
    stats: dict[str, tuple[int, int]]  # source -> (size, mtime_ns) of its file, as read; mtime_ns 0: too recent
    unread: frozenset[str]  # sources taken from ``known`` unread (their ``text`` is ""): size and mtime unchanged


def scan_corpus(root: Path, max_bytes: int = 50 << 20, max_chars: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                known: Mapping[str, Known] | None = None) -> Scan:
    """Like ``scan_folder``, and: the (size, mtime_ns) of each file read, and, with ``known`` (what an index
    holds, by source), a file whose size and mtime_ns both equal its ``known`` ones is not read again: its
    document is taken as known (sha256, encoding, pages; an empty ``text``) and named in ``unread``. An
    mtime within TRUSTED_AFTER_S of the scan is recorded as 0, so a file written just around its reading
    (where a later change could keep its mtime) is read again next time."""
    root = Path(root)
    max_chars = max_chars or max_document_chars()
    if not root.is_dir():
        raise IngestError(f"{root}: corpus folder not found (or not a folder)")
    real_root = root.resolve()
    documents: list[Document] = []
    skipped: list[tuple[str, str]] = []
    stats: dict[str, tuple[int, int]] = {}
    unread: set[str] = set()
    first_source: dict[str, str] = {}  # sha256 -> source of the first file with that content
    trusted_before = time.time_ns() - int(TRUSTED_AFTER_S * 1e9)
    paths = list(_walk(root, root, skipped))
    for done, path in enumerate(paths):
        if progress:
            progress(done, len(paths))
        source = _source(path, root)
        try:
            if not _is_utf8(source):  # it could not be written to the index, nor shown
                source = os.fsencode(source).decode("utf-8", "backslashreplace")
                raise IngestError("file name is not valid UTF-8; rename the file")
            if path.is_symlink() and not _resolves_inside(path, real_root):
                raise IngestError("symlink points outside the corpus")
            stat = _stat(path)  # None: it is gone (reading it says so)
            if stat is not None and not stat[2]:
                raise IngestError("not a regular file")
            stat = stat and stat[:2]
            document = _unchanged(path, source, stat, (known or {}).get(source), max_bytes, max_chars)
            if document is None:
                document = _read(path, source, max_bytes, max_chars)
            else:
                unread.add(source)
            if document.sha256 in first_source:
                unread.discard(source)
                raise IngestError(f"duplicate of {first_source[document.sha256]}")
        except IngestError as e:
            log.info("skipped %s: %s", source, e)
            skipped.append((source, str(e)))
            continue
        first_source[document.sha256] = source
        documents.append(document)
        if stat is not None:
            stats[source] = (stat[0], stat[1] if stat[1] < trusted_before else 0)
    if progress:
        progress(len(paths), len(paths))
    log.info("read %d documents from %s (%d unchanged, not read again), skipped %d files", len(documents), root,
             len(unread), len(skipped))
    return Scan(documents, skipped, stats, frozenset(unread))


def _stat(path: Path) -> tuple[int, int, bool] | None:
    """(size, mtime_ns, is a regular file) of a path, taken before it is read (a change after that shows as a
    newer mtime); None when it cannot be stat'ed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, S_ISREG(st.st_mode)


def _unchanged(path: Path, source: str, stat: tuple[int, int] | None, known: Known | None, max_bytes: int,
               max_chars: int) -> Document | None:
    """The known document of a file whose size and mtime are as recorded (and still within the limits), else None."""
    if known is None or stat is None or not known.mtime_ns or stat != (known.size, known.mtime_ns) \
            or stat[0] > max_bytes or known.chars > max_chars or not known.sha256:
        return None
    check_supported(path)
    return Document(source=source, text="", sha256=known.sha256, encoding=known.encoding, pages=known.pages)


def decode_text(raw: bytes) -> tuple[str, str]:
    """Decode the bytes of a text file; return (text, encoding name) or raise IngestError."""
    if raw.startswith(b"\xef\xbb\xbf"):
        forced = "utf-8-sig"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        forced = "utf-16"
    elif b"\x00" in raw:  # before UTF-8: ASCII-range UTF-16 is also valid UTF-8
        forced = _utf16_without_bom(raw)
        if forced is None:
            raise IngestError("binary content (NUL bytes), not a text file")
    else:
        forced = None
    if forced:
        try:
            return _decode_checked(raw, forced), forced
        except UnicodeDecodeError:
            raise IngestError(f"starts like {forced} text but is not valid {forced}") from None
    try:
        return _decode_checked(raw, "utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    utf16 = _utf16_by_characters(raw)
    if utf16:
        try:
            return _decode_checked(raw, utf16), utf16
        except UnicodeDecodeError:
            pass
    candidates = {}
    for encoding in ("gb18030", "big5"):
        try:
            candidates[encoding] = _decode_checked(raw, encoding)
        except UnicodeDecodeError:
            continue
    if not candidates:
        raise IngestError("cannot be decoded as UTF-8, GB18030, Big5 or UTF-16")
    # Ties go to GB18030, listed first.
    encoding = max(candidates, key=lambda name: _cjk_score(candidates[name], name))
    return candidates[encoding], encoding


def line_of(text: str, offset: int) -> int:
    """1-based line number of a character offset into ``text``."""
    return text.count("\n", 0, max(offset, 0)) + 1


def page_of(document: Document, offset: int) -> int | None:
    """1-based page number of a character offset, or None for documents without pages."""
    return citations.page_of(list(document.pages), offset)


def _read(path: Path, source: str, max_bytes: int, max_chars: int) -> Document:
    """Read a file; IngestError messages here give the reason only, without the file name."""
    check_supported(path)
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise IngestError(f"file is too large: {_size(size)}, the limit is {_size(max_bytes)} "
                              "(ASSISTANT_MAX_FILE_MB)")
        raw = path.read_bytes()
    except OSError as e:
        raise IngestError(f"cannot be read ({e.strerror or e})") from None
    if not raw:
        raise IngestError("file is empty (0 bytes)")
    pages: tuple[tuple[int, int], ...] = ()
    encoding = "utf-8"
    if suffix == ".pdf":
        text, pages = _read_pdf(raw, max_chars)
    elif suffix == ".docx":
        text = _read_docx(raw, max_bytes + _XML_BYTES_PER_CHAR * max_chars)
    else:
        text, encoding = decode_text(raw)
        if not text.strip():
            raise IngestError("file contains only whitespace")
    if len(text) > max_chars:
        raise _too_much_text(f"{len(text):,}", max_chars)
    log.debug("read %s (%s, %d characters)", source, encoding, len(text))
    return Document(source=source, text=text, sha256=hashlib.sha256(raw).hexdigest(),
                    encoding=encoding, pages=pages)


def _read_pdf(raw: bytes, max_chars: int) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Its text and pages; pypdf refuses a Flate bomb (a stream inflating past 75 MB) by itself, and the
    pages are read only until the text passes ``max_chars``."""
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError("encrypted PDF that needs a password; save a copy without encryption")
        page_texts, chars = [], 0
        for page in reader.pages:
            page_texts.append(page.extract_text() or "")
            chars += len(page_texts[-1]) + 2
            if chars > max_chars + 2:
                raise _too_much_text(f"more than {max_chars:,}", max_chars)
    except DependencyError:
        raise IngestError("encrypted PDF (AES); install the 'cryptography' package to read it") from None
    except (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as e:
        raise IngestError(f"corrupt PDF ({_brief(e)})") from None
    if not any(text.strip() for text in page_texts):
        raise IngestError("scanned PDF without a text layer; OCR is not supported")
    pages, start = [], 0
    for number, text in enumerate(page_texts, 1):
        pages.append((start, number))
        start += len(text) + 2  # the "\n\n" between pages
    return "\n\n".join(page_texts), tuple(pages)


def _read_docx(raw: bytes, max_unpacked: int) -> str:
    try:
        _check_zip(raw, max_unpacked)
        document = docx.Document(io.BytesIO(raw))
        blocks = [_block_text(block) for block in document.iter_inner_content()]
    except (zipfile.BadZipFile, PackageNotFoundError, XMLSyntaxError, KeyError, ValueError, IndexError, EOFError,
            NotImplementedError, RuntimeError) as e:  # the last three: a truncated, odd or encrypted zip member
        if isinstance(e, XMLSyntaxError) and re.search(r"amplification|entity|huge input", str(e), re.I):
            raise IngestError("the document's XML expands too far (nested entities, a 'billion laughs' bomb); "
                              "it was not read") from None
        raise IngestError(f"corrupt .docx ({_brief(e)}); old .doc files must be saved as .docx") from None
    text = "\n\n".join(block for block in blocks if block.strip())
    if not text:
        raise IngestError("document contains no text")
    return text


def _check_zip(raw: bytes, max_unpacked: int) -> None:
    """Refuse a zip bomb before python-docx inflates it: too many members, members that declare more than
    ``max_unpacked`` bytes in all, or one that declares a ratio over ``_ZIP_MAX_RATIO``. Then the members are
    inflated in 1 MB pieces and counted up to that limit, whatever they declare, so that what python-docx reads
    next is known to fit (zipfile itself stops a member at its declared size, with a CRC error)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = archive.infolist()
        if len(members) > _ZIP_MAX_MEMBERS:
            raise IngestError(f"the .docx holds {len(members):,} files; the limit is {_ZIP_MAX_MEMBERS:,}")
        declared = sum(m.file_size for m in members)
        if declared > max_unpacked:
            raise _unpacks_too_far(_size(declared), max_unpacked)
        for m in members:
            if m.file_size > _ZIP_RATIO_FROM and m.file_size > _ZIP_MAX_RATIO * max(m.compress_size, 1):
                raise IngestError(f"the .docx is a zip bomb: {m.filename} expands "
                                  f"{m.file_size // max(m.compress_size, 1):,} times ({_size(m.compress_size)} to "
                                  f"{_size(m.file_size)}); the limit is {_ZIP_MAX_RATIO} times")
        unpacked = 0
        for m in members:
            with archive.open(m) as member:
                while piece := member.read(1 << 20):
                    unpacked += len(piece)
                    if unpacked > max_unpacked:
                        raise _unpacks_too_far(f"more than {_size(max_unpacked)}", max_unpacked)


def _unpacks_too_far(size: str, max_unpacked: int) -> IngestError:
    return IngestError(f"the .docx unpacks to {size}; the limit is {_size(max_unpacked)} (ASSISTANT_MAX_FILE_MB "
                       f"plus {_XML_BYTES_PER_CHAR} bytes per character of ASSISTANT_MAX_DOCUMENT_CHARS)")


def _too_much_text(chars: str, max_chars: int) -> IngestError:
    return IngestError(f"the text is {chars} characters; the limit is {max_chars:,} characters a document "
                       "(ASSISTANT_MAX_DOCUMENT_CHARS)")


def _block_text(block: Paragraph | Table) -> str:
    """A paragraph (headings as '#' lines) or a table (cells joined by ' | ', one row a line)."""
    if isinstance(block, Table):
        return "\n".join(row for row in map(_row_text, block.rows) if row)
    style = block.style.name if block.style is not None else ""
    level = 1 if style == "Title" else int(style[8:]) if re.fullmatch(r"Heading \d", style) else 0
    if level and block.text.strip():
        return "#" * min(level, 6) + " " + block.text
    return block.text


def _row_text(row: _Row) -> str:
    """Cells joined by ' | ' ('' for an empty row); a merged cell repeats per grid column: once here."""
    cells = []
    for cell in row.cells:
        if not cells or cell._tc is not cells[-1]._tc:
            cells.append(cell)
    texts = [" ".join(cell.text.split()) for cell in cells]
    return " | ".join(texts) if any(texts) else ""


def _decode_checked(raw: bytes, encoding: str) -> str:
    """Strict decode that rejects text with many control characters (binary content)."""
    text = raw.decode(encoding)
    sample = text[:_SAMPLE]
    if "\x00" in text or len(_CONTROL.findall(sample)) > 0.1 * len(sample):
        raise IngestError("binary content (control characters), not a text file")
    return text


def _utf16_without_bom(raw: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when every other byte is mostly NUL (ASCII-range UTF-16), or when one byte
    order reads as mostly frequent Chinese characters and ASCII (Chinese UTF-16); else None."""
    sample = raw[: 2 * _SAMPLE]
    if len(raw) % 2 or len(sample) < 2:
        return None
    half = len(sample) // 2
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= 0.3 * half and even <= 0.02 * half:
        return "utf-16-le"
    if even >= 0.3 * half and odd <= 0.02 * half:
        return "utf-16-be"
    return _utf16_by_characters(raw)


def _utf16_by_characters(raw: bytes) -> str | None:
    """The byte order whose reading is mostly frequent Chinese characters and ASCII (Chinese UTF-16
    without a BOM, where few bytes are NUL), or None."""
    sample = raw[: 2 * _SAMPLE]
    if len(raw) % 2 or len(sample) < 2:
        return None
    scores = {encoding: _utf16_plausibility(sample, encoding) for encoding in ("utf-16-le", "utf-16-be")}
    best = max(scores, key=scores.get)
    return best if scores[best] >= 0.5 and scores[best] >= 2 * min(scores.values()) else None


def _utf16_plausibility(sample: bytes, encoding: str) -> float:
    """Share of the sample's characters that are printable ASCII, whitespace or frequent Chinese."""
    text = sample.decode(encoding, errors="replace")
    return sum(c in _COMMON_CJK or " " <= c <= "~" or c in "\t\r\n" for c in text) / max(len(text), 1)


def _cjk_score(text: str, encoding: str) -> float:
    """How plausible a GB18030/Big5 decoding is: share of frequent characters, plus the share of
    characters from the encoding's own frequent block (GB2312 level 1, Big5 level 1)."""
    table, low, high = ("gb2312", 0xB0, 0xD7) if encoding == "gb18030" else ("big5", 0xA4, 0xC6)
    wide = [c for c in text[:_SAMPLE] if ord(c) > 0x7F]
    if not wide:
        return 0.0
    common = frequent_block = 0
    for c in wide:
        if c in _COMMON_CJK:
            common += 1
        try:
            frequent_block += low <= c.encode(table)[0] <= high
        except UnicodeEncodeError:
            pass
    return (common + frequent_block) / len(wide)


def _walk(folder: Path, root: Path, skipped: list[tuple[str, str]]) -> Iterator[Path]:
    """Paths under ``folder`` in sorted order, without hidden names; a symlinked folder inside the
    corpus is not followed (its files are reached through the real folder)."""
    try:
        with os.scandir(folder) as it:  # a DirEntry knows its type without a stat (but for symlinks)
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        skipped.append((_source(folder, root), f"folder cannot be read ({e.strerror or e})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        if not entry.is_symlink() and _is_dir(entry):
            yield from _walk(path, root, skipped)
        elif not (_is_dir(entry) and path.resolve().is_relative_to(root.resolve())):
            yield path


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder (or a link to one); False where that cannot be told (a symlink loop), as
    ``Path.is_dir`` answers: reading the file then says what is wrong."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _resolves_inside(link: Path, real_root: Path) -> bool:
    try:
        return link.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        raise IngestError("symlink loop (the link leads back to itself)") from None


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a file name arrive as lone surrogates
        return False
    return True


def _source(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.name


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _brief(error: Exception) -> str:
    """The first line of a library error message, for a one-line IngestError."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
