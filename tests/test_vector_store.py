"""Tests for assistant.vector_store: the Milvus store (a real Milvus Lite file in tmp_path) against the FAISS folder."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus extra is not installed: pip install .[milvus]")

from assistant.cli import main  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.errors import ConfigError, IndexStoreError  # noqa: E402
from assistant.evaluation import load_questions  # noqa: E402
from assistant.index_store import MANIFEST, load_index, read_manifest  # noqa: E402
from assistant.pipeline import Assistant  # noqa: E402
from assistant.vector_store import MilvusStore, chunk_keys, open_store, parse_store  # noqa: E402
from assistant.testing import FakeEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEXTS = {
    "fruit.md": "# 水果\n\n苹果是一种常见的水果，富含维生素。香蕉产自热带地区。\n\n## 储存\n\n"
                "苹果应放在阴凉处保存。香蕉不宜放进冰箱。葡萄要冷藏。",
    "python.md": "# Python\n\nPython is a programming language. It is popular for data science.\n\n"
                 "Lists and dicts are built in. Functions are first class objects.",
    "travel.txt": "出发前检查护照和签证。\n行李不要超过二十公斤。\n\n机场安检需要提前两小时到达。",
}
QUESTIONS = ["苹果应该怎么保存？", "What is Python popular for?", "去机场要提前多久？", "Are functions objects?"]


class OtherEmbedder(FakeEmbedder):
    model_id = "fake/another-model"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text, "utf-8")
    return folder


def settings(tmp_path, corpus, store: str = "", name: str = "index", **kw) -> Settings:
    return Settings(corpus=corpus, index=tmp_path / name, chunk_size=60, min_evidence=0.01, vector_store=store, **kw)


@pytest.fixture
def lite(tmp_path) -> str:
    return f"milvus-lite://{tmp_path / 'assistant.db'}"


def answers(assistant: Assistant) -> list[tuple]:
    out = []
    for q in QUESTIONS:
        a = assistant.ask(q)
        out.append((a.text, a.abstained, [(c.source, c.start, c.end, c.quote) for c in a.citations]))
    return out


def test_milvus_build_answers_like_the_faiss_folder(tmp_path, corpus, lite):
    faiss_assistant = Assistant(settings(tmp_path, corpus), embedder=FakeEmbedder())
    milvus_assistant = Assistant(settings(tmp_path, corpus, lite, name="index-m"), embedder=FakeEmbedder())
    faiss_assistant.build()
    report = milvus_assistant.build()
    manifest = read_manifest(tmp_path / "index-m")
    assert "vectors" not in manifest["files"] and manifest["vector_store"]["collection"] == "assistant"
    assert not list((tmp_path / "index-m").glob("vectors-*"))
    store = milvus_assistant.store
    assert store.count() == report.chunks == len(load_index(tmp_path / "index-m", store).chunks)
    assert store.read_manifest()["generation"] == manifest["generation"]
    assert answers(milvus_assistant) == answers(faiss_assistant)
    assert any(not abstained for _, abstained, _ in answers(milvus_assistant))
    # the same retrieval: ids, ranks and scores of every hit
    for q in QUESTIONS:
        a = faiss_assistant._current().retriever.search(q, k=5)
        b = milvus_assistant._current().retriever.search(q, k=5)
        assert [(h.chunk_id, h.dense_rank, h.lexical_rank) for h in a.hits] == \
            [(h.chunk_id, h.dense_rank, h.lexical_rank) for h in b.hits]
        np.testing.assert_allclose([h.score for h in a.hits], [h.score for h in b.hits], rtol=1e-5)


def test_incremental_add_change_and_delete(tmp_path, corpus, lite):
    embedder = FakeEmbedder()
    assistant = Assistant(settings(tmp_path, corpus, lite), embedder=embedder)
    assistant.build()
    store, first = assistant.store, assistant._current().index
    before = dict(zip(first.keys.tolist(), first.dense_vectors(np.arange(len(first.chunks)))))
    embedder.embedded.clear()

    (corpus / "new.md").write_text("# 新文件\n\n长城在中国北方，全长两万多公里。", "utf-8")
    (corpus / "python.md").write_text(TEXTS["python.md"] + "\n\nGenerators yield values lazily.", "utf-8")
    (corpus / "travel.txt").unlink()
    report = assistant.build()
    index = assistant._current().index
    assert report.reused_documents == 1 and report.removed_documents == 1
    assert set(embedder.embedded) == {c.text for c in index.chunks if c.source in ("new.md", "python.md")}
    assert store.count() == len(index.chunks) == report.chunks  # the removed and changed rows are gone
    near, _ = index.dense_search(embedder.embed_queries(["长城在哪里"])[0], 3)
    assert "new.md" in {index.chunks[i].source for i in near}
    fruit = [i for i, c in enumerate(index.chunks) if c.source == "fruit.md"]
    kept = index.dense_vectors(np.asarray(fruit))  # reused rows were not rewritten
    np.testing.assert_array_equal(kept, np.stack([before[int(index.keys[i])] for i in fruit]))
    assert store.read_manifest()["generation"] == read_manifest(tmp_path / "index")["generation"]
    assert "长城" in assistant.ask("长城有多长？").text

    embedder.embedded.clear()
    assert assistant.build().unchanged and not embedder.embedded


def test_switching_from_the_folder_to_milvus_copies_vectors_without_embedding(tmp_path, corpus, lite):
    embedder = FakeEmbedder()
    Assistant(settings(tmp_path, corpus), embedder=embedder).build()
    expected = answers(Assistant(settings(tmp_path, corpus), embedder=embedder))
    embedder.embedded.clear()
    moved = Assistant(settings(tmp_path, corpus, lite), embedder=embedder)
    with pytest.raises(IndexStoreError, match=r"run `assistant index build` to copy them"):
        moved.status()
    report = moved.build()
    assert report.embedded_chunks == 0 and not embedder.embedded and moved.store.count() == report.chunks
    assert not list((tmp_path / "index").glob("vectors-*"))
    assert answers(moved) == expected
    with pytest.raises(IndexStoreError, match="keeps its vectors in the Milvus collection 'assistant'"):
        Assistant(settings(tmp_path, corpus), embedder=embedder).status()


def test_delete_document_and_keys(tmp_path, corpus, lite):
    assistant = Assistant(settings(tmp_path, corpus, lite), embedder=FakeEmbedder())
    assistant.build()
    index = assistant._current().index
    assert len(set(index.keys.tolist())) == len(index.chunks)
    assert np.array_equal(index.keys, chunk_keys(index.manifest["documents"], index.manifest["chunking"]))
    fruit = sum(c.source == "fruit.md" for c in index.chunks)
    assistant.store.delete_document("fruit.md")
    assert assistant.store.count() == len(index.chunks) - fruit
    ids, _ = index.dense_search(FakeEmbedder().embed_queries(["苹果 香蕉 水果"])[0], len(index.chunks))
    assert ids.size == len(index.chunks) - fruit and all(index.chunks[i].source != "fruit.md" for i in ids)


def test_another_model_is_refused_by_the_collection(tmp_path, corpus, lite):
    Assistant(settings(tmp_path, corpus, lite), embedder=FakeEmbedder()).build()
    other = Assistant(settings(tmp_path, corpus, lite), embedder=OtherEmbedder())
    with pytest.raises(IndexStoreError, match=r"built with embedding model 'fake/char-ngrams', but "
                                              r"'fake/another-model' is configured: rebuild it with"):
        other.status()
    # a fresh index folder on the same collection: refused by the collection's own manifest
    fresh = Assistant(settings(tmp_path, corpus, lite, name="index-2"), embedder=OtherEmbedder())
    with pytest.raises(IndexStoreError, match=r"Milvus collection 'assistant' .* was built with embedding model "
                                              r"'fake/char-ngrams', but 'fake/another-model' is configured"):
        fresh.build()
    assert fresh.store.read_manifest()["embedding"]["model_id"] == "fake/char-ngrams"
    fresh.build(rebuild=True)
    assert fresh.store.read_manifest()["embedding"]["model_id"] == "fake/another-model"
    assert fresh.status().chunks == fresh.store.count()


def test_collection_and_folder_of_different_models_are_refused(tmp_path, corpus, lite):
    Assistant(settings(tmp_path, corpus, lite), embedder=FakeEmbedder()).build()
    Assistant(settings(tmp_path, corpus, lite, name="index-2"), embedder=OtherEmbedder()).build(rebuild=True)
    with pytest.raises(IndexStoreError, match=r"holds vectors of embedding model 'fake/another-model', but the index "
                                              r".* was built with 'fake/char-ngrams': rebuild it"):
        Assistant(settings(tmp_path, corpus, lite), embedder=FakeEmbedder()).status()


def test_unreachable_store_is_one_clear_line(tmp_path, corpus, capsys):
    store = f"http://127.0.0.1:{closed_port()}"
    assistant = Assistant(settings(tmp_path, corpus, store), embedder=FakeEmbedder())  # connects on first use
    with pytest.raises(IndexStoreError, match=rf"cannot reach the vector store {store} \(.+\): start Milvus there or "
                                              "fix ASSISTANT_VECTOR_STORE") as caught:
        assistant.build()
    assert "\n" not in str(caught.value)


def test_cli_reports_an_unreachable_store_in_one_line(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setenv("ASSISTANT_VECTOR_STORE", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("ASSISTANT_CORPUS", str(corpus))
    monkeypatch.setenv("ASSISTANT_INDEX", str(tmp_path / "index"))
    monkeypatch.setattr("assistant.cli._assistant", lambda s: Assistant(s, embedder=FakeEmbedder()))
    assert main(["index", "build"]) == 2
    *steps, error = capsys.readouterr().err.strip().splitlines()  # the reading step's lines, then the error
    assert steps == ["reading: 0/3 files", "reading: 3/3 files"] and "cannot reach the vector store" in error


def test_a_milvus_lite_file_held_by_another_process_is_named(tmp_path):
    """Milvus Lite opens a .db in one process only: several UI workers need a Milvus server."""
    import subprocess
    import sys

    import offline_guard

    path = tmp_path / "held.db"
    code = ("import sys; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]).list_collections(); "
            "print('ready', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=offline_guard.offline_env())
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(IndexStoreError, match=r"cannot open the Milvus Lite file .*held\.db \(Open local milvus "
                                                  r"failed\): is another process using it\?"):
            MilvusStore(str(path)).count()
    finally:
        child.stdin.close()
        child.wait(timeout=60)


def test_the_store_setting_is_validated():
    assert parse_store("") == ("", "") and open_store("") is None
    assert parse_store("milvus-lite:///data/assistant.db") == ("milvus", "/data/assistant.db")
    assert parse_store("http://milvus:19530") == ("milvus", "http://milvus:19530")
    with pytest.raises(ConfigError, match="must end in .db"):
        Settings.from_env({"ASSISTANT_VECTOR_STORE": "milvus-lite:///data/assistant"})
    with pytest.raises(ConfigError, match="is not a store"):
        Settings.from_env({"ASSISTANT_VECTOR_STORE": "redis://x"})
    with pytest.raises(ConfigError, match="ASSISTANT_VECTOR_COLLECTION"):
        MilvusStore("/tmp/x.db", "bad-name")
    s = Settings.from_env({"ASSISTANT_VECTOR_STORE": "http://milvus:19530", "ASSISTANT_VECTOR_COLLECTION": "team"})
    assert (s.vector_store, s.vector_collection) == ("http://milvus:19530", "team")


def test_missing_extra_names_the_install(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_pymilvus(name, *args, **kwargs):
        if name.startswith("pymilvus"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymilvus)
    with pytest.raises(IndexStoreError, match=r"pip install \.\[milvus\]"):
        MilvusStore(str(tmp_path / "x.db")).count()


def test_a_foreign_collection_is_not_ours(tmp_path):
    from pymilvus import MilvusClient

    path = str(tmp_path / "other.db")
    client = MilvusClient(path)
    client.create_collection("assistant", dimension=4)
    client.close()
    with pytest.raises(IndexStoreError, match="was not made by assistant"):
        MilvusStore(path).read_manifest()


# -- the real model on the default corpus --------------------------------------------------------
@pytest.mark.e2e
def test_real_answers_and_citations_identical_on_milvus(real_settings, real_index, real_assistant, tmp_path):
    milvus = Assistant(real_settings.with_(index=tmp_path / "index",
                                           vector_store=f"milvus-lite://{tmp_path / 'assistant.db'}"),
                       embedder=real_assistant.embedder)
    import shutil

    shutil.copytree(real_index, tmp_path / "index")
    report = milvus.build()  # copies the vectors into Milvus, embeds nothing
    assert report.embedded_chunks == 0 and milvus.store.count() == report.chunks
    questions = load_questions(ROOT / "tests" / "data" / "eval.jsonl")
    # Milvus Lite's inner products differ from FAISS's in the last float32 bit (same stored vectors, another
    # kernel): everything a citation says is identical, its score equal to 1e-6.
    def cited(answer):
        return [(c.n, c.source, c.start, c.end, c.quote, c.line, c.page) for c in [*answer.citations, *answer.related]]

    for q in questions:
        a, b = real_assistant.ask(q.question), milvus.ask(q.question)
        assert (b.text, b.abstained, cited(b)) == (a.text, a.abstained, cited(a)), q.id
        assert [c.score for c in [*b.citations, *b.related]] == \
            pytest.approx([c.score for c in [*a.citations, *a.related]], abs=1e-6), q.id
    assert json.loads((tmp_path / "index" / MANIFEST).read_text("utf-8"))["vector_store"]["engine"] == "milvus"
