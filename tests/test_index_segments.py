"""Segments: an add-only update writes one new segment instead of rewriting the index (docs/index-format.md).

Proves: the previous files are left byte for byte (and mtime for mtime) as they were; a segmented index
answers exactly as a full rebuild of the same corpus (dense, BM25, chunks, citations); a removal or a
replacement compacts, and then no file holds the removed text; a failed add leaves the previous index
serving; version 1 manifests load; broken segment manifests are refused with one line; many adds compact;
unchanged corpus files are not read again by an add.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import assistant.ingest as ingest
from assistant import generations
from assistant.config import Settings
from assistant.errors import IndexStoreError
from assistant.index_build import MAX_SEGMENTS
from assistant.index_store import MANIFEST, load_index, read_manifest
from assistant.lexical import LexicalIndex
from assistant.manifest import FORMAT_VERSION, SEGMENTS_VERSION
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder

TEXTS = {
    "garden.md": "# 园艺指南\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n\n## 施肥\n\n每两周施一次有机肥。",
    "cooking.txt": "Boil the pasta in salted water for nine minutes.\nDrain it and add olive oil.\n",
    "notes/router.md": "Router notes\n\n路由器重启后需要等待两分钟。The Wi-Fi password is printed on the router label.",
}
NEW = {  # "zz-" sorts after every other document: a full build puts its chunks last too
    "zz-travel.md": "# 旅行\n\n出发前检查护照和签证。机场安检需要提前两小时到达。\n\n行李不要超过二十公斤。",
    "zzz-python.md": "# Python\n\nPython is a programming language. Lists and dicts are built in.\n\nTuples are immutable.",
}
FIRST = {"aa-space.md": "# 太空\n\n火星上有太阳系最高的火山。木星是最大的行星，番茄种不活。"}  # sorts first
QUERIES = ["番茄 浇水", "Python lists", "护照 签证", "pasta water", "火星 火山", "路由器 重启", "不存在的词"]
SECRET, SECRET_WORD = "zz-secret.md", "犰狳蜂鸟秘方ZEBRAQUOKKA"
LONG_AGO = time.time() - 3600  # corpus files older than the scan: their size and mtime are trusted


def write(folder: Path, texts: dict[str, str]) -> None:
    for source, text in texts.items():
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_text(text, "utf-8")
        os.utime(folder / source, (LONG_AGO, LONG_AGO))


def make(tmp_path: Path, texts: dict[str, str], name: str = "a") -> Assistant:
    corpus = tmp_path / name / "corpus"
    write(corpus, texts)
    settings = Settings(corpus=corpus, index=tmp_path / name / "index", chunk_size=40, min_evidence=0.01,
                        reader="extractive")
    assistant = Assistant(settings, embedder=FakeEmbedder())
    assistant.build()
    return assistant


def upload(tmp_path: Path, texts: dict[str, str]) -> list[Path]:
    folder = tmp_path / f"up-{len(list(tmp_path.glob('up-*')))}"
    folder.mkdir()
    for name, text in texts.items():
        (folder / name).write_text(text, "utf-8")
    return [folder / name for name in texts]


def files_of(index: Path) -> dict[str, tuple[bytes, int]]:
    """Every data file of the index folder (not the manifest or the lock): its bytes and mtime_ns."""
    return {str(p.relative_to(index)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(index.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, ".lock")}


def segments(index: Path) -> list[dict]:
    m = read_manifest(index)
    return m["segments"] if m["format_version"] == SEGMENTS_VERSION else [{"files": m["files"]}]


def identity(index) -> list[tuple]:
    return [(c.source, c.start, c.end, c.text, c.heading) for c in index.chunks]


def assert_same_index(a, b) -> None:
    """Two loaded indexes hold the same chunks in the same order and score every query alike."""
    assert identity(a) == identity(b) and a.lines == b.lines and a.pages == b.pages
    n = a.vectors.ntotal
    np.testing.assert_allclose(a.vectors.reconstruct_n(0, n), b.vectors.reconstruct_n(0, n), atol=1e-6)
    for name in ("vectors", "offsets", "spans"):
        np.testing.assert_array_equal(getattr(a.units, name), getattr(b.units, name))
    for query in QUERIES:
        np.testing.assert_allclose(a.lexical.scores(query), b.lexical.scores(query), rtol=1e-5, atol=1e-7)
        assert a.lexical.matched_terms(query, list(range(len(a.chunks)))) == \
            b.lexical.matched_terms(query, list(range(len(b.chunks))))
        vector = FakeEmbedder().embed_queries([query])[0]
        (ia, sa), (ib, sb) = a.dense_search(vector, 5), b.dense_search(vector, 5)
        np.testing.assert_allclose(sa, sb, rtol=1e-5)
        assert [identity(a)[i] for i in ia] == [identity(b)[i] for i in ib]


def answers(assistant: Assistant) -> list[tuple]:
    out = []
    for query in QUERIES:
        answer = assistant.ask(query)
        out.append((answer.abstained, answer.text, [(c.source, c.start, c.end, c.quote, c.line) for c in
                                                    (*answer.citations, *answer.related)]))
    return out


@pytest.fixture
def assistant(tmp_path) -> Assistant:
    return make(tmp_path, TEXTS)


# -- an add-only update writes a segment ----------------------------------------------------------------

def test_an_add_writes_one_segment_and_leaves_the_previous_files_as_they_were(assistant, tmp_path):
    index = assistant.settings.index
    before = files_of(index)
    old_files = read_manifest(index)["files"]
    embedder = assistant.embedder
    embedder.embedded.clear()

    report = assistant.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))

    m = read_manifest(index)
    assert m["format_version"] == SEGMENTS_VERSION and "files" not in m
    assert [s["files"] for s in m["segments"]][0] == old_files and len(m["segments"]) == 2
    assert m["generation"] == m["segments"][-1]["generation"] != m["segments"][0]["generation"]
    after = files_of(index)
    assert {name: after[name] for name in before} == before  # not one byte nor one mtime changed
    new_files = set(after) - set(before)
    assert new_files and all(m["generation"] in name for name in new_files)
    new_chunks = [c.text for c in assistant._current().index.chunks if c.source == "zz-travel.md"]
    assert report.build.embedded_chunks == len(new_chunks) and set(embedder.embedded) == set(new_chunks)
    assert sum(s["chunk_count"] for s in m["segments"]) == m["chunk_count"] == report.build.chunks
    assert [d["source"] for d in m["documents"]] == sorted([*TEXTS, "zz-travel.md"], key=lambda s: Path(s).parts)


def test_each_segment_records_the_dtype_of_its_vectors(assistant, tmp_path):
    """An add made by an embedder of another dtype keeps each segment's own; the index says "mixed"."""
    index = assistant.settings.index
    assert read_manifest(index)["embedding"]["dtype"] == "fp32"
    assistant.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    m = read_manifest(index)
    assert [s["dtype"] for s in m["segments"]] == ["fp32", "fp32"] and m["embedding"]["dtype"] == "fp32"
    assistant.embedder.dtype = "bf16"  # the same model in another dtype (an instance attribute: this embedder only)
    assistant.add(upload(tmp_path, {"zz-more.md": "# 更多\n\n骆驼在沙漠里可以很多天不喝水。"}))
    m = read_manifest(index)
    assert [s["dtype"] for s in m["segments"]] == ["fp32", "fp32", "bf16"] and m["embedding"]["dtype"] == "mixed"
    assert load_index(index).info.parts[-1].dtype == "bf16"
    assert not assistant.ask("骆驼 喝水").abstained  # it serves
    (assistant.settings.corpus / "zz-more.md").unlink()  # a removal compacts into one segment; dtypes are not
    # kept per document, so reused vectors of segments made in another dtype than the embedder's say "mixed"
    assistant.build()
    m = read_manifest(index)
    assert m["format_version"] == FORMAT_VERSION and m["embedding"]["dtype"] == "mixed"
    assistant.build(rebuild=True)
    assert read_manifest(index)["embedding"]["dtype"] == "bf16"  # every vector made anew


def test_the_served_index_after_an_add_is_the_one_on_disk(assistant, tmp_path):
    report = assistant.add(upload(tmp_path, NEW))
    served, read = report.build.index, load_index(assistant.settings.index)
    assert served is assistant._current().index
    assert json.loads(json.dumps(served.manifest)) == read.manifest
    assert_same_index(served, read)
    for query in QUERIES:  # not merely close: the same arithmetic on the same tables
        np.testing.assert_array_equal(served.lexical.scores(query), read.lexical.scores(query))


def test_a_segmented_index_answers_as_a_full_rebuild_of_the_same_corpus(assistant, tmp_path):
    assistant.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    assistant.add(upload(tmp_path, {"zzz-python.md": NEW["zzz-python.md"]}))
    assert len(segments(assistant.settings.index)) == 3
    fresh = make(tmp_path, {**TEXTS, **NEW}, "fresh")
    assert_same_index(load_index(assistant.settings.index), load_index(fresh.settings.index))
    assert_same_index(assistant._current().index, fresh._current().index)
    reloaded = Assistant(assistant.settings, embedder=FakeEmbedder())
    assert answers(assistant) == answers(fresh) == answers(reloaded)
    assert [d.source for d in assistant.status().documents] == [d.source for d in fresh.status().documents]


def test_a_document_that_sorts_first_is_appended_and_scores_as_in_a_full_rebuild(assistant, tmp_path):
    assistant.add(upload(tmp_path, FIRST))
    fresh = make(tmp_path, {**TEXTS, **FIRST}, "fresh")
    mine, theirs = assistant._current().index, fresh._current().index
    assert mine.chunks[-1].source == "aa-space.md" and theirs.chunks[0].source == "aa-space.md"
    position = {c: i for i, c in enumerate(identity(theirs))}
    order = [position[c] for c in identity(mine)]  # the same chunks, in another order
    assert sorted(order) == list(range(len(order)))
    for query in QUERIES:
        np.testing.assert_allclose(mine.lexical.scores(query), theirs.lexical.scores(query)[order], rtol=1e-5,
                                   atol=1e-7)
    assert answers(assistant) == answers(fresh)
    # its documents are listed where a full build lists them
    assert [d.source for d in assistant.status().documents] == [d.source for d in fresh.status().documents]


# -- removing or replacing compacts --------------------------------------------------------------------

def holding(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_removing_after_segments_compacts_and_leaves_no_trace(assistant, tmp_path):
    index = assistant.settings.index
    assistant.add(upload(tmp_path, {SECRET: f"# 秘密\n\n{SECRET_WORD} 只在这份文件里。"}))
    assistant.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    assert len(segments(index)) == 3 and holding(index, SECRET_WORD.encode())
    secret_vectors = assistant._current().index.dense_vectors(
        np.asarray([i for i, c in enumerate(assistant._current().index.chunks) if c.source == SECRET]))

    assistant.remove([SECRET])

    m = read_manifest(index)
    assert m["format_version"] == FORMAT_VERSION and "segments" not in m
    names = {p.name for p in index.iterdir()} - {MANIFEST, ".lock"}
    assert names == set(m["files"].values())  # the old segments are deleted
    for needle in (SECRET_WORD.encode(), SECRET_WORD.lower().encode(), SECRET.encode(),
                   *(v.astype(np.float32).tobytes() for v in secret_vectors)):
        assert holding(index, needle) == []
    fresh = make(tmp_path, {**TEXTS, **{"zz-travel.md": NEW["zz-travel.md"]}}, "fresh")
    assert_same_index(load_index(index), load_index(fresh.settings.index))
    assert answers(assistant) == answers(fresh)


def test_replacing_after_a_segment_compacts(assistant, tmp_path):
    index = assistant.settings.index
    assistant.add(upload(tmp_path, {SECRET: f"# 秘密\n\n{SECRET_WORD} 只在这份文件里。"}))
    report = assistant.add(upload(tmp_path, {SECRET: "# 新版\n\n新的内容，没有旧词。"}), replace=True)
    assert report.replaced == (SECRET,)
    assert read_manifest(index)["format_version"] == FORMAT_VERSION
    assert holding(index, SECRET_WORD.encode()) == [] and holding(index, SECRET_WORD.lower().encode()) == []


def test_many_adds_compact_into_one_segment(assistant, tmp_path):
    index = assistant.settings.index
    texts = dict(TEXTS)
    for k in range(MAX_SEGMENTS):
        name = f"zz-{k}.md"
        texts[name] = f"# 第{k}份\n\n第{k}份文件讲的是编号{k}的事情。Item number {k} is here."
        assistant.add(upload(tmp_path, {name: texts[name]}))
        assert len(segments(index)) == min(k + 2, MAX_SEGMENTS) or k + 2 > MAX_SEGMENTS
    assert len(segments(index)) == 1 and read_manifest(index)["format_version"] == FORMAT_VERSION
    assert {p.name for p in index.iterdir()} - {MANIFEST, ".lock"} == set(read_manifest(index)["files"].values())
    fresh = make(tmp_path, texts, "fresh")
    assert_same_index(load_index(index), load_index(fresh.settings.index))


# -- a failed add ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["lexical", "commit"])
def test_a_failed_add_leaves_the_previous_index_serving(assistant, tmp_path, monkeypatch, where):
    index, corpus = assistant.settings.index, assistant.settings.corpus
    before, manifest = files_of(index), (index / MANIFEST).read_bytes()
    expected = identity(load_index(index))

    def broken(*args, **kwargs):
        raise OSError("the disk went away")
    if where == "lexical":
        monkeypatch.setattr(LexicalIndex, "save", broken)
    else:
        monkeypatch.setattr(generations, "_fsync_tree", broken)  # after the files moved in, before the swap
    with pytest.raises(OSError, match="went away"):
        assistant.add(upload(tmp_path, NEW))
    assert (index / MANIFEST).read_bytes() == manifest and identity(load_index(index)) == expected
    assert identity(assistant._current().index) == expected
    assert not (corpus / "zz-travel.md").exists()
    assert {name: value for name, value in files_of(index).items() if name in before} == before
    monkeypatch.undo()
    assistant.add(upload(tmp_path, NEW))  # the next add works, and removes what the failed one left
    assert set(files_of(index)) == {str(p.relative_to(index)) for s in segments(index) for name in s["files"].values()
                                    for p in [index / name, *(index / name).rglob("*")] if p.is_file()}


# -- versions and broken manifests ------------------------------------------------------------------------

def test_a_version_1_index_of_an_older_build_still_loads_and_takes_a_segment(assistant, tmp_path):
    index = assistant.settings.index
    data = json.loads((index / MANIFEST).read_text("utf-8"))
    assert data["format_version"] == 1
    for d in data["documents"]:
        del d["mtime_ns"]  # as written before this version
    (index / MANIFEST).write_text(json.dumps(data, ensure_ascii=False, indent=1), "utf-8")
    older = Assistant(assistant.settings, embedder=FakeEmbedder())
    assert identity(older._current().index) == identity(assistant._current().index)
    older.add(upload(tmp_path, NEW))
    assert len(segments(index)) == 2
    assert_same_index(load_index(index), load_index(make(tmp_path, {**TEXTS, **NEW}, "fresh").settings.index))


@pytest.fixture
def segmented(assistant, tmp_path) -> Path:
    assistant.add(upload(tmp_path, NEW))
    return assistant.settings.index


def edit(index: Path, change) -> None:
    data = json.loads((index / MANIFEST).read_text("utf-8"))
    change(data)
    (index / MANIFEST).write_text(json.dumps(data), "utf-8")


def _remove_file(index: Path) -> None:
    (index / read_manifest(index)["segments"][1]["files"]["chunks"]).unlink()


BROKEN = {
    "a segment file is missing": (lambda m: None, "is missing"),
    "counts do not add up": (lambda m: m["segments"][1].update(chunk_count=m["segments"][1]["chunk_count"] + 1),
                             "hold"),
    "a name leaves the folder": (lambda m: m["segments"][1]["files"].update(chunks="../chunks.jsonl"),
                                 "names no valid chunks file in segment 2"),
    "an absolute name": (lambda m: m["segments"][0]["files"].update(vectors="/etc/passwd"),
                         "names no valid vectors file in segment 1"),
    "a hidden name": (lambda m: m["segments"][1]["files"].update(lexical=".tmp-x"), "names no valid lexical"),
    "an unknown part": (lambda m: m["segments"][1]["files"].update(script="run.py"), "names no valid script"),
    "a segment without vectors": (lambda m: m["segments"][1]["files"].pop("vectors"), "no valid vectors file"),
    "two segments share a file": (lambda m: m["segments"][1]["files"].update(chunks=m["segments"][0]["files"]["chunks"]),
                                  "names a file another part names"),
    "units in one segment only": (lambda m: m["segments"][1]["files"].pop("units"), "sentence vectors"),
    "segments is empty": (lambda m: m.update(segments=[]), "'segments' must be"),
    "segments is an object": (lambda m: m.update(segments={"a": 1}), "'segments' must be"),
    "a segment of no chunks": (lambda m: m["segments"][1].update(chunk_count=0), "positive chunk_count"),
    "a segment starts inside a document": (
        lambda m: (m["segments"][0].update(chunk_count=m["segments"][0]["chunk_count"] + 1),
                   m["segments"][1].update(chunk_count=m["segments"][1]["chunk_count"] - 1)),
        "does not start where a document starts"),
    "the generation is not the newest segment's": (lambda m: m.update(generation="20200101T000000-00000000"),
                                                   "newest segment"),
    "version 2 without segments": (lambda m: m.pop("segments"), "lacks 'segments' (format version 2)"),
    "segments with a vector store": (lambda m: m.update(vector_store={"engine": "milvus", "collection": "c"}),
                                     "vector store"),
    "a document listed twice": (lambda m: m["documents"].append(dict(m["documents"][0])), "damaged"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_segment_manifest_is_refused_with_one_line(segmented, name):
    change, expected = BROKEN[name]
    if name == "a segment file is missing":
        _remove_file(segmented)
    else:
        edit(segmented, change)
    with pytest.raises(IndexStoreError) as caught:
        load_index(segmented)
    message = str(caught.value)
    assert expected in message and "rebuild" in message and "\n" not in message, message


def test_a_damaged_segment_file_is_refused(segmented):
    pristine = {p: p.read_bytes() for p in segmented.rglob("*") if p.is_file()}
    files = read_manifest(segmented)["segments"][1]["files"]
    lexical = segmented / files["lexical"]
    np.save(lexical / "offsets.npy", np.load(lexical / "offsets.npy")[:-1], allow_pickle=False)
    with pytest.raises(IndexStoreError, match="lexical index .* damaged.*rebuild"):
        load_index(segmented)
    for path, data in pristine.items():
        path.write_bytes(data)
    chunks = segmented / files["chunks"]
    chunks.write_text("".join(chunks.read_text("utf-8").splitlines(keepends=True)[:-1]), "utf-8")
    with pytest.raises(IndexStoreError, match="inconsistent.*rebuild"):
        load_index(segmented)
    for path, data in pristine.items():
        path.write_bytes(data)
    (lexical / "vocab.txt").write_text("a\na\n", "utf-8")
    with pytest.raises(IndexStoreError, match="lexical index .* damaged.*rebuild"):
        load_index(segmented)


def test_a_broken_segmented_index_is_rebuilt_by_the_next_build(segmented):
    _remove_file(segmented)
    assistant = Assistant(Settings(corpus=segmented.parent / "corpus", index=segmented, chunk_size=40),
                          embedder=FakeEmbedder())
    report = assistant.build()
    assert not report.unchanged and report.documents == len(TEXTS) + len(NEW)
    assert read_manifest(segmented)["format_version"] == FORMAT_VERSION


# -- reading the corpus -------------------------------------------------------------------------------------

def reads(monkeypatch, corpus: Path) -> list[str]:
    """The corpus files read from now on (by source; an upload's own check reads it outside the corpus)."""
    seen: list[str] = []
    real = ingest._read

    def reading(path, source, *args):
        if Path(path).resolve().is_relative_to(corpus.resolve()):
            seen.append(source)
        return real(path, source, *args)
    monkeypatch.setattr(ingest, "_read", reading)
    return seen


def test_an_add_reads_only_the_new_file(assistant, tmp_path, monkeypatch):
    seen = reads(monkeypatch, assistant.settings.corpus)
    assistant.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    assert seen == ["zz-travel.md"]
    seen.clear()
    assistant.add(upload(tmp_path, {"zzz-python.md": NEW["zzz-python.md"]}))
    assert seen == ["zz-travel.md", "zzz-python.md"]  # the first was written just now: its mtime is not trusted yet
    seen.clear()
    assistant.build()  # a full build reads every file
    assert sorted(seen) == sorted([*TEXTS, *NEW])


def test_a_touched_or_edited_file_is_read_again(assistant, tmp_path, monkeypatch):
    corpus = assistant.settings.corpus
    os.utime(corpus / "garden.md", (LONG_AGO + 5, LONG_AGO + 5))  # same content, another mtime
    (corpus / "cooking.txt").write_text(TEXTS["cooking.txt"].replace("nine", "ten!"), "utf-8")  # same size
    os.utime(corpus / "cooking.txt", (LONG_AGO + 9, LONG_AGO + 9))
    seen = reads(monkeypatch, assistant.settings.corpus)
    report = assistant.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    assert sorted(seen) == ["cooking.txt", "garden.md", "zz-travel.md"]
    assert report.build.reused_documents == 2  # cooking.txt changed: the index is compacted with its new text
    assert any("ten!" in c.text for c in assistant._current().index.chunks)
    fresh = make(tmp_path, {**TEXTS, "cooking.txt": TEXTS["cooking.txt"].replace("nine", "ten!"),
                            "zz-travel.md": NEW["zz-travel.md"]}, "fresh")
    assert_same_index(load_index(assistant.settings.index), load_index(fresh.settings.index))


def test_an_add_into_an_index_the_server_has_not_loaded_reads_the_manifest(assistant, tmp_path, monkeypatch):
    other = Assistant(assistant.settings, embedder=FakeEmbedder())  # a new process: nothing loaded yet
    seen = reads(monkeypatch, assistant.settings.corpus)
    other.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    assert seen == ["zz-travel.md"] and len(segments(assistant.settings.index)) == 2


def test_an_unread_file_that_the_index_cannot_supply_is_read(assistant, tmp_path, monkeypatch):
    # another chunk size: nothing can be reused, so the files passed unread are read after all
    settings = dataclasses.replace(assistant.settings, chunk_size=50)
    changed = Assistant(settings, embedder=FakeEmbedder())
    seen = reads(monkeypatch, assistant.settings.corpus)
    report = changed.add(upload(tmp_path, {"zz-travel.md": NEW["zz-travel.md"]}))
    assert set(seen) >= set(TEXTS) and report.build.embedded_chunks == report.build.chunks
    assert read_manifest(settings.index)["chunking"]["size"] == 50


def test_joined_vectors_search_as_one_flat_index_and_copy_nothing():
    import faiss

    from assistant.index_load import JoinedVectors, joined_vectors

    rng = np.random.default_rng(7)
    rows = rng.standard_normal((23, 8)).astype(np.float32)
    whole = faiss.IndexFlatIP(8)
    whole.add(rows)
    parts = []
    for a, b in ((0, 10), (10, 12), (12, 23)):
        part = faiss.IndexFlatIP(8)
        part.add(rows[a:b])
        parts.append(part)
    joined = joined_vectors([joined_vectors(parts[:2]), parts[2]])  # a joined index joins flat
    assert isinstance(joined, JoinedVectors) and joined.parts == parts and (joined.ntotal, joined.d) == (23, 8)
    queries = np.vstack([rng.standard_normal((4, 8)).astype(np.float32), rows[3:4]])
    for k in (1, 5, 11, 23, 30):  # 11 and 30: more than a segment holds, 30 more than all
        want_scores, want_ids = whole.search(queries, k)
        scores, ids = joined.search(queries, k)
        np.testing.assert_array_equal(ids, want_ids)
        found = want_ids >= 0
        np.testing.assert_allclose(scores[found], want_scores[found], rtol=1e-6)
    ids = np.array([22, 0, 11, 10, 9, 12])
    np.testing.assert_array_equal(joined.reconstruct_batch(ids), rows[ids])
    np.testing.assert_array_equal(joined.reconstruct_n(0, 23), rows)
    tied = rows.copy()
    tied[17] = tied[3]  # equal scores across segments: the lower row id first
    parts[2].reset()
    parts[2].add(tied[12:])
    assert list(JoinedVectors(parts).search(tied[3:4], 2)[1][0]) == [3, 17]


def test_unit_vectors_of_several_blocks_read_as_one_table():
    from assistant.index_load import UnitVectors

    rng = np.random.default_rng(3)

    def table(counts):
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(offsets[-1])
        return UnitVectors(rng.standard_normal((n, 4)).astype(np.float16), offsets,
                           np.arange(2 * n, dtype=np.int32).reshape(n, 2))

    a, b, c = table([2, 0, 3]), table([1, 4]), table([2])
    joined = a.extended(b).extended(c)
    flat = UnitVectors(np.concatenate([a.vectors, b.vectors, c.vectors]), joined.offsets, joined.spans)
    assert len(joined) == 6 and joined.dimension == 4
    np.testing.assert_array_equal(joined.vectors, flat.vectors)
    for chunk in range(6):
        got, want = joined.get(chunk), flat.get(chunk)
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    for lo, hi in ((0, 12), (4, 6), (5, 5), (3, 11)):  # rows across block edges
        np.testing.assert_array_equal(joined.rows(lo, hi), flat.vectors[lo:hi])
