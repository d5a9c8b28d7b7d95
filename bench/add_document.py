"""Time to add one document to a ~20,000-chunk index (``python -m bench.add_document``).

The index is built once from generated Chinese documents with ``FakeEmbedder(768)`` (no model: the
embedding time of a real model is its own, measured elsewhere) and cached under
``~/.cache/assistant/bench/add-20k/``. Each run copies the cached corpus and index to a fresh folder
(mtimes kept, as a real corpus keeps them), opens it as a server would (the index loaded), and times
``Assistant.add`` of a new 3-page document (``three_pages``: about 4,500 characters, 1,500 a page, made
the same way as the corpus; ``--document`` adds another file instead). Reported: the add's wall time, the part of it spent in
FakeEmbedder (its "embedding time"), and the rest (the overhead this benchmark is about); median of
``--runs`` (3). Nothing is asserted. ``--profile`` prints a cProfile of one more add.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from assistant.config import Settings
from assistant.index_store import load_index
from assistant.lexical import tokenize
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder

HERE = Path(__file__).resolve().parent
PAGE_CHARS = 1500  # a printed page of Chinese text
CACHE = Path.home() / ".cache" / "assistant" / "bench" / "add-20k"
DOCUMENTS, PARAGRAPHS = 1700, 18  # about 12 chunks a document at the default chunk size: ~20,000 chunks
SEED = 20261123


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    """Made-up Chinese words of 1-4 characters from the 2,500 most common CJK code points' range."""
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]
    return ["".join(rng.choice(chars) for _ in range(rng.choice((1, 2, 2, 2, 3, 4)))) for _ in range(size)]


def document(rng: random.Random, words: list[str], weights: list[float], number: int) -> str:
    """A markdown document: a title and sections of sentences of Zipf-distributed words."""
    parts = [f"# 文档 {number}"]
    for p in range(PARAGRAPHS):
        if p % 4 == 0:
            parts.append(f"## 第 {p // 4 + 1} 节")
        sentences = ["".join(rng.choices(words, weights, k=rng.randint(8, 20))) + "。" for _ in range(rng.randint(3, 6))]
        parts.append("".join(sentences))
    return "\n\n".join(parts) + "\n"


def cached_index() -> tuple[Path, Path]:
    """The cached corpus and index (built on first use: a few minutes)."""
    corpus, index = CACHE / "corpus", CACHE / "index"
    if (index / "manifest.json").exists():
        return corpus, index
    shutil.rmtree(CACHE, ignore_errors=True)
    corpus.mkdir(parents=True)
    rng = random.Random(SEED)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    past = time.time() - 86400  # files older than the build, as a corpus on disk is
    for d in range(DOCUMENTS):
        path = corpus / f"doc{d:05d}.md"
        path.write_text(document(rng, words, weights, d), "utf-8")
        os.utime(path, (past, past))
    t = time.monotonic()
    report = Assistant(Settings(corpus=corpus, index=index), embedder=FakeEmbedder(768)).build()
    print(f"built the cached index: {report.documents} documents, {report.chunks} chunks in "
          f"{time.monotonic() - t:.0f} s ({CACHE})")
    return corpus, index


def three_pages(folder: Path, pages: int = 3) -> Path:
    """Write ``folder/three-pages.md``: a new document of about ``pages`` x PAGE_CHARS characters, seeded."""
    rng = random.Random(SEED + 1)
    words = vocabulary(random.Random(SEED))  # the corpus's words
    weights = [1 / (rank + 1) for rank in range(len(words))]
    parts, size, p = ["# 新文档"], 0, 0
    while size < pages * PAGE_CHARS:
        if p % 4 == 0:
            parts.append(f"## 第 {p // 4 + 1} 节")
        parts.append("".join("".join(rng.choices(words, weights, k=rng.randint(8, 20))) + "。"
                             for _ in range(rng.randint(3, 6))))
        size, p = size + len(parts[-1]), p + 1
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "three-pages.md"
    path.write_text("\n\n".join(parts) + "\n", "utf-8")
    return path


class TimedEmbedder(FakeEmbedder):
    """FakeEmbedder that adds up the time spent in it (the add's embedding time)."""

    def __init__(self, dimension: int) -> None:
        super().__init__(dimension)
        self.seconds = 0.0

    def embed_documents(self, texts, titles=None):
        t = time.perf_counter()
        try:
            return super().embed_documents(texts, titles)
        finally:
            self.seconds += time.perf_counter() - t

    def embed_passages(self, texts, titles, units):
        t = time.perf_counter()
        seconds = self.seconds
        try:
            return super().embed_passages(texts, titles, units)
        finally:
            self.seconds = seconds + time.perf_counter() - t  # embed_documents inside is counted once


def one_add(corpus: Path, index: Path, work: Path, new: Path,
            profile: bool = False) -> tuple[float, float, int, int]:
    """(add seconds, embed seconds, chunks embedded, chunks in the index) of one add of ``new`` on a fresh copy."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(corpus, work / "corpus")  # copy2: mtimes kept
    shutil.copytree(index, work / "index")
    embedder = TimedEmbedder(768)
    assistant = Assistant(Settings(corpus=work / "corpus", index=work / "index"), embedder=embedder, reader=None)
    assistant.status()  # the index loaded, as in a running server
    tokenize("载入分词词典")  # and jieba's dictionary (about 1 s, once a process: a server has loaded it)
    profiler = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if profiler:
        profiler.enable()
    report = assistant.add([new])
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - t
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    assert report.added == (new.name,), report
    return seconds, embedder.seconds, report.build.embedded_chunks, report.build.chunks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--document", type=Path, help="the file to add (default: a generated 3-page document)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more add")
    parser.add_argument("--rewrite", action="store_true",
                        help="compare: no segments, every add rewrites the whole index (as before segments)")
    args = parser.parse_args(argv)
    if args.rewrite:
        import assistant.index_build as index_build

        index_build.MAX_SEGMENTS = 1  # an index of one segment takes no other: every add compacts
    corpus, index = cached_index()
    chunks = len(load_index(index).chunks)
    runs = []
    with tempfile.TemporaryDirectory(prefix="add-document-") as tmp:
        new = args.document or three_pages(Path(tmp) / "new")
        size = len(new.read_text("utf-8"))
        for k in range(args.runs):
            runs.append(one_add(corpus, index, Path(tmp) / f"run{k}", new))
            print(f"run {k + 1}: add {runs[-1][0]:.3f} s, embedding {runs[-1][1]:.3f} s, "
                  f"overhead {runs[-1][0] - runs[-1][1]:.3f} s")
        if args.profile:
            one_add(corpus, index, Path(tmp) / "profile", new, profile=True)
    add = statistics.median(r[0] for r in runs)
    embed = statistics.median(r[1] for r in runs)
    overhead = statistics.median(r[0] - r[1] for r in runs)
    print(f"index: {chunks:,} chunks; new document: {new.name}, {size:,} characters, {runs[0][2]} chunks "
          "embedded")
    print(f"add (median of {len(runs)}): {add:.3f} s = embedding {embed:.3f} s + overhead {overhead:.3f} s")


if __name__ == "__main__":
    main()
