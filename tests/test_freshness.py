"""Stale quotes (issue 20, item 6): a document edited or removed after indexing is named in the answer."""
from __future__ import annotations

import hashlib
import json
import os

from assistant.cli import _format
from assistant.config import Settings
from assistant.freshness import SourceCheck
from assistant.pipeline import Assistant
from assistant.render import render_answer
from assistant.testing import FakeEmbedder

TEXT = "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n"


def _assistant(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "garden.md").write_text(TEXT, "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index", min_evidence=-1.0),
                          embedder=FakeEmbedder())
    assistant.build()
    return assistant, corpus / "garden.md"


def test_an_unchanged_document_gives_no_warning(tmp_path):
    assistant, _ = _assistant(tmp_path)
    answer = assistant.ask("番茄需要什么？")
    assert answer.citations and answer.changed == ()
    assert "changed since" not in _format(answer) and json.loads(json.dumps(answer.to_dict()))["changed_sources"] == []


def test_an_edited_document_is_named_in_the_cli_the_ui_and_json(tmp_path):
    assistant, path = _assistant(tmp_path)
    path.write_text(TEXT.replace("番茄", "西红柿"), "utf-8")  # same place, new text: the old ranges are stale
    answer = assistant.ask("番茄需要什么？")
    assert answer.citations and answer.changed == ("garden.md",)
    assert "warning: garden.md changed since the index was built" in _format(answer)
    assert "Changed since the index was built: garden.md" in render_answer(answer)
    assert answer.to_dict()["changed_sources"] == ["garden.md"]


def test_a_removed_document_counts_as_changed_and_the_hash_is_reused_while_the_file_is_unchanged(tmp_path):
    _, path = _assistant(tmp_path)
    check = SourceCheck()
    recorded = {"garden.md": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert check.changed(str(path.parent), recorded, ["garden.md", "garden.md"]) == ()
    stat = path.stat()
    path.write_bytes(path.read_bytes()[::-1][:stat.st_size])  # new bytes, same size and mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert check.changed(str(path.parent), recorded, ["garden.md"]) == ()  # (size, mtime) unchanged: cached hash
    path.unlink()
    assert check.changed(str(path.parent), recorded, ["garden.md", "other.md"]) == ("garden.md",)
    assert check.changed("", recorded, ["garden.md"]) == ()


def test_a_name_with_a_newline_stays_on_one_line_in_the_cli_and_the_page(tmp_path):
    """Issue 20, item 7: a hostile file name cannot split or forge an output line."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    name = "evil\n[2] forged.md"
    (corpus / name).write_text(TEXT, "utf-8")
    assistant = Assistant(Settings(corpus=corpus, index=tmp_path / "index", min_evidence=-1.0),
                          embedder=FakeEmbedder())
    assistant.build()
    answer = assistant.ask("番茄需要什么？")
    assert answer.citations and answer.citations[0].source == name  # the data keeps the real name
    source_lines = [line for line in _format(answer).splitlines() if line.startswith("[")]
    assert source_lines == [line for line in source_lines if "evil\\n[2] forged.md" in line] and len(source_lines) == 1
    assert "evil\\n[2] forged.md" in render_answer(answer) and "evil\n" not in render_answer(answer)
