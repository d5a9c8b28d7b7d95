"""Reliability of the index folder: builds killed with SIGKILL, damaged and foreign folders, planted files.

A build runs in a child process (the real ``Assistant.build`` with the fake embedder); the child script
monkeypatches one function of the build so that it announces the point it reached and then waits; the
test kills the child there with SIGKILL. Nothing in the package knows about these tests.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.cli import main
from assistant.config import Settings
from assistant.errors import IndexStoreError
from assistant.index_store import MANIFEST, load_index, read_manifest
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder
from offline_guard import offline_env

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

OLD = {
    "fruit.md": "# 水果\n\n苹果是一种常见的水果，富含维生素。香蕉产自热带地区。\n\n## 储存\n\n"
                "苹果应放在阴凉处保存。香蕉不宜放进冰箱。葡萄要冷藏。",
    "python.md": "# Python\n\nPython is a programming language. It is popular for data science.\n\n"
                 "Lists and dicts are built in. Functions are first class objects.",
    "notes/travel.txt": "出发前检查护照和签证。\n行李不要超过二十公斤。\n\n机场安检需要提前两小时到达。",
}
NEW = dict(OLD, **{
    "python.md": "# Python\n\nPython was created by Guido van Rossum. It reads like pseudo code.\n\n"
                 "Rust is a systems language. It is fast and memory safe.",
    "garden.md": "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n\n每两周施一次有机肥。",
})

# The child: build the corpus into the index, blocking forever at the named point after announcing it.
CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{root!r}, {tests!r}]
    from pathlib import Path
    import assistant.generations as generations
    from assistant.config import Settings
    from assistant.pipeline import Assistant
    from assistant.testing import FakeEmbedder

    point, corpus, index, marker = sys.argv[1:5]

    def reached():
        Path(marker).write_text(point)
        while True:
            time.sleep(60)

    def after(owner, name):
        real = getattr(owner, name)
        def patched(*args, **kwargs):
            result = real(*args, **kwargs)
            reached()
            return result
        setattr(owner, name, patched)

    if point == "embedding":  # the chunks are being embedded
        FakeEmbedder.embed_documents = lambda self, texts, titles=None: reached()
    elif point == "write":  # vectors and chunks are written in the staging folder, BM25 not yet
        import faiss
        after(faiss, "write_index")
    elif point == "before-swap":  # the new generation's files are in the index folder, the manifest is not
        def fsync_tree(folder, names):
            reached()
        generations._fsync_tree = fsync_tree
    elif point == "after-swap":  # the new manifest is in place, the old generation not yet removed
        generations.remove_other_generations = lambda folder, keep: reached()
    else:
        raise SystemExit("unknown point " + point)
    settings = Settings(corpus=Path(corpus), index=Path(index), chunk_size=40)
    Assistant(settings, embedder=FakeEmbedder()).build()
    raise SystemExit("the build finished without reaching " + point)
""").format(root=str(ROOT), tests=str(TESTS))

POINTS = ["embedding", "write", "before-swap", "after-swap"]
GENERATION_FILES = ("vectors-", "chunks-", "lexical-", ".tmp-")


def write_corpus(folder: Path, texts: dict[str, str]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    for source, text in texts.items():
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_text(text, "utf-8")
    return folder


def settings(tmp_path: Path, **changes) -> Settings:
    values = {"corpus": tmp_path / "corpus", "index": tmp_path / "index", "chunk_size": 40, "min_evidence": 0.01}
    return Settings(**{**values, **changes})


def kill_build_at(point: str, corpus: Path, index: Path, tmp_path: Path) -> None:
    """Run a build of ``corpus`` into ``index`` in a child process and SIGKILL it at ``point``."""
    marker = tmp_path / f"reached-{point}"
    log = open(tmp_path / f"child-{point}.log", "w")
    child = subprocess.Popen([sys.executable, "-c", CHILD, point, str(corpus), str(index), str(marker)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=offline_env())
    try:
        deadline = time.monotonic() + 120  # a bound on the wait, not a timing assertion
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the build exited ({child.returncode}) before {point}:\n"
                            f"{(tmp_path / f'child-{point}.log').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the build never reached {point}")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        log.close()


def expected_chunks(texts: dict[str, str], tmp_path: Path) -> list[tuple]:
    """The chunks a complete, uninterrupted build of ``texts`` holds."""
    scratch = tmp_path / f"expected-{len(list(tmp_path.iterdir()))}"
    write_corpus(scratch / "corpus", texts)
    Assistant(settings(scratch), embedder=FakeEmbedder()).build()
    return [(c.source, c.start, c.end, c.text) for c in load_index(scratch / "index").chunks]


def served_chunks(index: Path) -> list[tuple]:
    loaded = load_index(index)
    assert loaded.vectors.ntotal == len(loaded.chunks) == loaded.manifest["chunk_count"]
    return [(c.source, c.start, c.end, c.text) for c in loaded.chunks]


def assert_answers_verbatim(tmp_path: Path, texts: dict[str, str]) -> None:
    assistant = Assistant(settings(tmp_path), embedder=FakeEmbedder())
    for question in ("苹果应该怎么保存？", "What kind of language is Python?"):
        answer = assistant.ask(question)
        assert answer.citations or answer.related
        for c in (*answer.citations, *answer.related):
            assert texts[c.source][c.start:c.end] == c.quote


def stale(index: Path) -> list[str]:
    """Files of generations the manifest does not name, and staging folders."""
    keep = read_manifest(index).get("generation", "")
    return sorted(p.name for p in index.iterdir() if p.name.startswith(GENERATION_FILES) and keep not in p.name)


# -- builds killed with SIGKILL ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_killed_rebuild_leaves_old_or_complete_new_index_and_next_build_cleans_up(tmp_path, point):
    old, new = expected_chunks(OLD, tmp_path), expected_chunks(NEW, tmp_path)
    corpus, index = write_corpus(tmp_path / "corpus", OLD), tmp_path / "index"
    Assistant(settings(tmp_path), embedder=FakeEmbedder()).build()
    write_corpus(corpus, NEW)

    kill_build_at(point, corpus, index, tmp_path)

    served = served_chunks(index)
    assert served == (new if point == "after-swap" else old)  # never a mix
    assert_answers_verbatim(tmp_path, NEW if point == "after-swap" else OLD)
    if point != "embedding":
        assert stale(index), "the kill should have left files of an unfinished generation behind"

    report = Assistant(settings(tmp_path), embedder=FakeEmbedder()).build()  # the next run
    assert served_chunks(index) == new and report.documents == len(NEW)
    assert stale(index) == []
    assert_answers_verbatim(tmp_path, NEW)


@pytest.mark.slow
def test_stale_files_are_cleaned_even_when_the_next_build_has_nothing_to_do(tmp_path):
    corpus, index = write_corpus(tmp_path / "corpus", OLD), tmp_path / "index"
    Assistant(settings(tmp_path), embedder=FakeEmbedder()).build()
    write_corpus(corpus, NEW)
    kill_build_at("before-swap", corpus, index, tmp_path)
    write_corpus(corpus, OLD)  # the change is taken back: the next build finds the index up to date
    report = Assistant(settings(tmp_path), embedder=FakeEmbedder()).build()
    assert report.unchanged
    assert stale(index) == []
    assert served_chunks(index) == expected_chunks(OLD, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["embedding", "write", "before-swap"])
def test_killed_first_build_leaves_a_clear_message_and_the_next_build_succeeds(tmp_path, point, capsys):
    corpus, index = write_corpus(tmp_path / "corpus", NEW), tmp_path / "index"
    kill_build_at(point, corpus, index, tmp_path)
    with pytest.raises(IndexStoreError, match="not an assistant index|no index") as caught:
        load_index(index)
    assert "assistant index build" in str(caught.value)

    report = Assistant(settings(tmp_path), embedder=FakeEmbedder()).build()
    assert report.documents == len(NEW)
    assert served_chunks(index) == expected_chunks(NEW, tmp_path)
    assert stale(index) == []


# -- damaged, tampered and foreign index folders -----------------------------------------------------
# Existing tests in test_index_store.py already prove: missing folder, no manifest, missing vectors,
# truncated vectors, chunks.jsonl shorter than the vectors, garbled chunk line, missing lexical files,
# manifest not JSON / other format / missing key / future version, file names leaving the folder,
# dimension mismatch, another embedding model refused at build and load.

@pytest.fixture
def built(tmp_path) -> Path:
    write_corpus(tmp_path / "corpus", OLD)
    Assistant(settings(tmp_path), embedder=FakeEmbedder()).build()
    return tmp_path / "index"


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text("utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), "utf-8")


def cli_error(index: Path, capsys, monkeypatch, embedder=None) -> str:
    """``assistant ask`` over ``index``: exit code 2 and one line ``error: ...``; returns the line."""
    import assistant.pipeline as pipeline

    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: embedder or FakeEmbedder())
    capsys.readouterr()
    assert main(["ask", "--index", str(index), "苹果怎么保存？"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _set_embedding(m, value):
    m["embedding"] = value


TAMPERED = {
    "embedding is a list": lambda m: _set_embedding(m, ["fake/char-ngrams"]),
    "dimension is text": lambda m: m["embedding"].update(dimension="64"),
    "documents is a string": lambda m: m.update(documents="everything"),
    "a document record is a number": lambda m: m["documents"].__setitem__(0, 7),
    "chunk ranges overlap": lambda m: m["documents"][1].update(first_chunk=0),
    "chunk count is text": lambda m: m.update(chunk_count="many"),
    "files is a list": lambda m: m.update(files=["vectors.faiss"]),
    "chunking is null": lambda m: m.update(chunking=None),
    "pages are garbage": lambda m: m["documents"][0].update(pages=[["x"]]),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_manifest_is_a_clear_error_everywhere(built, name, capsys, monkeypatch):
    edit_manifest(built, TAMPERED[name])
    with pytest.raises(IndexStoreError) as caught:
        Assistant(settings(built.parent), embedder=FakeEmbedder()).ask("苹果怎么保存？")
    message = str(caught.value)
    assert "\n" not in message and "rebuild" in message and str(built) in message
    assert "rebuild" in cli_error(built, capsys, monkeypatch)
    # and the next build replaces the damaged index instead of crashing on it
    report = Assistant(settings(built.parent), embedder=FakeEmbedder()).build()
    assert report.chunks == len(load_index(built).chunks) and not report.unchanged


def test_manifest_whose_documents_point_at_other_chunks_is_refused(built):
    # Swapping two documents' chunk ranges would make a build reuse the wrong vectors for them.
    def swap(m):
        a, b = m["documents"][0], m["documents"][1]
        a["first_chunk"], b["first_chunk"] = b["first_chunk"], a["first_chunk"]
        a["chunks"], b["chunks"] = b["chunks"], a["chunks"]

    edit_manifest(built, swap)
    with pytest.raises(IndexStoreError, match="rebuild"):
        load_index(built)


def test_future_version_names_the_version_and_the_fix(built, capsys, monkeypatch):
    edit_manifest(built, lambda m: m.update(format_version=2))
    message = cli_error(built, capsys, monkeypatch)
    assert "version 2" in message and "assistant index build --rebuild" in message


def test_index_of_another_embedding_model_names_both_models(built, capsys, monkeypatch):
    class Other(FakeEmbedder):
        model_id = "someone/else-model"

    message = cli_error(built, capsys, monkeypatch, embedder=Other())
    assert "fake/char-ngrams" in message and "someone/else-model" in message and "--rebuild" in message


class Payload:
    """Unpickling this runs ``touch <path>``: proof that something deserialised it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_planted_pickles_are_never_deserialised(built, tmp_path, capsys, monkeypatch):
    proof = tmp_path / "code-ran"
    payload = pickle.dumps(Payload(proof))
    # A pickle beside the index, under the names LangChain / FAISS.save_local would use
    (built / "index.pkl").write_bytes(payload)
    (built / "docstore.pkl").write_bytes(payload)
    assistant = Assistant(settings(tmp_path), embedder=FakeEmbedder())
    assert assistant.ask("苹果怎么保存？").citations
    assert not proof.exists()

    # every BM25 array replaced by an object array (np.save pickles those)
    for npy in built.glob("lexical-*/*.npy"):
        np.save(npy, np.array([Payload(proof)], dtype=object), allow_pickle=True)
    with pytest.raises(IndexStoreError, match="lexical index .* damaged.*rebuild"):
        load_index(built)
    assert "lexical" in cli_error(built, capsys, monkeypatch)
    assert not proof.exists()

    # the vector file and the chunks file replaced by pickles
    shutil.rmtree(built)
    shutil.copytree(pristine_index(tmp_path), built)
    next(built.glob("vectors-*.faiss")).write_bytes(payload)
    assert "damaged or truncated" in cli_error(built, capsys, monkeypatch)
    shutil.rmtree(built)
    shutil.copytree(pristine_index(tmp_path), built)
    next(built.glob("chunks-*.jsonl")).write_bytes(payload)
    assert "damaged" in cli_error(built, capsys, monkeypatch)
    (built / MANIFEST).write_bytes(payload)
    assert "damaged" in cli_error(built, capsys, monkeypatch)
    assert not proof.exists()


def pristine_index(tmp_path: Path) -> Path:
    folder = tmp_path / "pristine"
    if not folder.exists():
        write_corpus(folder / "corpus", OLD)
        Assistant(settings(folder), embedder=FakeEmbedder()).build()
    return folder / "index"


def test_vector_file_swapped_for_one_of_another_index_is_refused(built, tmp_path):
    other = tmp_path / "other"
    write_corpus(other / "corpus", {"one.md": "只有一句话。"})
    Assistant(settings(other), embedder=FakeEmbedder()).build()
    mine = next(built.glob("vectors-*.faiss"))
    shutil.copyfile(next((other / "index").glob("vectors-*.faiss")), mine)
    with pytest.raises(IndexStoreError, match="inconsistent.*rebuild"):
        load_index(built)


def test_symlinked_member_outside_the_folder_is_not_read_as_an_index(built, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not an index file")
    mine = next(built.glob("chunks-*.jsonl"))
    mine.unlink()
    mine.symlink_to(outside)
    with pytest.raises(IndexStoreError, match="rebuild"):
        load_index(built)
    assert outside.read_text() == "not an index file"


def test_index_build_into_a_folder_sent_by_someone_else_never_runs_its_code(tmp_path, capsys, monkeypatch):
    # A folder with a Python file and a pickle, but no manifest: refused, untouched, nothing run.
    folder = tmp_path / "received"
    folder.mkdir()
    proof = tmp_path / "code-ran"
    (folder / "sitecustomize.py").write_text(f"open({str(proof)!r}, 'w').close()\n")
    (folder / "index.pkl").write_bytes(pickle.dumps(Payload(proof)))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    message = cli_error(folder, capsys, monkeypatch)
    assert "not an assistant index" in message
    write_corpus(tmp_path / "corpus", OLD)
    assert main(["index", "build", "--corpus", str(tmp_path / "corpus"), "--index", str(folder)]) == 2
    assert "refusing to write" in capsys.readouterr().err
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before
    assert not proof.exists()


def test_ui_on_a_damaged_index_says_what_is_wrong_and_rebuild_repairs_it(built):
    from assistant.ui import ChatHandlers

    next(built.glob("vectors-*.faiss")).write_bytes(b"garbage")
    handlers = ChatHandlers(Assistant(settings(built.parent), embedder=FakeEmbedder()), stream_delay=0)
    status = handlers.status_markdown()
    assert "Index not usable" in status and "damaged or truncated" in status and "No index yet" not in status
    *_, (messages, _) = handlers.respond("苹果怎么保存？", [])
    assert 'class="error-note"' in messages[-1]["content"] and "rebuild" in messages[-1]["content"]
    report, status = handlers.rebuild()
    assert "Index rebuilt" in report and "3 documents" in status
    *_, (messages, _) = handlers.respond("苹果怎么保存？", [])
    assert '<span class="doc">fruit.md</span>' in messages[-1]["content"]
