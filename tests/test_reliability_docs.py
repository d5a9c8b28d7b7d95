"""Hostile and odd documents in one corpus: each is indexed or skipped with a stated reason, and the rest
of the corpus is indexed and answers with verbatim citations. The 50 MB file runs in a child process
that reports its peak memory.

Already proven one file at a time in test_ingest.py: empty / whitespace files, binary content with a
.txt name, GB18030 / Big5 / UTF-16 / BOM detection, corrupt / encrypted / scanned PDFs, docx tables and
merged cells, symlinks leading out of the corpus, FIFOs, duplicates, oversize files.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import docx
import pytest

from assistant.chunking import chunk_document
from assistant.config import Settings
from assistant.index_store import load_index
from assistant.ingest import decode_text, read_document, scan_folder
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder
from offline_guard import offline_env
from test_ingest import encrypted_pdf, make_pdf

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

GOOD = {
    "plain.md": "# 储存\n\n苹果应放在阴凉处保存。香蕉不宜放进冰箱。",
    "english.txt": "The warranty lasts two years. Returns are accepted within seven days.",
}
MIXED = ("# Mixed scripts 混合\n\nالعربية تُكتب من اليمين. עברית גם כן. हिन्दी देवनागरी में लिखी जाती है।\n\n"
         "Emoji: 👩‍👩‍👧‍👦 family, 🇨🇳 flag, ✋🏽 hand, e\u0301 combining accent. 数学符号 ∑∫ 和 𝔘𝔫𝔦𝔠𝔬𝔡𝔢。\n")
GB18030_ONLY = "生僻字𠀀𪚥和欧元符号€可以用GB18030编码。第二句话在这里。\n"
BIG5 = "本產品保固期為兩年。請先關閉電源，然後聯繫售後服務中心。\n"
UTF16_ZH = "这份说明没有字节序标记。第二句话讲的是退货政策：七天内可以退货。\n"


def word_table() -> bytes:
    document = docx.Document()
    document.add_heading("价格表", 1)
    table = document.add_table(rows=2, cols=2)
    for row, values in zip(table.rows, [("型号", "价格"), ("X100", "999元")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", "hello " * 1000)
    return buffer.getvalue()


def hostile_corpus(folder: Path, outside: Path) -> dict[str, str]:
    """Write the corpus; return {source: expected text} of what must be indexed."""
    files: dict[str, bytes] = {
        "plain.md": GOOD["plain.md"].encode(),
        "english.txt": GOOD["english.txt"].encode(),
        "mixed.md": MIXED.encode(),
        "gb18030.txt": GB18030_ONLY.encode("gb18030"),
        "big5.txt": BIG5.encode("big5"),
        "utf16-bom.txt": UTF16_ZH.encode("utf-16"),
        "utf16-nobom.txt": UTF16_ZH.encode("utf-16-le"),
        "utf8-bom.md": b"\xef\xbb\xbf" + "带字节序标记的文本。".encode(),
        "table.docx": word_table(),
        "text.pdf": make_pdf(["Manual page one", "Manual page two"]),
        "long-line.txt": ("无标点长行" * 40_000 + "x" * 100_000).encode(),
        # skipped:
        "zero.txt": b"",
        "blank.md": b"  \n\t\r\n",
        "png.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
        "archive.md": zip_bytes(),
        "elf.txt": b"\x7fELF\x02\x01\x01" + bytes(500),
        "corrupt.pdf": make_pdf(["Some text"])[:150],
        "locked.pdf": encrypted_pdf("secret"),
        "scan.pdf": make_pdf([None]),
        "corrupt.docx": b"PK\x03\x04 garbage" * 10,
        "zz-copy-of-plain.md": GOOD["plain.md"].encode(),
        "script.py": b"import os\nos.system('echo hi')\n",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    outside.write_text("TOP-SECRET text from outside the corpus", "utf-8")
    os.symlink(outside, folder / "outside-link.txt")
    os.symlink(outside.parent, folder / "outside-folder")
    os.symlink("loop.txt", folder / "loop.txt")  # a symlink to itself
    os.symlink("missing.txt", folder / "dangling.txt")
    (folder / os.fsdecode(b"latin1-\xe9t\xe9.txt")).write_bytes("名字不是UTF-8编码的文件。".encode())
    return {"plain.md": GOOD["plain.md"], "english.txt": GOOD["english.txt"], "mixed.md": MIXED,
            "gb18030.txt": GB18030_ONLY, "big5.txt": BIG5, "utf16-bom.txt": UTF16_ZH, "utf16-nobom.txt": UTF16_ZH,
            "utf8-bom.md": "带字节序标记的文本。", "table.docx": "# 价格表\n\n型号 | 价格\nX100 | 999元",
            "text.pdf": "Manual page one\n\nManual page two",
            "long-line.txt": "无标点长行" * 40_000 + "x" * 100_000}


SKIPPED = {
    "zero.txt": "empty", "blank.md": "only whitespace", "png.txt": "binary content", "archive.md": "binary content",
    "elf.txt": "binary content", "corrupt.pdf": "corrupt PDF", "locked.pdf": "encrypted PDF",
    "scan.pdf": "scanned PDF", "corrupt.docx": "corrupt .docx", "zz-copy-of-plain.md": "duplicate of plain.md",
    "script.py": "unsupported type .py", "outside-link.txt": "symlink points outside",
    "outside-folder": "symlink points outside", "loop.txt": "symlink", "dangling.txt": "cannot be read",
    "latin1-\\xe9t\\xe9.txt": "not valid UTF-8",
}


def test_hostile_corpus_indexes_the_good_files_and_states_a_reason_for_each_other(tmp_path):
    corpus = tmp_path / "corpus"
    expected = hostile_corpus(corpus, tmp_path / "secret.txt")

    documents, skipped = scan_folder(corpus)

    assert {d.source: d.text for d in documents} == expected
    reasons = dict(skipped)
    assert set(reasons) == set(SKIPPED)
    for source, reason in SKIPPED.items():
        assert reason in reasons[source], (source, reasons[source])
        assert "\n" not in reasons[source]

    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index", min_evidence=0.01),
                          embedder=FakeEmbedder())
    report = assistant.build()
    assert report.documents == len(expected) and {s for s, _ in report.skipped} == set(SKIPPED)
    index = load_index(tmp_path / "index")
    assert {c.source for c in index.chunks} == set(expected)
    manifest_text = (tmp_path / "index" / "manifest.json").read_text("utf-8")
    assert "TOP-SECRET" not in manifest_text and "secret.txt" not in manifest_text
    for question in ("苹果应该怎么保存？", "How long is the warranty?", "X100 的价格", "family emoji 🇨🇳",
                     "GB18030 欧元符号", "保固期", "退货政策"):
        answer = assistant.ask(question)
        for c in (*answer.citations, *answer.related):
            assert expected[c.source][c.start:c.end] == c.quote
    assert not any("TOP-SECRET" in c.text for c in index.chunks)


def test_symlink_loop_is_skipped_not_a_crash(tmp_path):
    (tmp_path / "a.txt").write_text("正文。", "utf-8")
    os.symlink("b.txt", tmp_path / "c.txt")  # c -> b -> c
    os.symlink("c.txt", tmp_path / "b.txt")
    documents, skipped = scan_folder(tmp_path)
    assert [d.source for d in documents] == ["a.txt"]
    assert [s for s, _ in skipped] == ["b.txt", "c.txt"] and all("symlink" in r for _, r in skipped)


def test_file_name_that_is_not_utf8_is_skipped_and_the_build_still_succeeds(tmp_path, fake_embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ok.txt").write_text("好的文件。", "utf-8")
    (corpus / os.fsdecode(b"\xff\xfe.txt")).write_text("坏名字。", "utf-8")
    report = Assistant(Settings(corpus=corpus, index=tmp_path / "index"), embedder=fake_embedder).build()
    assert report.documents == 1
    (source, reason), = report.skipped
    assert "not valid UTF-8" in reason and "rename" in reason
    json.loads((tmp_path / "index" / "manifest.json").read_text("utf-8"))  # the reason itself was written


def test_utf16_chinese_without_bom_is_read_as_text():
    for encoding in ("utf-16-le", "utf-16-be"):
        assert decode_text(UTF16_ZH.encode(encoding)) == (UTF16_ZH, encoding)
        assert decode_text(("中文" * 3000).encode(encoding))[0] == "中文" * 3000


@pytest.mark.parametrize("text", [
    "a" * 300_000,  # one word, no space, no punctuation
    "无标点的中文长行" * 40_000,
    ("word " * 60_000).strip(),
    "😀" * 50_000,
    "\u0301" * 20_000 + "e",  # combining marks with nothing to combine with
])
def test_very_long_lines_without_punctuation_are_cut_to_size_with_exact_offsets(tmp_path, text):
    path = tmp_path / "long.txt"
    path.write_text(text, "utf-8")
    document = read_document(path, tmp_path)
    chunks = chunk_document(document, 360, 0)
    assert chunks and all(0 < len(c.text) <= 360 for c in chunks)
    assert all(document.text[c.start:c.end] == c.text for c in chunks)
    assert sum(len(c.text) for c in chunks) >= len(text.replace(" ", "")) * 0.9  # nothing much dropped


BIG_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    sys.path[:0] = [{root!r}]
    from pathlib import Path
    import numpy as np
    from assistant.chunking import chunk_document
    from assistant.ingest import read_document

    class ConstantEmbedder:  # the real model would take hours on 50 MB here; this one costs nothing
        model_id, weights_sha256, dimension, dtype = "test/constant", "", 8, "fp32"
        def embed_documents(self, texts, titles=None):
            return np.full((len(texts), 8), 8 ** -0.5, np.float32)
        def embed_queries(self, texts):
            return np.full((len(texts), 8), 8 ** -0.5, np.float32)

    def status_mb(key):  # VmRSS: now; VmHWM: this process's peak (ru_maxrss can carry the parent's, from fork)
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    path, build = Path(sys.argv[1]), sys.argv[2] == "build"
    result = {{"bytes": path.stat().st_size, "rss_before_mb": status_mb("VmRSS")}}
    t0 = time.monotonic()
    if not build:
        document = read_document(path, path.parent)
        chunks = chunk_document(document, 360, 0)
        result.update(chars=len(document.text), chunks=len(chunks), longest=max(len(c.text) for c in chunks),
                      exact=all(document.text[c.start:c.end] == c.text for c in chunks))
    else:
        from assistant.config import Settings
        from assistant.pipeline import Assistant
        assistant = Assistant(Settings(corpus=path.parent, index=Path(sys.argv[3]), min_evidence=0.01,
                                       max_document_chars=100_000_000),
                              embedder=ConstantEmbedder())
        report = assistant.build()
        answer = assistant.ask("大模型创业公司需要关注什么？")
        document = read_document(path, path.parent)
        result.update(chunks=report.chunks, cited=len(answer.citations) + len(answer.related),
                      exact=all(document.text[c.start:c.end] == c.quote for c in (*answer.citations, *answer.related)))
    result.update(seconds=round(time.monotonic() - t0, 1), rss_peak_mb=status_mb("VmHWM"),
                  ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result))
""").format(root=str(ROOT))
BIG_PARAGRAPH = ("大模型创业公司需要关注数据、算力和人才三个方面。" * 3 + "\n"
                 + "The quick brown fox jumps over the lazy dog near the river bank. " * 3 + "\n\n")


def write_big_file(path: Path, size: int) -> Path:
    """A text file of ``size`` bytes: mixed Chinese / English paragraphs, then one 1 MB line without punctuation."""
    block = BIG_PARAGRAPH.encode("utf-8")
    tail = b"x" * (1 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range((size - len(tail)) // len(block)):
            f.write(block)
        f.write(tail)
    return path


def run_big(*args: str) -> dict:
    # 25 million characters: over the default per-document text cap, which this test is not about.
    env = {**offline_env(), "ASSISTANT_MAX_DOCUMENT_CHARS": "100000000"}
    out = subprocess.run([sys.executable, "-c", BIG_CHILD, *args], capture_output=True, text=True, timeout=900,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.slow
def test_50_mb_text_file_is_read_and_chunked_in_bounded_memory(tmp_path):
    path = write_big_file(tmp_path / "corpus" / "big.txt", (50 << 20) - 4096)
    result = run_big(str(path), "chunk")
    print(f"\n50 MB ingest + chunk: {result}")
    assert result["exact"] and result["longest"] <= 360 and result["chunks"] > 100_000
    # Bounded: the text, its chunks and their offsets, a small multiple of the file (measured: see RELIABILITY.md).
    assert result["rss_peak_mb"] - result["rss_before_mb"] < 8 * result["bytes"] / (1 << 20)


@pytest.mark.slow
def test_50_mb_text_file_is_indexed_and_answers(tmp_path):
    """The whole build (chunks, vectors from a constant fake embedder, BM25) and a question; peak memory printed."""
    path = write_big_file(tmp_path / "corpus" / "big.txt", (50 << 20) - 4096)
    result = run_big(str(path), "build", str(tmp_path / "index"))
    print(f"\n50 MB build with a constant fake embedder: {result}")
    assert result["chunks"] > 100_000 and result["cited"] and result["exact"]
