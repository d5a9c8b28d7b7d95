"""Tests for the extractive reader's use of unit vectors: from the index when present, embedded otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from assistant.config import Settings
from assistant.pipeline import Assistant
from conftest import FakeEmbedder, PlainEmbedder

TEXTS = {
    "garden.md": "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。\n\n"
                 "## 病虫害\n\n蚜虫可以用肥皂水喷洒。白粉病要剪掉病叶并保持通风。",
    "cooking.md": "# Cooking\n\nBoil the pasta in salted water for nine minutes. Drain and add olive oil.",
}


def assistant_with(tmp_path, embedder) -> Assistant:
    corpus = tmp_path / "corpus"
    corpus.mkdir(parents=True)
    for name, text in TEXTS.items():
        (corpus / name).write_text(text, "utf-8")
    settings = Settings(corpus=corpus, index=tmp_path / "index", min_evidence=-1.0)
    assistant = Assistant(settings, embedder=embedder)
    assistant.build()
    return assistant


@pytest.mark.parametrize("question", ["蚜虫怎么办？", "how long should pasta boil"])
def test_reader_uses_the_stored_unit_vectors_and_embeds_nothing_but_the_question(tmp_path, question):
    embedder = FakeEmbedder()
    assistant = assistant_with(tmp_path, embedder)
    before = len(embedder.embedded)
    answer = assistant.ask(question)
    assert not answer.abstained and answer.citations
    assert embedder.embedded[before:] == []  # embed_documents was not called while answering


def test_reader_without_stored_unit_vectors_embeds_them_and_answers_the_same(tmp_path):
    stored = assistant_with(tmp_path / "a", FakeEmbedder())
    plain_embedder = PlainEmbedder()
    plain = assistant_with(tmp_path / "b", plain_embedder)
    before = len(plain_embedder.embedded)
    a, b = stored.ask("蚜虫怎么办？"), plain.ask("蚜虫怎么办？")
    assert len(plain_embedder.embedded) > before  # the fallback embedded the passages' sentences now
    assert [(c.source, c.start, c.end) for c in a.citations] == [(c.source, c.start, c.end) for c in b.citations]
    assert a.text == b.text
    np.testing.assert_allclose([c.score for c in a.citations], [c.score for c in b.citations], atol=2e-3)
