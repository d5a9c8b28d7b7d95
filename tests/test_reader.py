"""Tests for the extractive reader's use of unit vectors: from the index when present, embedded otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from assistant.config import Settings
from assistant.pipeline import Assistant
from assistant.testing import FakeEmbedder, PlainEmbedder

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


def test_a_chinese_question_naming_something_no_document_contains_is_not_answered(tmp_path):
    assistant = assistant_with(tmp_path, FakeEmbedder())  # min_evidence -1: only the named term can stop it
    answer = assistant.ask("番茄在 Kubernetes 上怎么浇水？")
    assert answer.abstained and not answer.citations
    assert "Kubernetes" in answer.text and answer.related


@pytest.mark.parametrize("question", ["番茄需要多少 sunlight 和水？", "Cooking 的意大利面煮几分钟？",
                                      "how do I water tomatoes on Kubernetes"])
def test_named_terms_that_the_documents_contain_or_english_questions_do_not_abstain(tmp_path, question):
    # lower-case words are not names; "Cooking" is in cooking.md; English questions are not checked
    assistant = assistant_with(tmp_path, FakeEmbedder())
    assert not assistant.ask(question).abstained


def test_named_terms_and_plural_forms():
    from assistant.lexical import LexicalIndex
    from assistant.reader import named_terms

    question = "在 Kubernetes 集群上怎么跑 H100、LoRA 和 GPT-4o 的训练？再问一次 Kubernetes 的事"
    assert named_terms(question) == ["Kubernetes", "H100", "LoRA", "GPT-4o"]
    assert named_terms("What is an H100?") == [] and named_terms("用 python 写") == []
    lexical = LexicalIndex.build(["Our API is documented. 中文内容"])
    assert lexical.contains("APIs") and lexical.contains("API") and not lexical.contains("SDKs")


@pytest.mark.parametrize("question, fact", [
    ("华为的总部位于哪里？", True), ("PPO 训练 CartPole 的示例里一共训练了多少步？", True), ("2009年3月17日谁宣布解散政府？", True),
    ("《捉鬼男》是哪个国家的电视剧？", True), ("线性回归那道题用什么指标来评估模型？", True),
    ("How many timesteps is the agent trained for?", True), ("In the GAN example, which optimizer is used?", True),
    ("When was the company founded?", True), ("What loss function does the GAN example compile with?", True),
    ("What can be done to speed up training?", False), ("What challenges do LLM startups face?", False),
    ("GAN 的损失函数是什么？", True), ("细胞核内部的黏液被称为什么?", True),
    ("李白描写秦岭山路的作品是？", True), ("在南极洲可找到何种鸟类?", True),
    # explanation, list and advice questions
    ("初创公司缺少训练数据怎么办？", False), ("模型训练完以后上线太慢，有什么优化办法？", False), ("大模型创业接下来会往哪些方向发展？", False),
    ("为什么说现在做大模型创业的门槛比以前低了？", False), ("大模型创业的优势是什么？", False), ("What is a Transformer?", False),
    ("什么是注意力机制？", False),
    ("Where should a startup collect its training data from?", False), ("How can a startup help its customers?", False),
    # several questions at once
    ("BERT问答系统的示例加载的是哪个预训练模型？起止位置的输出用什么损失来训练？", False),
    ("深度强化学习智能体那道题用的是什么库、什么策略网络？", False), ("训练一个千亿参数的模型要多少张 H100、花多少钱？", False),
    ("Who founded OpenAI and in what year was it established?", False),
    ("Which algorithm is used, and for how many timesteps is the agent trained?", False),
    # a wh-word inside the sentence, not asking
    ("What hyperparameters are used when instantiating the classifier?", False),
])
def test_asks_for_fact_tells_short_fact_questions_from_explanations(question, fact):
    from assistant.language import asks_for_fact

    assert asks_for_fact(question) is fact


# -- each cited passage passes the decision; headings-only documents answer (issue 20, item 5) -----
HEADINGS = "# 大模型训练\n\n## 数据并行与模型并行\n\n## 混合精度训练\n"
UNRELATED = "番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。"


def _two_passages(first_dense: float, second_dense: float):
    from assistant.reader import Passages
    from assistant.types import Chunk, Hit

    embedder = FakeEmbedder()
    hits = [Hit(0, Chunk("plan.md", 0, len(HEADINGS), HEADINGS), first_dense, first_dense),
            Hit(1, Chunk("garden.txt", 0, len(UNRELATED), UNRELATED), second_dense, second_dense)]
    return embedder, Passages(question="大模型训练有哪些并行方式？", query_vector=embedder.embed_queries(["大模型训练有哪些并行方式？"])[0],
                              hits=hits, evidence=first_dense, lines=[1, 1], pages={})


def test_a_headings_only_passage_is_quoted_and_a_passage_below_the_threshold_is_never_cited():
    from assistant.reader import ExtractiveReader

    embedder, passages = _two_passages(0.62, 0.21)
    reading = ExtractiveReader(embedder, min_evidence=0.45).read(passages)
    assert not reading.abstained
    assert [c.source for c in reading.citations] == ["plan.md"]  # never the unrelated file at 0.21
    assert "数据并行与模型并行" in reading.text
    quote = reading.citations[0]
    assert HEADINGS[quote.start:quote.end] == quote.quote


def test_a_second_passage_that_passes_the_threshold_can_still_be_cited():
    from assistant.reader import ExtractiveReader

    embedder, passages = _two_passages(0.62, 0.61)
    reading = ExtractiveReader(embedder, min_evidence=0.45, second_margin=1.0).read(passages)
    assert {c.source for c in reading.citations} == {"plan.md", "garden.txt"}


@pytest.mark.parametrize("question, sources", [
    ("大模型训练有哪些并行方式？", ["a.md", "b.md"]),  # a list: the near second passage is quoted too
    ("大模型训练用的是哪种并行方式？", ["a.md"]),  # one short fact: one passage
])
def test_a_near_second_passage_is_quoted_for_explanations_and_lists_but_not_for_a_short_fact(question, sources):
    from assistant.reader import ExtractiveReader, Passages
    from assistant.types import Chunk, Hit

    embedder = FakeEmbedder()
    # The same text in both: their parts match the question equally, so the scores differ by 0.85 x 0.04
    # (the unit weight is 0.15): within the second margin (0.05), not within the short-fact one (0.02).
    hits = [Hit(0, Chunk("a.md", 0, len(HEADINGS), HEADINGS), 0.62, 0.62),
            Hit(1, Chunk("b.md", 0, len(HEADINGS), HEADINGS), 0.58, 0.58)]
    passages = Passages(question=question, query_vector=embedder.embed_queries([question])[0], hits=hits,
                        evidence=0.62, lines=[1, 1], pages={})
    reading = ExtractiveReader(embedder, min_evidence=0.45).read(passages)
    assert [c.source for c in reading.citations] == sources


@pytest.mark.e2e
@pytest.mark.parametrize("reader", ["extractive", "span"])
def test_real_model_quotes_an_outline_and_never_cites_an_unrelated_file(real_settings, real_assistant, tmp_path,
                                                                       reader):
    """Issue 20, item 5, with the real model and both readers: a headings-only document answers from
    its headings, and an unrelated document below the threshold is never cited."""
    from assistant.pipeline import Assistant

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "plan.md").write_text(HEADINGS, "utf-8")
    (corpus / "garden.txt").write_text(UNRELATED, "utf-8")
    settings = real_settings.with_(corpus=corpus, index=tmp_path / "index", reader=reader)
    assistant = Assistant(settings, embedder=real_assistant.embedder)
    assistant.build()
    answer = assistant.ask("大模型训练有哪些并行方式？")
    assert not answer.abstained, answer.text
    assert [c.source for c in answer.citations] == ["plan.md"] and "数据并行与模型并行" in answer.text
    assert HEADINGS[answer.citations[0].start:answer.citations[0].end] == answer.citations[0].quote
