"""Tests for assistant.cli: ``main([...])`` in-process, with the fake embedder and folders in tmp_path."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

import assistant.pipeline as pipeline
from assistant.cli import main
from assistant.ingest import read_document
from assistant.testing import FakeEmbedder

TEXTS = {
    "garden.md": "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n\n## 施肥\n\n每两周施一次有机肥。",
    "cooking.txt": "Boil the pasta in salted water for nine minutes.\r\nDrain it and add olive oil.\r\n",
    "docs/router.md": "# 路由器\n\n路由器重启后需要等待两分钟。The Wi-Fi password is printed on the router label.",
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No ASSISTANT_* settings from outside, the fake embedder, and tmp_path as the working folder."""
    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: FakeEmbedder())
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    for source, text in TEXTS.items():
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_bytes(text.encode("utf-8"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02\xff" * 64)
    return folder


@pytest.fixture
def index(tmp_path, corpus, capsys) -> Path:
    folder = tmp_path / "index"
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(folder)]) == 0
    capsys.readouterr()
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# -- index -----------------------------------------------------------------------------------------

def test_index_build_prints_counts_and_skipped_files(tmp_path, corpus, capsys):
    code, out, err = run(capsys, "index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("3 documents, ") and " chunks (" in lines[0] and "0 documents reused" in lines[0]
    assert "skipped empty.txt: file is empty" in out
    assert "skipped binary.txt: binary content" in out
    assert (tmp_path / "index" / "manifest.json").is_file()

    code, out, _ = run(capsys, "index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index"))
    assert code == 0 and "0 embedded, 3 documents reused" in out and "index unchanged" in out


def test_index_build_uses_environment_folders(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CORPUS", str(corpus))
    monkeypatch.setenv("ASSISTANT_INDEX", str(tmp_path / "elsewhere"))
    code, out, _ = run(capsys, "index", "build")
    assert code == 0 and out.startswith("3 documents")
    assert (tmp_path / "elsewhere" / "manifest.json").is_file()


def test_index_build_of_a_missing_corpus(tmp_path, capsys):
    code, out, err = run(capsys, "index", "build", "--corpus", str(tmp_path / "nope"), "--index", str(tmp_path / "i"))
    assert code == 2 and out == ""
    assert_one_error_line(err, "does not exist")


def test_index_build_of_a_corpus_without_text(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.txt").write_bytes(b"")
    code, _, err = run(capsys, "index", "build", "--corpus", str(folder), "--index", str(tmp_path / "i"))
    assert code == 2
    *steps, error = err.splitlines()  # the reading step's lines, then the one error line
    assert steps == ["reading: 0/1 files", "reading: 1/1 files"]
    assert_one_error_line(error, "no text to index", "empty.txt")


def test_index_status_text_and_json(index, corpus, capsys):
    code, out, _ = run(capsys, "index", "status", "--index", str(index))
    assert code == 0
    assert "documents: 3" in out and "model:     fake/char-ngrams" in out
    assert f"corpus:    {corpus.resolve()}" in out
    assert "skipped:   empty.txt: file is empty" in out

    code, out, _ = run(capsys, "index", "status", "--index", str(index), "--json")
    assert code == 0
    status = json.loads(out)
    assert status["documents"] == 3 and status["chunks"] > 3 and status["embedding_model"] == "fake/char-ngrams"
    assert status["index"] == str(index) and status["built_at"].endswith("Z")
    assert {s["source"] for s in status["skipped"]} == {"empty.txt", "binary.txt"}


def test_index_status_without_an_index(tmp_path, capsys):
    code, _, err = run(capsys, "index", "status", "--index", str(tmp_path / "none"))
    assert code == 2
    assert_one_error_line(err, "assistant index build")


def test_index_add_copies_the_file_and_makes_it_searchable(tmp_path, index, corpus, capsys, monkeypatch):
    new = tmp_path / "incoming" / "space.md"
    new.parent.mkdir()
    new.write_text("火星上有太阳系最高的火山，名叫奥林帕斯山。", "utf-8")
    code, out, _ = run(capsys, "index", "add", str(new), "--corpus", str(corpus), "--index", str(index))
    assert code == 0
    assert (corpus / "space.md").read_bytes() == new.read_bytes()
    assert out.startswith("4 documents") and "1 embedded, 3 documents reused" in out

    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), "火星 最高的火山")
    answer = json.loads(out)
    assert code == 0 and not answer["abstained"]
    assert answer["citations"][0]["source"] == "space.md"


@pytest.mark.parametrize("name, data, reason", [
    ("broken.txt", b"\x00\x01\x02\xff" * 64, "binary content"),
    ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "broken.pdf"),
    ("tool.exe", b"MZ\x90\x00", "unsupported type"),
])
def test_index_add_refuses_an_unreadable_file_without_touching_the_corpus(tmp_path, index, corpus, capsys,
                                                                         name, data, reason):
    bad = tmp_path / name
    bad.write_bytes(data)
    before = sorted(p.name for p in corpus.rglob("*"))
    code, out, _ = run(capsys, "index", "add", str(bad), "--corpus", str(corpus), "--index", str(index))
    assert code == 1
    assert f"skipped {name}: " in out and reason in out
    assert sorted(p.name for p in corpus.rglob("*")) == before


def test_index_add_of_a_missing_path(tmp_path, index, corpus, capsys):
    code, _, err = run(capsys, "index", "add", str(tmp_path / "ghost.md"), "--corpus", str(corpus), "--index",
                       str(index))
    assert code == 2
    assert_one_error_line(err, "not a file", "ghost.md")


# -- ask -------------------------------------------------------------------------------------------

def document_text(corpus: Path, source: str) -> str:
    return read_document(corpus / source, corpus).text


def test_ask_json_prints_one_verified_object_per_question(index, corpus, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), "番茄 浇水", "boil pasta salted water")
    assert code == 0
    rows = json_lines(out)
    assert [r["question"] for r in rows] == ["番茄 浇水", "boil pasta salted water"]
    for row in rows:
        assert {"question", "answer", "abstained", "citations", "timings_ms"} <= set(row)
        assert row["abstained"] is False and row["citations"]
        assert set(row["timings_ms"]) >= {"retrieve", "read", "total"}
        for c in row["citations"]:
            assert {"n", "source", "start", "end", "quote", "score"} <= set(c)
            assert document_text(corpus, c["source"])[c["start"]:c["end"]] == c["quote"]
            assert f"[{c['n']}]" in row["answer"]
    assert rows[0]["citations"][0]["source"] == "garden.md"
    assert rows[1]["citations"][0]["source"] == "cooking.txt"


def test_ask_text_output_lists_sources(index, corpus, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    code, out, _ = run(capsys, "ask", "--index", str(index), "路由器 重启")
    assert code == 0
    assert out.startswith("Q: 路由器 重启\n") and "Sources:" in out
    assert "[1] docs/router.md line " in out


def test_ask_abstains_below_the_evidence_threshold(index, corpus, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.99")
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), "番茄 浇水")
    assert code == 0
    row = json.loads(out)
    assert row["abstained"] is True and row["citations"] == []
    assert row["related"]
    for c in row["related"]:
        assert document_text(corpus, c["source"])[c["start"]:c["end"]] == c["quote"]

    code, out, _ = run(capsys, "ask", "--index", str(index), "番茄 浇水")
    assert code == 0 and "Related passages:" in out and "Sources:" not in out


def test_ask_reads_questions_from_stdin(index, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    monkeypatch.setattr("sys.stdin", io.StringIO("番茄 浇水\n\n   \nWi-Fi password\n"))
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), "-")
    assert code == 0
    assert [r["question"] for r in json_lines(out)] == ["番茄 浇水", "Wi-Fi password"]


@pytest.mark.parametrize("question", ["", "   ", "\x00\x01"])
def test_ask_an_empty_question(index, capsys, question):
    code, out, err = run(capsys, "ask", "--index", str(index), question)
    assert code == 2 and out == ""
    assert_one_error_line(err, "empty")


def test_ask_json_reports_a_bad_question_as_an_error_row(index, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), "", "番茄")
    assert code == 0  # one of two answered
    rows = json_lines(out)
    assert "empty" in rows[0]["error"] and rows[1]["question"] == "番茄"
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), " ")
    assert code == 2 and "error" in json.loads(out)


def test_ask_loads_the_index_and_models_side_by_side_and_waits_for_them(index, capsys, monkeypatch):
    """The index, the query encoder and the reader load in the background from the start; none is left
    loading at exit, and nothing starts loading for questions that cannot be asked."""
    import threading

    from assistant import pipeline

    started, warm_up = [], pipeline.warm_up

    def recording(assistant, level):
        started.extend(warm_up(assistant, level))
        return started

    monkeypatch.setattr(pipeline, "warm_up", recording)
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.01")
    code, out, _ = run(capsys, "ask", "--json", "--index", str(index), "番茄 浇水")
    assert code == 0 and json.loads(out)["citations"]
    assert sorted(t.name for t in started) == ["warm-up-encoder", "warm-up-index", "warm-up-reader"]
    assert not any(t.is_alive() for t in started) and threading.main_thread().is_alive()
    started.clear()
    code, _, err = run(capsys, "ask", "--index", str(index), "问" * 100_000)
    assert code == 2 and "limit" in err and started == []  # refused before anything loads


def test_ask_a_huge_question(index, capsys):
    code, out, err = run(capsys, "ask", "--index", str(index), "问" * 100_000)
    assert code == 2 and out == ""
    assert_one_error_line(err, "100,000 characters", "limit is 2,000", "ASSISTANT_MAX_QUESTION_CHARS")


def test_ask_without_an_index_says_to_build_one(tmp_path, capsys):
    code, out, err = run(capsys, "ask", "--index", str(tmp_path / "missing"), "番茄")
    assert code == 2 and out == ""
    assert_one_error_line(err, "no index", "assistant index build")


def test_ask_with_an_index_of_another_model(index, capsys, monkeypatch):
    class Other(FakeEmbedder):
        model_id = "fake/other"

    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: Other())
    code, _, err = run(capsys, "ask", "--index", str(index), "番茄")
    assert code == 2
    assert_one_error_line(err, "fake/char-ngrams", "fake/other", "--rebuild")


def test_bad_setting_is_one_error_line(index, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_TOP_K", "many")
    code, _, err = run(capsys, "ask", "--index", str(index), "番茄")
    assert code == 2
    assert_one_error_line(err, "ASSISTANT_TOP_K")


def test_k_option_limits_the_passages(index, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.99")  # abstain: related passages come from the hits
    code, out, _ = run(capsys, "ask", "--json", "-k", "1", "--index", str(index), "番茄 浇水")
    assert code == 0 and len(json.loads(out)["related"]) == 1


# -- models ----------------------------------------------------------------------------------------

def test_models_verify_without_a_fetched_model(capsys):
    code, _, err = run(capsys, "models", "verify")
    assert code == 2
    assert_one_error_line(err, "missing", "assistant models fetch")


def test_models_unknown_name(capsys):
    code, _, err = run(capsys, "models", "fetch", "no-such-model")
    assert code == 2
    assert_one_error_line(err, "unknown model", "embeddinggemma-300m")


# -- help ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, options", [
    ([], ["index", "ask", "models", "ASSISTANT_HOME"]),
    (["index"], ["build", "add", "status"]),
    (["index", "build"], ["--corpus", "--index", "--rebuild"]),
    (["index", "add"], ["PATH", "--corpus", "--index"]),
    (["index", "status"], ["--index", "--json"]),
    (["ask"], ["QUESTION", "--json", "--explain", "-k", "--index"]),
    (["models", "fetch"], ["name"]),
    (["models", "verify"], ["name"]),
    (["chat"], ["--index"]),
])
def test_help_of_each_command(capsys, argv, options):
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: assistant")
    for option in options:
        assert option in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_models_prune_removes_only_the_exports_no_setting_reads(tmp_path, capsys):
    """Old exports (another format or exporter version, other reader weights) and stopped staging folders go;
    the current encoder and reader exports, a staging folder still young, and other files stay."""
    from assistant import onnx_encoder, onnx_reader
    from assistant.models import EMBEDDING_GEMMA, READER_WEIGHTS, sha256_file

    home = tmp_path / "home"
    base = EMBEDDING_GEMMA.files[EMBEDDING_GEMMA.weights_file][1]
    current = [onnx_encoder.export_folder(home, base), onnx_reader.export_folder(home, sha256_file(READER_WEIGHTS), base)]
    root = home / "onnx"
    old = [root / "encoder-0123456789abcdef", root / "reader-fedcba9876543210", root / ".reader-1.tmp-aaaa"]
    young, other = root / ".encoder-2.tmp-bbbb", root / "notes"
    for folder in (*current, *old, young, other):
        folder.mkdir(parents=True)
        (folder / "graph.onnx.data").write_bytes(b"x" * 2 ** 20)
    os.utime(old[2], (time.time() - 7200, time.time() - 7200))  # a staging folder left two hours ago

    assert main(["models", "prune", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert sorted(line.split()[2] for line in out.splitlines()) == sorted(str(p) for p in old) and "3 MB to free" in err
    assert all(p.exists() for p in old)
    assert main(["models", "prune"]) == 0
    out, err = capsys.readouterr()
    assert out.count("removed ") == 3 and "3 MB freed" in err and current[0].name in err
    assert not any(p.exists() for p in old) and all(p.exists() for p in (*current, young, other))
    assert main(["models", "prune"]) == 0 and "0 MB freed" in capsys.readouterr().err
