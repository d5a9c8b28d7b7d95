"""Tests for assistant.config: Settings from ASSISTANT_* variables, validated."""
from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.errors import ConfigError


def test_defaults_without_variables():
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.corpus, s.index, s.embed_model, s.embed_dtype) == (Path("corpus"), Path("index"), "", "auto")
    assert (s.top_k, s.chunk_size, s.chunk_overlap, s.min_evidence) == (5, 360, 0, 0.0)
    assert (s.reader, s.reader_runtime) == ("span", "auto")


def test_variables_are_read_and_typed(tmp_path):
    s = Settings.from_env({
        "ASSISTANT_HOME": "~/assistant-home",
        "ASSISTANT_CORPUS": str(tmp_path / "docs"),
        "ASSISTANT_INDEX": str(tmp_path / "idx"),
        "ASSISTANT_EMBED_MODEL": "org/model",
        "ASSISTANT_EMBED_DTYPE": "fp32",
        "ASSISTANT_EMBED_BATCH": "8",
        "ASSISTANT_THREADS": "2",
        "ASSISTANT_CHUNK_SIZE": "500",
        "ASSISTANT_CHUNK_OVERLAP": "40",
        "ASSISTANT_TOP_K": "7",
        "ASSISTANT_MIN_EVIDENCE": "0.3",
        "ASSISTANT_PORT": "8080",
        "ASSISTANT_MAX_QUESTION_CHARS": "100",
        "ASSISTANT_MAX_FILE_MB": "5",
    })
    assert isinstance(s.corpus, Path) and s.corpus == tmp_path / "docs"
    assert isinstance(s.index, Path) and s.index == tmp_path / "idx"
    assert isinstance(s.home, Path) and s.home == Path.home() / "assistant-home"  # ~ expanded
    assert s.embed_model == "org/model" and s.embed_dtype == "fp32"
    assert (s.embed_batch, s.threads, s.chunk_size, s.chunk_overlap, s.top_k) == (8, 2, 500, 40, 7)
    assert s.min_evidence == pytest.approx(0.3) and isinstance(s.min_evidence, float)
    assert (s.port, s.max_question_chars, s.max_file_mb) == (8080, 100, 5)


def test_empty_variables_are_ignored():
    assert Settings.from_env({"ASSISTANT_TOP_K": "", "ASSISTANT_INDEX": ""}) == Settings()


def test_reads_the_process_environment_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSISTANT_INDEX", str(tmp_path / "from-env"))
    monkeypatch.setenv("ASSISTANT_TOP_K", "3")
    s = Settings.from_env()
    assert s.index == tmp_path / "from-env" and s.top_k == 3


def test_overrides_win_and_none_is_ignored(tmp_path):
    s = Settings.from_env({"ASSISTANT_TOP_K": "3", "ASSISTANT_INDEX": "a"}, top_k=9, index=None)
    assert s.top_k == 9 and s.index == Path("a")


def test_with_changes_only_given_fields():
    s = Settings().with_(top_k=2, index=None)
    assert s.top_k == 2 and s.index == Path("index")


@pytest.mark.parametrize("env, fragment", [
    ({"ASSISTANT_TOP_K": "abc"}, "ASSISTANT_TOP_K='abc' is not a valid int"),
    ({"ASSISTANT_CHUNK_SIZE": "3.5"}, "ASSISTANT_CHUNK_SIZE"),
    ({"ASSISTANT_MIN_EVIDENCE": "high"}, "ASSISTANT_MIN_EVIDENCE='high' is not a valid float"),
    ({"ASSISTANT_EMBED_DTYPE": "fp16"}, "ASSISTANT_EMBED_DTYPE must be auto, bf16 or fp32"),
    ({"ASSISTANT_TOP_K": "0"}, "ASSISTANT_TOP_K must be a positive number"),
    ({"ASSISTANT_EMBED_BATCH": "-1"}, "ASSISTANT_EMBED_BATCH must be a positive number"),
    ({"ASSISTANT_MAX_QUESTION_CHARS": "0"}, "ASSISTANT_MAX_QUESTION_CHARS"),
    ({"ASSISTANT_CHUNK_SIZE": "100", "ASSISTANT_CHUNK_OVERLAP": "50"}, "ASSISTANT_CHUNK_OVERLAP"),
    ({"ASSISTANT_CHUNK_OVERLAP": "-1"}, "ASSISTANT_CHUNK_OVERLAP"),
    ({"ASSISTANT_READER_RUNTIME": "openvino"}, "ASSISTANT_READER_RUNTIME must be auto, onnx, torch, not 'openvino'"),
])
def test_bad_values_are_refused(env, fragment):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert fragment in str(caught.value)


def test_largest_allowed_overlap():
    assert Settings.from_env({"ASSISTANT_CHUNK_SIZE": "100", "ASSISTANT_CHUNK_OVERLAP": "49"}).chunk_overlap == 49


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().top_k = 3  # type: ignore[misc]
