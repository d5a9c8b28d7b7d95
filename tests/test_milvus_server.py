"""The Milvus store against a real Milvus standalone server (the ``milvus`` package's binary, scripts/milvus_server.py):
one server per module, on 127.0.0.1 with free ports, in a temporary folder; stopped at the end.

The same checks as the Milvus Lite tests (tests/test_vector_store.py): answers identical to the FAISS folder's,
before and after removing a document, and the removed document's rows gone from the server."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus extra is not installed: pip install .[milvus]")
pytest.importorskip("milvus", reason="the Milvus server extra is not installed: pip install .[milvus-server]")

from assistant.config import Settings  # noqa: E402
from assistant.evaluation import load_questions  # noqa: E402
from assistant.index_store import read_manifest  # noqa: E402
from assistant.pipeline import Assistant  # noqa: E402
from assistant.testing import FakeEmbedder  # noqa: E402
from scripts.milvus_server import MilvusServer, ServerError  # noqa: E402
import test_vector_store  # noqa: E402  (tests/ is on the path, as test_load imports test_ui)

pytestmark = pytest.mark.slow  # a server process (about 3 s to start, once per module)

ROOT = Path(__file__).resolve().parent.parent
TEXTS = test_vector_store.TEXTS  # the Milvus Lite tests' corpus, so both stores answer the same questions
QUESTIONS = [*test_vector_store.QUESTIONS, "香蕉产自哪里？"]
# The binary cannot run at all (not a fault of ours): the only reasons to skip rather than fail.
CANNOT_RUN = ("error while loading shared libraries", "cannot execute binary file", "Exec format error")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    milvus = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    try:
        milvus.start()
    except (ServerError, OSError) as exc:
        if any(reason in str(exc) for reason in CANNOT_RUN):
            pytest.skip(f"the Milvus server binary cannot run here: {exc}")
        raise
    yield milvus
    milvus.stop()
    assert milvus.process is None


@pytest.fixture
def client(server):
    from pymilvus import MilvusClient

    c = MilvusClient(uri=server.uri, timeout=30)
    yield c
    c.close()


def corpus_copy(folder: Path, texts: dict[str, str] = TEXTS) -> Path:
    folder.mkdir(parents=True)
    for name, text in texts.items():
        (folder / name).write_text(text, "utf-8")
    return folder


def settings(tmp_path, name: str, store: str = "", collection: str = "assistant", **kw) -> Settings:
    return Settings(corpus=corpus_copy(tmp_path / f"corpus-{name}"), index=tmp_path / f"index-{name}", chunk_size=60,
                    min_evidence=0.01, vector_store=store, vector_collection=collection, **kw)


def answers(assistant: Assistant, questions=QUESTIONS) -> list[tuple]:
    out = []
    for q in questions:
        a = assistant.ask(q)
        out.append((a.text, a.abstained, [(c.source, c.start, c.end, c.quote) for c in a.citations]))
    return out


def hits(assistant: Assistant, question: str) -> tuple[list, list]:
    found = assistant._current().retriever.search(question, k=5)
    return [(h.chunk_id, h.dense_rank, h.lexical_rank) for h in found.hits], [h.score for h in found.hits]


def rows_of(client, collection: str, source: str) -> list[int]:
    found = client.query(collection, filter=f"source == {json.dumps(source)}", output_fields=["id"],
                         consistency_level="Strong")
    return sorted(int(r["id"]) for r in found)


def test_server_answers_like_the_faiss_folder_and_remove_deletes_rows(tmp_path, server, client):
    folder = Assistant(settings(tmp_path, "faiss"), embedder=FakeEmbedder())
    milvus = Assistant(settings(tmp_path, "server", server.uri, "answers"), embedder=FakeEmbedder())
    folder.build()
    report = milvus.build()
    manifest = read_manifest(tmp_path / "index-server")
    assert manifest["vector_store"] == {"engine": "milvus", "collection": "answers"}
    assert not list((tmp_path / "index-server").glob("vectors-*"))
    assert milvus.store.count() == report.chunks and milvus.store.read_manifest()["generation"] == \
        manifest["generation"]
    assert client.get_server_version().startswith("v2.3")  # a real server, not Milvus Lite

    def same_answers():
        assert answers(milvus) == answers(folder)
        assert any(not abstained for _, abstained, _ in answers(milvus))
        for q in QUESTIONS:  # the same retrieval: ids, ranks and scores of every hit
            (ours, our_scores), (theirs, their_scores) = hits(milvus, q), hits(folder, q)
            assert ours == theirs, q
            np.testing.assert_allclose(our_scores, their_scores, rtol=1e-5)

    same_answers()
    fruit = rows_of(client, "answers", "fruit.md")
    index = milvus._current().index
    assert fruit == sorted(int(index.keys[i]) for i, c in enumerate(index.chunks) if c.source == "fruit.md")
    assert fruit

    removed = milvus.remove(["fruit.md"])
    folder.remove(["fruit.md"])
    assert removed.removed == ("fruit.md",) and milvus.store.count() == removed.chunks
    assert rows_of(client, "answers", "fruit.md") == []  # its rows are gone from the server, not only unlisted
    assert len(client.get("answers", ids=fruit, output_fields=["id"])) == 0
    assert len(rows_of(client, "answers", "python.md")) + len(rows_of(client, "answers", "travel.txt")) == \
        removed.chunks
    same_answers()
    assert all(c[0] != "fruit.md" for _, _, cites in answers(milvus) for c in cites)


def test_server_updates_in_place(tmp_path, server, client):
    """On a server a build deletes only the changed and removed documents' rows (Milvus Lite rewrites instead)."""
    embedder = FakeEmbedder()
    s = settings(tmp_path, "inplace", server.uri, "inplace")
    assistant = Assistant(s, embedder=embedder)
    assistant.build()
    kept = rows_of(client, "inplace", "fruit.md")
    old_python = rows_of(client, "inplace", "python.md")
    embedder.embedded.clear()

    (s.corpus / "new.md").write_text("# 新文件\n\n长城在中国北方，全长两万多公里。", "utf-8")
    (s.corpus / "python.md").write_text(TEXTS["python.md"] + "\n\nGenerators yield values lazily.", "utf-8")
    (s.corpus / "travel.txt").unlink()
    report = assistant.build()
    index = assistant._current().index
    assert report.reused_documents == 1 and report.removed_documents == 1
    assert set(embedder.embedded) == {c.text for c in index.chunks if c.source in ("new.md", "python.md")}
    assert assistant.store.count() == len(index.chunks) == report.chunks
    assert rows_of(client, "inplace", "fruit.md") == kept  # reused rows stay
    assert rows_of(client, "inplace", "travel.txt") == []
    assert not set(rows_of(client, "inplace", "python.md")) & set(old_python)  # the old version's rows are gone
    assert "长城" in assistant.ask("长城有多长？").text
    embedder.embedded.clear()
    assert assistant.build().unchanged and not embedder.embedded


# -- the real model on the default corpus --------------------------------------------------------
@pytest.mark.e2e
def test_real_answers_identical_on_the_server(real_settings, real_index, real_assistant, tmp_path, server, client):
    for name in ("faiss", "server"):  # each its own corpus folder: Assistant.remove deletes the file
        shutil.copytree(real_settings.corpus, tmp_path / f"corpus-{name}")
        shutil.copytree(real_index, tmp_path / f"index-{name}")
    folder = Assistant(real_settings.with_(corpus=tmp_path / "corpus-faiss", index=tmp_path / "index-faiss"),
                       embedder=real_assistant.embedder)
    milvus = Assistant(real_settings.with_(corpus=tmp_path / "corpus-server", index=tmp_path / "index-server",
                                           vector_store=server.uri, vector_collection="real"),
                       embedder=real_assistant.embedder)
    report = milvus.build()  # copies the vectors into the server, embeds nothing
    assert report.embedded_chunks == 0 and milvus.store.count() == report.chunks
    questions = [q.question for q in load_questions(ROOT / "tests" / "data" / "eval.jsonl")]

    def cited(answer):
        return [(c.n, c.source, c.start, c.end, c.quote, c.line, c.page) for c in [*answer.citations, *answer.related]]

    def same_answers(asked):
        """Each question's answers on both (text, citations, scores); the sources each answer cites."""
        sources = {}
        for q in asked:
            a, b = folder.ask(q), milvus.ask(q)
            assert (b.text, b.abstained, cited(b)) == (a.text, a.abstained, cited(a)), q
            assert [c.score for c in [*b.citations, *b.related]] == \
                pytest.approx([c.score for c in [*a.citations, *a.related]], abs=1e-6), q
            sources[q] = {c.source for c in a.citations}
        return sources

    before = same_answers(questions)
    counts = Counter(s for cited_by_one in before.values() for s in cited_by_one)
    source = min(counts, key=lambda s: (-counts[s], s))  # the most cited document
    # after removing it, the answers again: of 8 questions that cited it (their answers change), and of every 32nd
    asked_again = list(dict.fromkeys([q for q in questions if source in before[q]][:8] + questions[::32]))
    assert rows_of(client, "real", source)
    assert milvus.remove([source]).chunks == folder.remove([source]).chunks
    assert rows_of(client, "real", source) == [] and milvus.store.count() == milvus.status().chunks
    assert not any(source in cited_by_one for cited_by_one in same_answers(asked_again).values())
