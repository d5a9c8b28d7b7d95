"""Tests for assistant.index_store (manifest, index_load, index_build, generations): the index folder on disk."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

import assistant.generations as generations
from assistant.chunking import chunk_document
from assistant.errors import IndexStoreError
from assistant.index_store import (FORMAT, FORMAT_VERSION, MANIFEST, build_index, check_compatible, chunker_id,
                                   load_index, plan_documents, read_manifest)
from assistant.ingest import scan_folder
from assistant.lexical import LexicalIndex
from assistant.types import Document
from assistant.chunking import spans
from assistant.testing import FakeEmbedder, PlainEmbedder

SIZE = 60

TEXTS = {
    "fruit.md": "# 水果\n\n苹果是一种常见的水果，富含维生素。香蕉产自热带地区。\n\n## 储存\n\n"
                "苹果应放在阴凉处保存。香蕉不宜放进冰箱。葡萄要冷藏。",
    "python.md": "# Python\n\nPython is a programming language. It is popular for data science.\n\n"
                 "Lists and dicts are built in. Functions are first class objects.",
    "notes/travel.txt": "出发前检查护照和签证。\n行李不要超过二十公斤。\n\n机场安检需要提前两小时到达。",
}


def make_document(source: str, text: str, pages: tuple = ()) -> Document:
    return Document(source, text, hashlib.sha256(text.encode("utf-8")).hexdigest(), pages=pages)


def documents(texts: dict[str, str] | None = None) -> list[Document]:
    return [make_document(s, t) for s, t in (texts or TEXTS).items()]


def build(folder: Path, embedder, docs: list[Document] | None = None, **kwargs):
    kwargs.setdefault("chunk_size", SIZE)
    kwargs.setdefault("chunk_overlap", 0)
    return build_index(folder, documents() if docs is None else docs, embedder, **kwargs)


def n_chunks(text: str) -> int:
    return len(chunk_document(make_document("x", text), SIZE, 0))


class OtherEmbedder(FakeEmbedder):
    model_id = "fake/another-model"


class FailingEmbedder(FakeEmbedder):
    """Embeds ``calls_ok`` batches, then raises, as a model crashing mid-build would."""

    def __init__(self, calls_ok: int) -> None:
        super().__init__()
        self.calls = 0
        self.calls_ok = calls_ok

    def embed_documents(self, texts, titles=None):
        self.calls += 1
        if self.calls > self.calls_ok:
            raise RuntimeError("the embedding model crashed")
        return super().embed_documents(texts, titles)


def listing(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def index_error(folder: Path) -> str:
    with pytest.raises(IndexStoreError) as caught:
        load_index(folder)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def built(tmp_path, fake_embedder) -> Path:
    folder = tmp_path / "index"
    build(folder, fake_embedder)
    return folder


# -- round trip ------------------------------------------------------------------------------------

def test_build_then_load_round_trip(tmp_path, fake_embedder):
    folder = tmp_path / "index"
    docs = documents()
    report = build(folder, fake_embedder, docs, corpus=tmp_path)
    expected = [c for d in docs for c in chunk_document(d, SIZE, 0)]
    assert report.documents == 3 and report.chunks == len(expected) == report.embedded_chunks
    assert report.reused_documents == 0 and not report.unchanged

    loaded = load_index(folder)
    assert loaded.chunks == expected
    assert loaded.vectors.ntotal == len(expected) and loaded.vectors.d == fake_embedder.dimension
    texts = {d.source: d.text for d in docs}
    assert loaded.lines == [texts[c.source].count("\n", 0, c.start) + 1 for c in expected]
    # The stored vectors are the embedder's vectors of the chunk texts.
    stored = loaded.vectors.reconstruct_n(0, len(expected))
    np.testing.assert_allclose(stored, FakeEmbedder().embed_documents([c.text for c in expected]), atol=1e-6)

    m = loaded.manifest
    assert m["format"] == FORMAT and m["format_version"] == FORMAT_VERSION
    assert m["embedding"]["model_id"] == "fake/char-ngrams" and m["embedding"]["dimension"] == 64
    assert m["embedding"]["weights_sha256"] == "0" * 64
    assert m["chunking"] == {"chunker": chunker_id(), "size": SIZE, "overlap": 0}
    assert [(d["source"], d["sha256"]) for d in m["documents"]] == [(d.source, d.sha256) for d in docs]
    assert sum(d["chunks"] for d in m["documents"]) == m["chunk_count"] == len(expected)
    assert m["corpus"] == str(tmp_path.resolve())
    assert len(m["built_at"]) == 20 and m["built_at"].endswith("Z")
    assert loaded.model_id == "fake/char-ngrams"


def test_the_index_a_build_returns_equals_the_one_read_back(tmp_path, fake_embedder):
    folder = tmp_path / "index"
    docs = documents() + [make_document("book.pdf", "第一页的内容。\n第二页的内容。", pages=((0, 1), (8, 2)))]
    written = build(folder, fake_embedder, docs).index
    read = load_index(folder)
    assert written.chunks == read.chunks and written.lines == read.lines and written.pages == read.pages
    assert json.loads(json.dumps(written.manifest)) == read.manifest
    n = read.vectors.ntotal
    np.testing.assert_array_equal(written.vectors.reconstruct_n(0, n), read.vectors.reconstruct_n(0, n))
    for name in ("vectors", "offsets", "spans"):
        np.testing.assert_array_equal(getattr(written.units, name), getattr(read.units, name))
    for query in ["苹果", "Python lists", "第二页"]:
        np.testing.assert_array_equal(written.lexical.scores(query), read.lexical.scores(query))


def test_unit_vectors_are_stored_for_every_sentence_of_every_chunk(built):
    loaded = load_index(built)
    assert loaded.units is not None and len(loaded.units) == len(loaded.chunks)
    for chunk_id, chunk in enumerate(loaded.chunks):
        stored = loaded.units.get(chunk_id)
        units = spans(chunk.text)
        assert list(stored) == [(u.start, u.end) for u in units]
        expected = FakeEmbedder().embed_documents([chunk.text[u.start:u.end] for u in units])
        np.testing.assert_allclose(np.stack(list(stored.values())), expected, atol=2e-3)  # stored as float16
    assert next(built.glob("units-*/vectors.npy")).is_file()


def test_unit_vectors_of_unchanged_documents_are_reused(built, fake_embedder):
    before = load_index(built)
    changed = dict(TEXTS, **{"python.md": TEXTS["python.md"] + "\n\nTuples are immutable."})
    build(built, fake_embedder, documents(changed))
    after = load_index(built)
    old = {c: before.units.get(i) for i, c in enumerate(before.chunks)}
    kept = [i for i, c in enumerate(after.chunks) if c in old]
    assert kept and len(kept) < len(after.chunks)
    for i in kept:
        a, b = old[after.chunks[i]], after.units.get(i)
        assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_embedder_without_unit_vectors_builds_an_index_without_them(tmp_path):
    folder = tmp_path / "index"
    build(folder, PlainEmbedder())
    assert load_index(folder).units is None and not list(folder.glob("units-*"))
    assert build(folder, PlainEmbedder()).unchanged  # and it is reused, not re-embedded for lacking them


def test_index_without_unit_vectors_is_re_embedded_by_a_capable_embedder(tmp_path, fake_embedder):
    folder = tmp_path / "index"
    build(folder, PlainEmbedder())
    report = build(folder, fake_embedder)
    assert not report.unchanged and report.embedded_chunks == report.chunks
    assert load_index(folder).units is not None


def test_unit_vector_tables_out_of_step_with_each_other(built):
    path = next(built.glob("units-*/offsets.npy"))
    np.save(path, np.load(path)[:-1], allow_pickle=False)
    message = index_error(built)
    assert "sentence vectors" in message and "out of step" in message and "rebuild" in message


def test_unit_vectors_for_fewer_chunks_than_the_index(built):
    folder = next(built.glob("units-*"))
    offsets = np.load(folder / "offsets.npy")[:-1]
    np.save(folder / "offsets.npy", offsets, allow_pickle=False)
    for name in ("vectors", "spans"):
        np.save(folder / f"{name}.npy", np.load(folder / f"{name}.npy")[:offsets[-1]], allow_pickle=False)
    message = index_error(built)
    assert "inconsistent" in message and "rebuild" in message


def test_unit_vector_file_that_is_a_pickle_is_refused(built):
    path = next(built.glob("units-*/spans.npy"))
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    message = index_error(built)
    assert "sentence vectors" in message and "damaged" in message


def test_pages_and_skipped_files_are_recorded(tmp_path, fake_embedder):
    pdf = make_document("manual.pdf", "第一页的内容。\n\n第二页的内容。", pages=((0, 1), (9, 2)))
    folder = tmp_path / "index"
    build(folder, fake_embedder, [pdf], skipped=[("empty.txt", "empty file")])
    loaded = load_index(folder)
    assert loaded.pages == {"manual.pdf": [(0, 1), (9, 2)]}
    assert loaded.manifest["skipped"] == [{"source": "empty.txt", "reason": "empty file"}]


def test_lexical_index_is_saved_and_loaded(built):
    loaded = load_index(built)
    scores = loaded.lexical.scores("香蕉 冰箱")
    assert scores.shape == (len(loaded.chunks),)
    best = loaded.chunks[int(np.argmax(scores))]
    assert "冰箱" in best.text


def test_no_pickle_in_the_index_folder(built):
    files = [p for p in built.rglob("*") if p.is_file()]
    assert any(p.suffix == ".faiss" for p in files) and any(p.suffix == ".npy" for p in files)
    for p in files:
        assert p.suffix not in (".pkl", ".pickle")
        assert not p.read_bytes()[:1] == b"\x80", f"{p.name} looks like a pickle"
    for p in built.rglob("*.npy"):
        np.load(p, allow_pickle=False)  # plain arrays: loadable without pickle


def test_bm25_scores_follow_the_lucene_formula():
    import math

    from assistant.lexical import LexicalIndex, tokenize

    texts = ["苹果和香蕉都是水果", "苹果手机 apple phone", "香蕉 香蕉 banana", "", "python lists and dicts"]
    index = LexicalIndex.build(texts)
    docs = [tokenize(t) for t in texts]
    avg = sum(map(len, docs)) / len(docs)
    for query in ["苹果 香蕉", "apple banana phone", "python 苹果 苹果", "不存在的词"]:
        expected = []
        for doc in docs:
            score = 0.0
            for term in tokenize(query):
                df = sum(term in d for d in docs)
                tf = doc.count(term)
                if df and tf:
                    idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                    score += idf * tf / (tf + 1.5 * (1 - 0.75 + 0.75 * len(doc) / avg))
            expected.append(score)
        np.testing.assert_allclose(index.scores(query), expected, rtol=1e-5, atol=1e-6)


def test_incremental_build_tokenizes_only_new_chunks_and_scores_as_a_fresh_build(built, fake_embedder, monkeypatch):
    import assistant.lexical as lexical

    changed = dict(TEXTS, **{"python.md": TEXTS["python.md"] + "\n\nTuples are immutable sequences."})
    seen: list[str] = []
    real = lexical.tokenize
    monkeypatch.setattr(lexical, "tokenize", lambda text: seen.append(text) or real(text))
    build(built, fake_embedder, documents(changed))
    incremental = load_index(built)
    new_chunks = [c.text for c in incremental.chunks if c.source == "python.md"]
    assert seen and set(seen) <= set(new_chunks)
    fresh_folder = built.parent / "fresh"
    build(fresh_folder, fake_embedder, documents(changed))
    fresh = load_index(fresh_folder)
    for query in ["苹果 冰箱", "Python tuples", "护照 签证", "immutable"]:
        np.testing.assert_allclose(incremental.lexical.scores(query), fresh.lexical.scores(query), rtol=1e-6)


def test_index_with_an_older_lexical_format_says_to_rebuild(built):
    manifest = json.loads((built / MANIFEST).read_text("utf-8"))
    manifest["lexical"]["scoring"] = "bm25 (bm25s defaults)"
    (built / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    message = index_error(built)
    assert "another version" in message and "rebuild" in message


def test_nothing_to_index_is_refused_with_a_clear_message(tmp_path, fake_embedder):
    with pytest.raises(IndexStoreError, match="no text to index.*empty.txt: empty file"):
        build(tmp_path / "index", fake_embedder, [], skipped=[("empty.txt", "empty file")])
    with pytest.raises(IndexStoreError, match="no text to index"):
        build(tmp_path / "index", fake_embedder, [make_document("debris.txt", "<|bot|> \n <|im_end|>")])
    assert not (tmp_path / "index" / MANIFEST).exists()


# -- incremental builds ----------------------------------------------------------------------------

def test_unchanged_corpus_embeds_nothing(built, fake_embedder):
    generation = read_manifest(built)["generation"]
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder)
    assert len(fake_embedder.embedded) == before
    assert report.unchanged and report.embedded_chunks == 0 and report.reused_documents == 3
    assert read_manifest(built)["generation"] == generation  # nothing was rewritten


def test_changed_document_is_the_only_one_embedded(built, fake_embedder):
    old = load_index(built)
    changed = dict(TEXTS, **{"python.md": TEXTS["python.md"] + "\n\nRust is a systems language. It is fast."})
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder, documents(changed))
    embedded = fake_embedder.embedded[before:]
    assert len(embedded) == report.embedded_chunks == n_chunks(changed["python.md"])
    assert "Rust is a systems language. It is fast." in embedded
    assert all(t in changed["python.md"] for t in embedded)
    assert report.reused_documents == 2 and not report.unchanged

    new = load_index(built)
    assert [d["sha256"] for d in new.manifest["documents"] if d["source"] == "python.md"] == [
        hashlib.sha256(changed["python.md"].encode()).hexdigest()]
    # Reused vectors are carried over exactly.
    old_ids = {c: i for i, c in enumerate(old.chunks)}
    for i, c in enumerate(new.chunks):
        if c.source != "python.md":
            np.testing.assert_array_equal(new.vectors.reconstruct(i), old.vectors.reconstruct(old_ids[c]))


def test_new_document_is_embedded_alone(built, fake_embedder):
    added = dict(TEXTS, **{"new.md": "新文档只有一句话。"})
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder, documents(added))
    assert fake_embedder.embedded[before:] == ["新文档只有一句话。"]
    assert report.documents == 4 and report.reused_documents == 3
    assert "new.md" in {c.source for c in load_index(built).chunks}


def test_deleted_document_is_removed(built, fake_embedder):
    remaining = {k: v for k, v in TEXTS.items() if k != "notes/travel.txt"}
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder, documents(remaining))
    assert len(fake_embedder.embedded) == before
    assert report.removed_documents == 1 and report.documents == 2 and not report.unchanged
    loaded = load_index(built)
    assert [d["source"] for d in loaded.manifest["documents"]] == ["fruit.md", "python.md"]
    assert {c.source for c in loaded.chunks} == {"fruit.md", "python.md"}
    assert loaded.vectors.ntotal == len(loaded.chunks)


def test_rebuild_embeds_everything(built, fake_embedder):
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder, rebuild=True)
    assert len(fake_embedder.embedded) - before == report.embedded_chunks == report.chunks
    assert report.reused_documents == 0


def test_changed_chunking_re_embeds_everything(built, fake_embedder):
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder, chunk_size=SIZE * 2)
    assert len(fake_embedder.embedded) - before == report.chunks and report.reused_documents == 0
    assert load_index(built).manifest["chunking"]["size"] == SIZE * 2


def test_index_from_another_chunker_version_is_re_chunked(built, fake_embedder):
    edit_manifest(built, lambda m: m["chunking"].update(chunker="sections-sentences-old"))
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder)
    assert len(fake_embedder.embedded) - before == report.chunks and report.reused_documents == 0
    assert read_manifest(built)["chunking"]["chunker"] == chunker_id()


def test_progress_reports_done_and_total(tmp_path, fake_embedder):
    calls = []
    report = build(tmp_path / "index", fake_embedder, progress=lambda done, total: calls.append((done, total)),
                   embed_batch=2)
    assert calls[-1] == (report.chunks, report.chunks)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == -(-report.chunks // 2)


# -- another model ---------------------------------------------------------------------------------

def test_another_embedding_model_is_refused_not_mixed(built):
    other = OtherEmbedder()
    generation = read_manifest(built)["generation"]
    with pytest.raises(IndexStoreError) as caught:
        build(built, other)
    message = str(caught.value)
    assert "fake/char-ngrams" in message and "fake/another-model" in message
    assert "assistant index build --rebuild" in message
    assert other.embedded == []
    assert read_manifest(built)["generation"] == generation
    with pytest.raises(IndexStoreError, match="--rebuild"):
        check_compatible(read_manifest(built), other)


def test_same_model_id_with_other_weights_is_refused(built):
    class Retrained(FakeEmbedder):
        weights_sha256 = "1" * 64

    with pytest.raises(IndexStoreError, match="--rebuild"):
        check_compatible(read_manifest(built), Retrained())
    check_compatible(read_manifest(built), FakeEmbedder())  # the same model passes


def test_rebuild_switches_to_another_model(built):
    other = OtherEmbedder()
    report = build(built, other, rebuild=True)
    assert len(other.embedded) == report.chunks
    assert load_index(built).model_id == "fake/another-model"


# -- failures --------------------------------------------------------------------------------------

def test_failed_embedding_leaves_the_old_index_serving(built):
    old = load_index(built)
    changed = {k: v + "\n\n新增的一句话。另一句新增的话。" for k, v in TEXTS.items()}
    failing = FailingEmbedder(calls_ok=1)
    with pytest.raises(RuntimeError, match="crashed"):
        build(built, failing, documents(changed), embed_batch=2)
    assert failing.calls == 2
    after = load_index(built)
    assert after.manifest == old.manifest and after.chunks == old.chunks
    assert not [p for p in built.iterdir() if p.name.startswith(".tmp-")]


def test_failure_after_files_moved_leaves_old_index_and_next_build_cleans_up(built, fake_embedder, monkeypatch):
    old = load_index(built)
    generation = old.manifest["generation"]
    changed = dict(TEXTS, **{"python.md": "Python changed. Completely new text here."})

    def crash(*args):
        raise OSError("disk went away")

    with monkeypatch.context() as m:
        m.setattr(generations, "_fsync_tree", crash)
        with pytest.raises(OSError, match="disk went away"):
            build(built, fake_embedder, documents(changed))
    stray = [p.name for p in built.iterdir() if p.name.startswith(("vectors-", "chunks-", "lexical-", "units-"))
             and generation not in p.name]
    assert len(stray) == 4  # the new generation's files are there, but the manifest does not name them
    assert load_index(built).chunks == old.chunks and read_manifest(built)["generation"] == generation

    (built / ".tmp-killed-build").mkdir()  # what a killed build leaves behind
    (built / ".tmp-killed-build" / "vectors-x.faiss").write_bytes(b"partial")
    (built / "chunks-19990101T000000-deadbeef.jsonl").write_text("{}\n")
    report = build(built, fake_embedder, documents(changed))
    assert report.embedded_chunks == n_chunks(changed["python.md"])
    new = read_manifest(built)["generation"]
    assert new != generation
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [".lock", MANIFEST, f"chunks-{new}.jsonl", f"lexical-{new}", f"units-{new}", f"vectors-{new}.faiss"])


def test_failure_in_staging_leaves_no_temporary_folder(built, fake_embedder, monkeypatch):
    generation = read_manifest(built)["generation"]

    def broken_build(texts, reuse=None):
        raise ValueError("bm25 failed")

    monkeypatch.setattr(LexicalIndex, "build", staticmethod(broken_build))
    with pytest.raises(ValueError, match="bm25 failed"):
        build(built, fake_embedder, rebuild=True)
    assert read_manifest(built)["generation"] == generation
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [".lock", MANIFEST, f"chunks-{generation}.jsonl", f"lexical-{generation}", f"units-{generation}",
         f"vectors-{generation}.faiss"])


def test_a_second_concurrent_build_is_refused(built, fake_embedder):
    generation = read_manifest(built)["generation"]
    with open(built / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another build holds the folder
        with pytest.raises(IndexStoreError, match="another build is writing"):
            build(built, fake_embedder, rebuild=True)
    assert read_manifest(built)["generation"] == generation
    assert build(built, fake_embedder, rebuild=True).chunks > 0  # released: builds again


def test_foreign_folder_is_refused_and_untouched(tmp_path, fake_embedder):
    folder = tmp_path / "important"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"my only copy")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = listing(folder)
    with pytest.raises(IndexStoreError, match="not an assistant index"):
        build(folder, fake_embedder)
    assert listing(folder) == before
    assert fake_embedder.embedded == []


def test_damaged_index_is_rebuilt_from_scratch_by_the_next_build(built, fake_embedder):
    next(built.glob("vectors-*.faiss")).write_bytes(b"garbage")
    before = len(fake_embedder.embedded)
    report = build(built, fake_embedder)
    assert len(fake_embedder.embedded) - before == report.chunks
    assert load_index(built).vectors.ntotal == report.chunks


# -- damaged index folders -------------------------------------------------------------------------

def test_missing_index_says_to_build(tmp_path):
    assert "assistant index build" in index_error(tmp_path / "nowhere")


def test_folder_without_manifest_is_not_an_index(tmp_path):
    (tmp_path / "something.txt").write_text("hello")
    assert "not an assistant index" in index_error(tmp_path)


def test_missing_vectors_file(built):
    next(built.glob("vectors-*.faiss")).unlink()
    message = index_error(built)
    assert "missing" in message and "rebuild" in message


def test_truncated_vectors_file(built):
    path = next(built.glob("vectors-*.faiss"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = index_error(built)
    assert "damaged or truncated" in message and "rebuild" in message


def test_chunks_file_out_of_step_with_vectors(built):
    path = next(built.glob("chunks-*.jsonl"))
    lines = path.read_text("utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), "utf-8")
    message = index_error(built)
    assert "inconsistent" in message and "rebuild" in message


def test_chunks_file_with_a_garbled_line(built):
    path = next(built.glob("chunks-*.jsonl"))
    lines = path.read_text("utf-8").splitlines(keepends=True)
    row = json.loads(lines[0])
    row["end"] += 5  # offsets no longer match the text
    path.write_text(json.dumps(row) + "\n" + "".join(lines[1:]), "utf-8")
    assert "rebuild" in index_error(built)
    path.write_text("{not json\n" + "".join(lines[1:]), "utf-8")
    assert "rebuild" in index_error(built)


@pytest.mark.parametrize("name", ["vocab.txt", "token_ids.npy", "offsets.npy", "postings.npy", "tf.npy", "indptr.npy"])
def test_lexical_files_missing(built, name):
    next(built.glob(f"lexical-*/{name}")).unlink()
    message = index_error(built)
    assert "lexical" in message and "rebuild" in message


def test_lexical_tables_out_of_step(built):
    path = next(built.glob("lexical-*/offsets.npy"))
    np.save(path, np.load(path)[:-1], allow_pickle=False)
    message = index_error(built)
    assert "lexical" in message and "rebuild" in message


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text("utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), "utf-8")


def test_unsupported_format_version(built):
    edit_manifest(built, lambda m: m.update(format_version=99))
    message = index_error(built)
    assert "99" in message and "rebuild" in message


def test_manifest_that_is_not_json(built):
    (built / MANIFEST).write_text("{ this is not json", "utf-8")
    message = index_error(built)
    assert "damaged" in message and "rebuild" in message


def test_manifest_of_another_format(built):
    edit_manifest(built, lambda m: m.update(format="someone-elses-index"))
    assert "not an assistant index" in index_error(built)
    (built / MANIFEST).write_text("[1, 2, 3]", "utf-8")
    assert "not an assistant index" in index_error(built)


def test_manifest_missing_a_key(built):
    edit_manifest(built, lambda m: m.pop("embedding"))
    message = index_error(built)
    assert "'embedding'" in message and "rebuild" in message


@pytest.mark.parametrize("name", ["../vectors.faiss", "/etc/passwd", ".hidden", 42])
def test_manifest_file_names_cannot_leave_the_folder(built, name):
    edit_manifest(built, lambda m: m["files"].update(vectors=name))
    message = index_error(built)
    assert "names no valid vectors file" in message and "rebuild" in message


def test_dimension_mismatch_is_inconsistent(built):
    edit_manifest(built, lambda m: m["embedding"].update(dimension=128))
    assert "inconsistent" in index_error(built)


def test_scan_folder_documents_build_an_index(tmp_path, fake_embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for source, text in TEXTS.items():
        (corpus / source).parent.mkdir(parents=True, exist_ok=True)
        (corpus / source).write_text(text, "utf-8")
    (corpus / "empty.txt").write_bytes(b"")
    docs, skipped = scan_folder(corpus)
    report = build(tmp_path / "index", fake_embedder, docs, skipped=skipped)
    assert report.documents == 3 and [s for s, _ in report.skipped] == ["empty.txt"]
    manifest = read_manifest(tmp_path / "index")
    assert {d["sha256"] for d in manifest["documents"]} == {
        hashlib.sha256((corpus / s).read_bytes()).hexdigest() for s in TEXTS}


# -- reuse plan ------------------------------------------------------------------------------------

def test_the_plan_reuses_unchanged_documents_and_chunks_the_others_anew(built, fake_embedder):
    previous = load_index(built)
    changed = {"new.md": "A new document. It has text.", **TEXTS}  # first: every kept chunk moves
    changed["python.md"] += "\n\nTuples are immutable."
    del changed["fruit.md"]
    plans = plan_documents(documents(changed), previous, SIZE, 0)
    assert [p.document.source for p in plans] == list(changed)
    assert [p.first_chunk for p in plans] == [0, len(plans[0].chunks), len(plans[0].chunks) + len(plans[1].chunks)]
    new, python, travel = plans
    old = {d["source"]: d for d in previous.manifest["documents"]}
    assert travel.reused_from == old["notes/travel.txt"]["first_chunk"] and travel.reused_from != travel.first_chunk
    assert list(travel.chunks) == previous.chunks[travel.previous_ids.start:travel.previous_ids.stop]
    assert len(travel.previous_ids) == len(travel.ids) == old["notes/travel.txt"]["chunks"]
    for plan in (new, python):
        assert plan.reused_from is None and not plan.previous_ids
        assert list(plan.chunks) == chunk_document(plan.document, SIZE, 0)

    report = build(built, fake_embedder, documents(changed))
    assert report.embedded_chunks == len(new.chunks) + len(python.chunks) and report.reused_documents == 1
    assert [dict(d, added_at="") for d in read_manifest(built)["documents"]] == [p.record().to_json() for p in plans]


def test_without_a_previous_index_the_plan_reuses_nothing():
    plans = plan_documents(documents(), None, SIZE, 0)
    assert all(p.reused_from is None for p in plans)
    assert [c for p in plans for c in p.chunks] == [c for d in documents() for c in chunk_document(d, SIZE, 0)]
