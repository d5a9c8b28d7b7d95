"""Feedback on answers: stored as JSON lines beside the index, read back whole, exported by the CLI."""
import json
from pathlib import Path

import pytest

from assistant import feedback
from assistant.errors import AssistantError

ANSWER = {"question": "GAN 的损失函数是什么？", "answer": "**binary_crossentropy** [1]", "abstained": False,
          "citations": [{"n": 1, "source": "gan.md", "start": 10, "end": 30, "quote": "loss='binary_crossentropy'",
                         "score": 0.6, "line": 3, "page": None}],
          "answer_span": {"source": "gan.md", "start": 16, "end": 35, "text": "binary_crossentropy", "score": 0.9}}


def test_path_is_beside_the_index_folder(tmp_path):
    assert feedback.feedback_path(tmp_path / "index") == tmp_path / "index.feedback.jsonl"


def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "index.feedback.jsonl"
    feedback.append(path, feedback.record(ANSWER, 1, "  exact  ", reader="span"))
    feedback.append(path, feedback.record(ANSWER, -1))
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"torn": ')  # a write cut short: skipped, the others kept
    items = feedback.read(path)
    assert [i["rating"] for i in items] == [1, -1]
    first = items[0]
    assert first["comment"] == "exact" and first["reader"] == "span" and first["question"] == ANSWER["question"]
    assert first["citations"] == [{"n": 1, "source": "gan.md", "start": 10, "end": 30,
                                   "quote": "loss='binary_crossentropy'"}]
    assert first["answer_span"]["text"] == "binary_crossentropy"
    assert first["time"].endswith("Z")
    assert "GAN" in path.read_text("utf-8")  # readable as written, not escaped


def test_bad_rating_and_long_comment_are_refused(tmp_path):
    with pytest.raises(ValueError):
        feedback.record(ANSWER, 0)
    with pytest.raises(AssistantError, match="limit"):
        feedback.record(ANSWER, 1, "x" * (feedback.MAX_COMMENT_CHARS + 1))


def test_read_of_a_missing_file_is_empty(tmp_path):
    assert feedback.read(tmp_path / "none.jsonl") == []


def test_unwritable_file_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with pytest.raises(AssistantError, match="cannot save the feedback"):
        feedback.append(folder, feedback.record(ANSWER, 1))  # a folder, not a file


def test_cli_export_writes_every_rating(tmp_path, capsys):
    from assistant.cli import main

    index = tmp_path / "index"
    path = feedback.feedback_path(index)
    feedback.append(path, feedback.record(ANSWER, 1, "good", reader="span"))
    feedback.append(path, feedback.record(ANSWER, -1, reader="extractive"))
    assert main(["feedback", "export", "--index", str(index)]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(i["rating"], i["reader"]) for i in lines] == [(1, "span"), (-1, "extractive")]
    assert "2 ratings" in err
    target = tmp_path / "out.json"
    assert main(["feedback", "export", "--index", str(index), "--json", "--out", str(target)]) == 0
    assert [i["comment"] for i in json.loads(target.read_text("utf-8"))] == ["good", ""]


def test_cli_export_with_no_ratings_is_empty(tmp_path, capsys):
    from assistant.cli import main

    assert main(["feedback", "export", "--index", str(tmp_path / "index"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
