"""Tests for assistant.generative: the grounding check with a fake LLM (fast), and the real GGUF (e2e)."""
from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import numpy as np
import pytest

import assistant.generative as generative
import assistant.pipeline as pipeline
from assistant.cli import main
from assistant.config import Settings
from assistant.errors import ConfigError, ModelError
from assistant.evaluation import load_questions
from assistant.generative import (UNSUPPORTED, GenerativeReader, LlamaModel, check_sentences, make_generative_reader,
                                  parse_markers, split_sentences)
from assistant.reader import Passages, Reading, is_chinese
from assistant.types import Chunk, Hit
from assistant.testing import FakeEmbedder

DOCUMENTS = {
    "garden.md": "# 园艺\n\n番茄需要充足的阳光和每天浇水。黄瓜喜欢温暖潮湿的环境。",
    "cooking.md": "# Cooking\n\nBoil the pasta in salted water for nine minutes. Drain it and add olive oil.",
    "network.md": "# Network\n\nRestart the router and wait two minutes. The Wi-Fi password is on the router label.",
}


class FakeLLM:
    """Streams a fixed reply in small pieces and records every prompt it was given."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[list[dict]] = []

    def chat(self, messages, max_tokens):
        self.prompts.append(messages)
        for i in range(0, len(self.reply), 7):
            yield self.reply[i:i + 7]


def make_passages(question: str, embedder: FakeEmbedder, evidence: float = 0.9) -> Passages:
    hits = []
    for i, (source, text) in enumerate(DOCUMENTS.items()):
        start = text.index("\n\n") + 2  # the chunk is the body after the heading, at its real offset
        hits.append(Hit(i, Chunk(source, start, len(text), text[start:], heading=text[2:start].strip()),
                        score=0.9 - i / 10, dense_score=0.9 - i / 10))
    vector = embedder.embed_queries([question])[0]
    return Passages(question, vector, hits, evidence, [3, 3, 3], {})


def reader_with(reply: str, embedder: FakeEmbedder, **kwargs) -> tuple[GenerativeReader, FakeLLM]:
    llm = FakeLLM(reply)
    return GenerativeReader(embedder, llm, min_evidence=0.45, min_support=0.8, **kwargs), llm


def assert_verbatim(reading: Reading) -> None:
    for c in [*reading.citations, *reading.related]:
        assert DOCUMENTS[c.source][c.start:c.end] == c.quote


# -- markers and sentences ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, clean, numbers", [
    ("Boil the pasta. [1]", "Boil the pasta.", (1,)),
    ("Boil the pasta [2][3].", "Boil the pasta.", (2, 3)),
    ("Boil the pasta [1, 3].", "Boil the pasta.", (1, 3)),
    ("番茄需要阳光【2】。", "番茄需要阳光。", (2,)),
    ("Boil it [^1] and [passage 2].", "Boil it and.", (1, 2)),
    ("No marker here; [a] is not one.", "No marker here; [a] is not one.", ()),
    (f"Unchecked claim {UNSUPPORTED}", "Unchecked claim", ()),
])
def test_parse_markers(text, clean, numbers):
    assert parse_markers(text) == (clean, numbers)


def test_split_sentences_keeps_markers_with_the_sentence_before():
    sentences = split_sentences("Boil the pasta. [1] Then drain it [2]. Version 3.5 is fine.\n[3]")
    assert [s.text for s in sentences] == ["Boil the pasta.", "Then drain it.", "Version 3.5 is fine."]
    assert [s.markers for s in sentences] == [(1,), (2,), (3,)]


def test_split_sentences_keeps_list_numbers_with_their_item():
    sentences = split_sentences("方法如下：\n1. **数据增强**：利用 GAN [1]。\n\n2. 云计算。")
    assert [s.text for s in sentences] == ["方法如下：", "1. **数据增强**：利用 GAN。", "2. 云计算。"]
    assert [s.lead for s in sentences] == ["", "\n", "\n\n"]


# -- the grounding check --------------------------------------------------------------------------------
def test_misnumbered_and_out_of_range_markers_are_tied_to_the_supporting_passage():
    embedder = FakeEmbedder(512)
    passages = make_passages("How long should pasta boil?", embedder)
    sentences = split_sentences("Boil the pasta in salted water for nine minutes. [1] "
                                "Restart the router and wait two minutes. [7]")
    checked = check_sentences(sentences, passages, 3, embedder, min_support=0.8)
    assert [c.passage for c in checked] == [1, 2]  # cooking.md and network.md, whatever the markers said
    assert all(c.score >= 0.8 for c in checked)


def test_a_valid_marker_wins_over_a_slightly_better_passage():
    embedder = FakeEmbedder(512)
    passages = make_passages("pasta", embedder)
    sentence = split_sentences("Drain it and add olive oil [2].")
    checked = check_sentences(sentence, passages, 3, embedder, min_support=0.3)
    assert checked[0].passage == 1  # its own [2] (rank 1) supports it, so it keeps it


class AxisEmbedder:
    """Each known text is a unit vector on its own axis; a claim leans on one text's axis by a set cosine."""

    def __init__(self, claims: dict[str, tuple[str, float]]) -> None:
        self.claims = claims
        self.axes: dict[str, int] = {}

    def _axis(self, text: str) -> np.ndarray:
        v = np.zeros(64, dtype=np.float32)
        v[self.axes.setdefault(text, len(self.axes))] = 1.0
        return v

    def embed_documents(self, texts, titles=None):
        rows = []
        for text in texts:
            if text in self.claims:
                target, cosine = self.claims[text]
                rows.append(cosine * self._axis(target) + np.sqrt(1 - cosine ** 2) * self._axis(text))
            else:
                rows.append(self._axis(text))
        return np.stack(rows)

    def embed_queries(self, texts):
        return self.embed_documents(texts)


def test_sentences_in_another_script_than_the_passage_have_their_own_threshold():
    embedder = AxisEmbedder({"Tomatoes need plenty of sun.": ("番茄需要充足的阳光和每天浇水。", 0.62),
                             "Pasta takes nine minutes.": ("Boil the pasta in salted water for nine minutes.", 0.62)})
    passages = make_passages("question", embedder)
    sentences = split_sentences("Tomatoes need plenty of sun. Pasta takes nine minutes.")
    checked = check_sentences(sentences, passages, 3, embedder, min_support=0.68, min_support_cross=0.58)
    assert [c.passage for c in checked] == [0, None]  # English claim on a Chinese passage passes at 0.62
    assert [round(c.score, 2) for c in checked] == [0.62, 0.62]


def test_supported_sentences_are_cited_verbatim_and_unsupported_ones_marked():
    embedder = FakeEmbedder(512)
    reply = ("Boil the pasta in salted water for nine minutes [1]. "
             "Quantum chromodynamics explains the strong force [1]. "
             "The Wi-Fi password is on the router label.")
    reader, _ = reader_with(reply, embedder)
    reading = reader.read(make_passages("How do I cook pasta?", embedder))
    assert not reading.abstained
    assert [c.source for c in reading.citations] == ["cooking.md", "network.md"]
    assert reading.text == ("Boil the pasta in salted water for nine minutes. [1] "
                            f"Quantum chromodynamics explains the strong force. {UNSUPPORTED} "
                            "The Wi-Fi password is on the router label. [2]")
    assert_verbatim(reading)
    assert reading.citations[0].quote == "Boil the pasta in salted water for nine minutes."


def test_no_unsupported_sentence_carries_a_citation_number():
    embedder = FakeEmbedder(512)
    reply = "Tomatoes grow on Mars [1]. 黄瓜喜欢温暖潮湿的环境 [1]。 Bananas are blue [2][3]."
    reader, _ = reader_with(reply, embedder)
    reading = reader.read(make_passages("黄瓜喜欢什么环境？", embedder))
    for sentence in split_sentences(reading.text):
        supported = bool(sentence.markers)
        assert supported == ("黄瓜" in sentence.text), sentence
    assert [c.source for c in reading.citations] == ["garden.md"]
    assert_verbatim(reading)


def test_nothing_supported_means_abstaining_with_related_reading():
    embedder = FakeEmbedder(512)
    reader, llm = reader_with("Quantum chromodynamics explains the strong force [1].", embedder)
    reading = reader.read(make_passages("What is QCD?", embedder))
    assert llm.prompts, "the model was asked"
    assert reading.abstained and reading.citations == ()
    assert "do not cover" in reading.text
    assert reading.related
    assert_verbatim(reading)


def test_weak_evidence_abstains_before_generating():
    embedder = FakeEmbedder(512)
    reader, llm = reader_with("Boil the pasta [1].", embedder)
    response = reader.stream(make_passages("火星上有火山吗？", embedder, evidence=0.2))
    items = [*response, response.answer()]
    assert llm.prompts == []
    assert len(items) == 1 and items[0].abstained
    assert "文档中没有涉及" in items[0].text
    assert items[0].related


def test_stream_yields_the_draft_then_the_checked_reading():
    embedder = FakeEmbedder(512)
    reply = "Boil the pasta in salted water for nine minutes [1]."
    reader, _ = reader_with(reply, embedder)
    response = reader.stream(make_passages("pasta?", embedder))
    items = [*response, response.answer()]
    assert "".join(i for i in items if isinstance(i, str)) == reply
    assert isinstance(items[-1], Reading) and items[-1].citations


# -- the prompt -----------------------------------------------------------------------------------------
def test_prompt_numbers_clipped_passages_and_asks_for_the_question_language():
    embedder = FakeEmbedder(512)
    reader, llm = reader_with("Boil the pasta [1].", embedder, passages=2, passage_chars=30)
    reader.read(make_passages("How long does pasta boil?", embedder))
    system, user = llm.prompts[0]
    assert system["role"] == "system" and "only" in system["content"] and "[1]" in system["content"]
    text = user["content"]
    assert "[1] (garden.md)" in text and "[2] (cooking.md)" in text and "[3]" not in text
    assert "Boil the pasta in salted water for nine minutes." not in text  # clipped to 30 characters
    assert text.rstrip().endswith("translate what you use).")
    reader.read(make_passages("番茄需要什么？", embedder))
    assert llm.prompts[1][1]["content"].rstrip().endswith("请用中文回答。")


# -- settings and the missing extra ---------------------------------------------------------------------
def test_reader_setting_is_validated():
    assert Settings.from_env({"ASSISTANT_READER": "llm"}).reader == "llm"
    with pytest.raises(ConfigError, match="ASSISTANT_READER"):
        Settings.from_env({"ASSISTANT_READER": "gpt"})


def test_missing_llama_cpp_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(generative, "llama_available", lambda: False)
    with pytest.raises(ModelError, match=r"make install-llm.*\.\[llm\]"):
        make_generative_reader(Settings(home=tmp_path), FakeEmbedder())


def test_missing_llama_cpp_at_load_is_one_clear_error(monkeypatch, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(ModelError, match="make install-llm") as info:
        LlamaModel(gguf, 1).load()
    assert "\n" not in str(info.value)


def test_missing_model_says_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setattr(generative, "llama_available", lambda: True)
    with pytest.raises(ModelError, match="models-llm"):
        make_generative_reader(Settings(home=tmp_path), FakeEmbedder())
    with pytest.raises(ConfigError, match="not a .gguf file"):
        make_generative_reader(Settings(home=tmp_path, llm_model=str(tmp_path / "nope.gguf")), FakeEmbedder())


def test_cli_reader_llm_without_the_extra_fails_with_one_line(monkeypatch, tmp_path, capsys):
    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: FakeEmbedder())
    monkeypatch.setattr(generative, "llama_available", lambda: False)
    code = main(["ask", "--reader", "llm", "--index", str(tmp_path / "index"), "pasta?"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "make install-llm" in err


def test_pipeline_streams_through_a_generative_reader(monkeypatch, tmp_path):
    from assistant.pipeline import Assistant

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for source, text in DOCUMENTS.items():
        (corpus / source).write_text(text, "utf-8")
    embedder = FakeEmbedder(512)
    settings = Settings(home=tmp_path, corpus=corpus, index=tmp_path / "index", min_evidence=0.1)
    assistant = Assistant(settings, embedder=embedder)
    assistant.build()
    reader = GenerativeReader(embedder, FakeLLM("Boil the pasta in salted water for nine minutes [1]."),
                              min_evidence=0.1, min_support=0.8)
    response = assistant.ask_stream("How long do I boil pasta in salted water?", reader=reader)
    items = [*response, response.answer()]
    answer = items[-1]
    assert all(isinstance(i, str) for i in items[:-1]) and len(items) > 2
    assert not answer.abstained and answer.citations[0].source == "cooking.md"
    assert answer.timings_ms["first_text"] <= answer.timings_ms["total"]
    assert assistant.ask("How long do I boil pasta?").citations, "the default reader still answers"


# -- end to end: the real GGUF on the real corpus -----------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
E2E = ["q001", "q008", "q024",  # Chinese
       "q021", "q061", "q072",  # English questions about the Chinese documents
       "q005", "q020"]  # not covered


@pytest.fixture(scope="module")
def llm_reader(real_assistant):
    return real_assistant.reader_named("llm")


@pytest.mark.e2e
@pytest.mark.parametrize("qid", E2E)
def test_real_llm_answers_in_the_question_language_with_checked_citations(real_assistant, llm_reader, qid):
    q = {q.id: q for q in load_questions(ROOT / "tests" / "data" / "eval.jsonl")}[qid]
    answer = real_assistant.ask(q.question, reader=llm_reader)
    if not q.answerable:
        assert answer.abstained and answer.citations == ()
        return
    assert not answer.abstained, answer.text
    assert answer.citations
    assert set(q.sources) & {c.source for c in answer.citations}, answer.to_dict()
    for c in answer.citations:
        assert (ROOT / "corpus" / c.source).read_text("utf-8")[c.start:c.end] == c.quote
    numbers = {c.n for c in answer.citations}
    for sentence in split_sentences(answer.text):
        assert set(sentence.markers) <= numbers  # a number only where the check found support
    supported = " ".join(s.text for s in split_sentences(answer.text) if s.markers)
    assert is_chinese(supported) == (q.lang == "zh"), answer.text


@pytest.mark.e2e
def test_real_llm_streams_on_the_command_line(real_index, capsys):
    code = main(["ask", "--reader", "llm", "--index", str(real_index),
                 "What should a startup do when it does not have enough training data?"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Checked against the documents" in out and "Sources:" in out
    draft = out.split("Checked against the documents")[0]
    assert len(draft.strip()) > 40 and not is_chinese(draft.split("\n", 2)[-1])


# -- the chat page ------------------------------------------------------------------------------------
class SlowLoadingReader(GenerativeReader):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.is_loaded = False

    @property
    def loaded(self) -> bool:
        return self.is_loaded

    def load(self) -> None:
        self.is_loaded = True


@pytest.fixture
def page_assistant(tmp_path):
    from assistant.pipeline import Assistant

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for source, text in DOCUMENTS.items():
        (corpus / source).write_text(text, "utf-8")
    embedder = FakeEmbedder(512)
    assistant = Assistant(Settings(home=tmp_path, corpus=corpus, index=tmp_path / "index", min_evidence=0.1),
                          embedder=embedder)
    assistant.build()
    return assistant


def test_page_answers_with_the_extractive_reader_while_the_llm_loads(page_assistant, monkeypatch):
    from assistant.ui import LOADING, ChatHandlers

    llm = SlowLoadingReader(page_assistant.embedder, FakeLLM("Boil the pasta in salted water for nine minutes [1]."),
                            min_evidence=0.1, min_support=0.8)
    monkeypatch.setitem(page_assistant._readers, "llm", llm)
    handlers = ChatHandlers(page_assistant, stream_delay=0)
    *_, (first, _) = handlers.respond("How long do I boil pasta in salted water?", [], "llm")
    assert html_unescape(LOADING) in html_unescape(first[-1]["content"])
    handlers.readers._loading.join(5)
    outputs = list(handlers.respond("How long do I boil pasta in salted water?", [], "llm"))
    drafts = [m[-1]["content"] for m, _ in outputs[1:-1]]
    assert drafts and all('class="draft"' in d and 'class="cite"' not in d for d in drafts)
    final = outputs[-1][0][-1]["content"]
    assert '<span class="cite">[1]</span>' in final and "cooking.md" in final and "still loading" not in final


def test_page_says_why_the_llm_cannot_answer(page_assistant, monkeypatch):
    from assistant.ui import ChatHandlers

    monkeypatch.setattr(generative, "llama_available", lambda: False)
    handlers = ChatHandlers(page_assistant, stream_delay=0)
    *_, (messages, _) = handlers.respond("How long do I boil pasta?", [], "llm")
    content = messages[-1]["content"]
    assert "make install-llm" in content and "extractive reader quoted this answer" in content
    assert 'class="cite"' in content  # still answered, by the extractive reader


def test_unsupported_sentences_are_shown_as_not_in_the_documents():
    from assistant.render import checked_markdown

    shown = checked_markdown(f"Boil it. [1] Mars is red. {UNSUPPORTED}", {1})
    assert '<span class="cite">[1]</span>' in shown
    assert 'class="unsupported"' in shown and "not in the documents" in shown and "[?]" not in shown
    assert shown.count('class="cite"') == 1


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


@pytest.fixture
def cli_with_fake_llm(monkeypatch, tmp_path):
    """The CLI over a small corpus, with the fake embedder and a fake LLM behind --reader llm."""
    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ASSISTANT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSISTANT_MIN_EVIDENCE", "0.1")
    embedder = FakeEmbedder(512)
    monkeypatch.setattr(pipeline, "make_embedder", lambda settings, show_progress=False: embedder)
    reply = "Boil the pasta in salted water for nine minutes [1]. Quantum chromodynamics explains the strong force."
    monkeypatch.setattr(generative, "make_generative_reader", lambda settings, embedder, gate=None: GenerativeReader(
        embedder, FakeLLM(reply), settings.min_evidence, min_support=0.8))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for source, text in DOCUMENTS.items():
        (corpus / source).write_text(text, "utf-8")
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(tmp_path / "index")]) == 0
    return tmp_path


def test_cli_streams_the_draft_then_prints_the_checked_answer(cli_with_fake_llm, capsys):
    capsys.readouterr()
    code = main(["ask", "--reader", "llm", "--index", str(cli_with_fake_llm / "index"), "How long does pasta boil?"])
    out = capsys.readouterr().out
    assert code == 0
    draft, checked = out.split("Checked against the documents")
    assert "Boil the pasta in salted water for nine minutes [1]. Quantum chromodynamics explains the strong force." in draft
    assert "Boil the pasta in salted water for nine minutes. [1] Quantum chromodynamics explains the strong force. [?]" in checked
    assert "[1] cooking.md" in checked and "[2]" not in checked


def test_cli_eval_with_the_llm_reader(cli_with_fake_llm, tmp_path, capsys):
    questions = tmp_path / "eval.jsonl"
    questions.write_text(json.dumps({"id": "p1", "question": "How long does pasta boil in salted water?",
                                     "sources": ["cooking.md"], "keys": ["nine minutes"]}) + "\n", "utf-8")
    capsys.readouterr()
    code = main(["eval", "--reader", "llm", "--json", "--corpus", str(tmp_path / "corpus"),
                 "--index", str(tmp_path / "index"), str(questions)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["metrics"]["hit@1"] == 1.0 and report["metrics"]["citation_validity"] == 1.0
    assert report["metrics"]["key_recall"] == 1.0


class FixedGate:
    """A stand-in for span_reader.Answerability with a fixed decision."""

    def __init__(self, answerable: bool) -> None:
        self.answerable = answerable
        self.asked = 0

    def decide(self, passages):
        from assistant.span_reader import Decision

        self.asked += 1
        return Decision(self.answerable)


@pytest.mark.parametrize("answerable, evidence", [(False, 0.9), (True, 0.40)])
def test_the_reader_models_decision_gates_generation(answerable, evidence):
    """With the reader model's gate, its decision (not the cosine threshold) says whether to generate."""
    embedder = FakeEmbedder(512)
    gate = FixedGate(answerable)
    reader, llm = reader_with("Boil the pasta in salted water for nine minutes. [1]", embedder, gate=gate)
    reading = reader.read(make_passages("How long should pasta boil?", embedder, evidence=evidence))
    assert gate.asked == 1
    assert reading.abstained != answerable and bool(llm.prompts) == answerable
    if answerable:
        assert reading.citations and reading.citations[0].source == "cooking.md"
        assert_verbatim(reading)
