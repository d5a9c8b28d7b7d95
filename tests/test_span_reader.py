"""The span reader: answer metrics, its decisions (with a stand-in model), and the real trained model."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assistant import models
from assistant.errors import ModelError
from assistant.evaluation import answer_scores, roc_auc
from assistant.reader import ExtractiveReader, Passages
from assistant.span_model import SpanScore, best_span
from assistant.span_reader import SpanReader
from assistant.types import Chunk, Hit
from assistant.testing import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent


# -- metrics ---------------------------------------------------------------------------------------
def test_answer_scores_follow_cmrc_mixed_segmentation():
    assert answer_scores("光荣和ω-force", ["光荣和ω-force"]) == (1.0, 1.0)
    assert answer_scores("《光荣和ω-force》。", ["光荣和ω-force"]) == (1.0, 1.0)  # punctuation is dropped
    em, f1 = answer_scores("由光荣公司", ["光荣和ω-force", "光荣"])
    assert em == 0.0 and f1 == pytest.approx(2 * (2 / 5) / (2 / 5 + 1))  # best gold: 光荣 (2 of 5 characters)
    assert answer_scores("in the late 1990s", ["late 1990s"])[1] == pytest.approx(2 / 3)  # words count whole
    assert answer_scores("", ["x"]) == (0.0, 0.0)


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0, 1], [1, 0]) == 0.0
    assert roc_auc([1, 1], [1, 0]) == 0.5
    assert np.isnan(roc_auc([1, 2], [1, 1]))


def test_best_span_respects_order_and_length():
    start = np.array([9.0, 0, 5, 0, 0])
    end = np.array([9.0, 4, 0, 0, 3])
    assert best_span(start, end, 1, 4) == (1, 3, 8.0)  # (2, 4) within the passage tokens 1..4; never before
    assert best_span(start, end, 1, 4, max_answer=1)[:2] == (1, 1)


# -- decisions, with the model replaced by fixed scores --------------------------------------------
TEXT = "公司成立于1987年。总部位于深圳市龙岗区，员工约二十万人。"


def _passages(question="介绍一下总部。", missing=(), evidence=0.6):
    chunk = Chunk("a.txt", 100, 100 + len(TEXT), TEXT)
    other = Chunk("b.txt", 0, 10, "无关的内容，没有答案。")
    hits = [Hit(0, other, 1.0, 0.6), Hit(1, chunk, 0.9, 0.5)]
    return Passages(question, np.ones(64, np.float32) / 8, hits, evidence, [3, 7], {}, None, missing)


class FixedReader(SpanReader):
    """The span reader with the model's scores fixed; records how many passages it was asked to read."""

    def __init__(self, scores, threshold=0.0, **options):
        super().__init__(FakeEmbedder(), Path("unused"), threshold=threshold, **options)
        self.read_counts = []
        self.gate._loaded = (None, None, threshold)

        def score(passages, count, first=0):
            self.read_counts.append(count - first)
            return scores[first:min(count, len(passages.hits))]
        self.gate.score = score


SPAN = TEXT.index("深圳市龙岗区")
CONFIDENT = [SpanScore(0, 2, 1.0, 3.0, 0.1), SpanScore(SPAN, SPAN + 6, 9.0, 1.0, 0.9)]  # margins -2, 8


def test_span_reader_leads_with_the_exact_span_and_cites_it_verbatim():
    reader = FixedReader(CONFIDENT, rerank=True)
    reading = reader.read(_passages())
    assert not reading.abstained
    assert reading.span is not None and reading.span.quote == "深圳市龙岗区"
    assert (reading.span.source, reading.span.start) == ("a.txt", 100 + SPAN)
    assert reading.text.startswith("**深圳市龙岗区** [1]")
    first = reading.citations[0]
    assert first.source == "a.txt"  # reranked: the passage that answers, not the top retrieval hit
    assert first.start <= reading.span.start and reading.span.end <= first.end
    assert TEXT[first.start - 100:first.end - 100] == first.quote


def test_strong_evidence_answers_from_the_top_passage_whatever_the_margin():
    """Explanation questions have no short span: a low margin never refuses them (no rerank: one read)."""
    reader = FixedReader([SpanScore(0, 2, -9.0, 3.0, 0.01)], threshold=1.0)
    reading = reader.read(_passages())
    assert not reading.abstained and reading.span is None and reading.citations[0].source == "b.txt"
    assert reader.read_counts == [1]


def test_span_reader_gives_the_passage_alone_when_no_short_span_is_confident():
    reader = FixedReader([SpanScore(0, 2, 1.0, 3.0, 0.1), SpanScore(0, len(TEXT), 9.0, 1.0, 0.15)], rerank=True)
    reading = reader.read(_passages())
    assert not reading.abstained and reading.span is None and reading.citations[0].source == "a.txt"


def test_a_span_in_the_top_passage_leads_the_default_readers_quotes():
    """No rerank, strong evidence: the passages are quoted as by the default reader, the span first; its
    passage is added first when the default reader did not quote it (here its fake vectors prefer b.txt)."""
    passages = _passages()
    passages = replace(passages, hits=passages.hits[::-1])  # a.txt is the top hit
    reader = FixedReader(CONFIDENT[1:], threshold=1.0)
    reading = reader.read(passages)
    default = ExtractiveReader(FakeEmbedder(), min_evidence=-1.0).read(passages)
    n = next(c.n for c in reading.citations if c.source == "a.txt")
    assert reading.text.startswith(f"**深圳市龙岗区** [{n}]") and reading.span.n == n
    assert [c.source for c in default.citations] == ["b.txt"]
    assert [c.source for c in reading.citations] == ["a.txt", "b.txt"] and [c.n for c in reading.citations] == [1, 2]
    own = reading.citations[n - 1]
    assert own.start <= reading.span.start and reading.span.end <= own.end
    assert TEXT[own.start - 100:own.end - 100] == own.quote
    assert reader.read_counts == [1]


@pytest.mark.parametrize("question, shown", [("深圳的总部在哪里？", True), ("总部是怎么选址的？", False)])
def test_a_short_fact_question_has_its_span_shown_from_a_lower_probability(question, shown):
    """Probability 0.1: under span_prob (0.2) but over fact_span_prob (0.05): only the question that asks
    for one short fact ("哪里") leads with the span; the explanation question gets the passage alone."""
    reader = FixedReader([SpanScore(SPAN, SPAN + 6, 9.0, 1.0, 0.1)], span_prob=0.2, fact_span_prob=0.05)
    passages = _passages(question)
    reading = reader.read(replace(passages, hits=passages.hits[::-1]))
    assert not reading.abstained
    assert (reading.span is not None) is shown
    if shown:
        assert reading.span.quote == "深圳市龙岗区"


@pytest.mark.parametrize("question, reads, shown", [("深圳的总部在哪里？", [1, 2], True), ("总部是怎么选址的？", [1], False)])
def test_a_short_fact_question_reads_on_when_the_top_passage_holds_no_confident_span(question, reads, shown):
    """Strong evidence, the top passage (b.txt) without a confident span: a short-fact question has the next
    passage read too, and leads with its span, quoting that passage; an explanation question does not."""
    reader = FixedReader([SpanScore(0, 2, 1.0, 3.0, 0.01), SpanScore(SPAN, SPAN + 6, 9.0, 1.0, 0.6)], threshold=1.0)
    reading = reader.read(_passages(question))
    assert reader.read_counts == reads
    assert not reading.abstained and (reading.span is not None) is shown
    if shown:
        assert reading.span.quote == "深圳市龙岗区" and [c.source for c in reading.citations] == ["a.txt"]
    else:
        assert reading.citations[0].source == "b.txt"


def test_fact_span_prob_defaults_to_span_prob_when_unset_and_is_checked():
    assert FixedReader(CONFIDENT, span_prob=0.3, fact_span_prob=None).fact_span_prob == 0.3
    with pytest.raises(ValueError, match="fact_span_prob"):
        FixedReader(CONFIDENT, fact_span_prob=1.5)


@pytest.mark.parametrize("threshold, answers", [(5.0, True), (9.0, False)])
def test_weak_evidence_is_decided_by_the_model(threshold, answers):
    """Between the floor and the cosine threshold, the model's margin decides, over the top passages."""
    reader = FixedReader(CONFIDENT, threshold=threshold)
    reading = reader.read(_passages(evidence=0.40))
    assert reader.read_counts == [3]
    assert reading.abstained != answers
    if answers:
        assert reading.citations[0].source == "a.txt" and reading.span.quote == "深圳市龙岗区"
    else:
        assert reading.citations == () and reading.related and reading.span is None


@pytest.mark.parametrize("question, evidence, margins, answers, reads", [
    ("总部在哪里？", 0.25, (5.0, -9.0, -5.0), True, [3]),  # a Chinese short fact: its lower floor, its higher threshold
    ("总部在哪里？", 0.25, (3.0, -9.0, -5.0), False, [3]),  # over the trained threshold, under ZH_THRESHOLD
    ("总部在哪里？", 0.15, (9.0, 9.0, 9.0), False, []),  # under ZH_FLOOR: decided without the model
    ("介绍一下总部。", 0.25, (9.0, 9.0, 9.0), False, []),  # an explanation keeps the floor
    ("介绍一下总部。", 0.40, (3.0, -9.0, -5.0), True, [3]),  # and the trained threshold
    ("Where is the headquarters?", 0.25, (9.0, 9.0, 9.0), False, []),  # so does an English question
    ("Where is the headquarters?", 0.40, (3.0, -9.0, -5.0), True, [3]),
])
def test_a_chinese_short_fact_question_has_its_own_floor_and_threshold(question, evidence, margins, answers, reads):
    """span_reader.ZH_FLOOR and ZH_THRESHOLD, calibrated on held-out Chinese short-fact pairs; other questions keep
    the floor and the trained threshold. The span is still shown from the trained threshold."""
    from assistant.span_reader import DEFAULT_MODEL_FLOOR, ZH_FLOOR, ZH_THRESHOLD, zh_fact

    assert ZH_FLOOR < 0.25 < DEFAULT_MODEL_FLOOR and 3.0 < ZH_THRESHOLD < 5.0
    assert zh_fact("总部在哪里？", TEXT) and not zh_fact("总部在哪里？", "The headquarters is in Shenzhen.")
    reader = FixedReader([SpanScore(0, 2, m, 0.0, 0.01) for m in margins], threshold=1.0)
    reading = reader.read(_passages(question, evidence=evidence))
    assert reading.abstained is not answers
    assert reader.read_counts == reads
    if answers:
        assert reading.citations[0].source == "b.txt" and reading.span is None  # prob 0.01: no span shown


@pytest.mark.parametrize("missing, evidence", [((), 0.30), (("Kubernetes",), 0.6)])
def test_span_reader_abstains_below_the_floor_or_on_a_missing_name(missing, evidence):
    reader = FixedReader(CONFIDENT)
    reading = reader.read(_passages(missing=missing, evidence=evidence))
    assert reading.abstained and reading.citations == () and reading.related and reading.span is None
    assert ("Kubernetes" in reading.text) == bool(missing)
    assert reader.read_counts == []  # decided without the model


def test_committed_weights_are_verified(tmp_path, monkeypatch):
    assert models.resolve_reader_weights("") == models.READER_WEIGHTS  # the committed file matches its sha256
    damaged = tmp_path / "reader.safetensors"
    shutil.copyfile(models.READER_WEIGHTS, damaged)
    with open(damaged, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    monkeypatch.setattr(models, "READER_WEIGHTS", damaged)
    with pytest.raises(ModelError, match="damaged"):
        models.resolve_reader_weights("")
    with pytest.raises(ModelError, match="not a .safetensors file"):
        models.resolve_reader_weights(str(tmp_path / "missing.bin"))


def test_answer_json_carries_the_span():
    from assistant.types import Answer, Citation

    span = Citation(1, "a.txt", 5, 11, "深圳市龙岗区", 0.91234, 2)
    data = Answer("q", "**深圳市龙岗区** [1]", False, (span,), span=span).to_dict()
    assert data["answer_span"] == {"source": "a.txt", "start": 5, "end": 11, "text": "深圳市龙岗区", "score": 0.9123}
    assert Answer("q", "x", True).to_dict()["answer_span"] is None


# -- the real model ---------------------------------------------------------------------------------
SEEDED = ("华为技术有限公司成立于1987年，总部位于广东省深圳市龙岗区坂田华为基地。公司创始人是任正非，"
          "主要业务包括通信设备、智能手机和云计算服务。")
NEGATIVE = ("阿里巴巴集团于1999年在浙江省杭州市创立，创始人是马云等十八人。集团业务涵盖电子商务、"
            "金融科技和云计算，旗下有淘宝、天猫等平台。")


@pytest.fixture(scope="module")
def real_embedder(real_settings):
    from assistant.pipeline import make_embedder

    return make_embedder(real_settings)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def real_reader(real_settings, real_embedder, request):
    """The reader model in each runtime; "onnx" is the default's (`make test` fetches, and so exports, it)."""
    reader = SpanReader(real_embedder, models.resolve_reader_weights(""), runtime=request.param,
                        home=real_settings.home)
    reader.load()
    return reader


@pytest.mark.e2e
@pytest.mark.parametrize("question, gold", [("华为的总部位于哪里？", "深圳市龙岗区"),
                                            ("Who founded Huawei?", "任正非")])
def test_real_model_finds_the_span_and_refuses_a_hard_negative(real_reader, question, gold):
    from assistant.onnx_reader import OnnxSpanModel
    from assistant.span_model import score_windows
    from assistant.span_reader import ZH_THRESHOLD, zh_fact

    model, tokenizer, threshold = real_reader.gate.model()
    assert isinstance(model, OnnxSpanModel) == (real_reader.gate.runtime == "onnx")
    own, other = score_windows(model, tokenizer, question, [SEEDED, NEGATIVE])
    assert gold in SEEDED[own.start:own.end] and own.end - own.start <= 20  # a short span, not the passage
    assert own.margin >= threshold > other.margin
    if zh_fact(question, SEEDED):  # a Chinese short fact is decided at its own threshold below the cosine threshold
        assert own.margin >= ZH_THRESHOLD > other.margin


@pytest.mark.e2e
def test_onnx_runtime_scores_as_torch_with_the_real_model(real_settings, real_embedder):
    """The default runtime's export gives torch's spans and margins on real passages (the corpus's too)."""
    from assistant.span_model import score_windows
    from assistant.span_reader import load_reader_model

    weights = models.resolve_reader_weights("")
    torch_model, tokenizer, _ = load_reader_model(real_embedder, weights, runtime="torch")
    onnx_model, _, _ = load_reader_model(real_embedder, weights, runtime="onnx", home=real_settings.home)
    text = sorted((ROOT / "corpus").glob("*.txt"))[0].read_text("utf-8")
    passages = [SEEDED, NEGATIVE, text[:360], text[360:1500]]  # the last one longer than a window
    for question in ("华为的总部位于哪里？", "Who founded Huawei?", "初创公司缺少训练数据怎么办？"):
        want = score_windows(torch_model, tokenizer, question, passages)
        got = score_windows(onnx_model, tokenizer, question, passages)
        assert [(g.start, g.end) for g in got] == [(w.start, w.end) for w in want]
        assert np.allclose([g.margin for g in got], [w.margin for w in want], atol=1e-3)


@pytest.mark.parametrize("margins, abstains", [((-6.0, -5.0), True), ((-6.0, -3.0), False)])
def test_a_name_no_document_contains_refuses_when_no_passage_reaches_the_term_margin(margins, abstains):
    """An English question's upper-case name that no document contains (Passages.unknown_terms): at strong
    evidence the model reads the top passages, and only when none reaches TERM_MARGIN (-4) is it refused,
    naming the name; a passage that reaches it keeps the question answered from the top passage."""
    scores = [SpanScore(0, 2, m, 0.0, 0.01) for m in margins]
    reader = FixedReader(scores, threshold=1.0)
    passages = replace(_passages("What BLEU score does it reach?"), unknown_terms=("BLEU",))
    reading = reader.read(passages)
    assert reader.read_counts == [1, 2]  # the top passage first; under the margin, the next two
    assert reading.abstained is abstains
    if abstains:
        assert reading.citations == () and reading.related and "never mention BLEU" in reading.text
    else:
        assert reading.citations[0].source == "b.txt" and "BLEU" not in reading.text


@pytest.mark.parametrize("question, margins, abstains, reads", [
    ("总部在哪里？", (-6.0, -9.0, -5.0), True, [1, 2]),  # a Chinese short fact, no passage near the margin
    ("总部在哪里？", (-2.0, -9.0, -5.0), False, [1]),  # the top passage reaches it: nothing more is read to decide
    ("总部是怎么选址的？", (-6.0, -9.0, -5.0), False, [1]),  # an explanation: the margin does not decide
])
def test_a_chinese_short_fact_question_is_refused_when_no_top_passage_reaches_the_term_margin(question, margins,
                                                                                             abstains, reads):
    reader = FixedReader([SpanScore(0, 2, m, 0.0, 0.01) for m in margins], threshold=1.0)
    reading = reader.read(_passages(question))
    assert reading.abstained is abstains
    assert reader.read_counts[:len(reads)] == reads
    if abstains:
        assert reading.citations == () and reading.text.startswith("文档中没有涉及这个问题")


def test_a_name_no_document_contains_does_not_refuse_when_the_nearest_passage_is_code():
    """The model scores code low whether or not it answers: a nearest passage of code keeps the question."""
    code = "```python\nmodel.add(Conv2D(32, (3, 3), activation='relu'))\nmodel.add(MaxPooling2D((2, 2)))\n```"
    reader = FixedReader([SpanScore(0, 2, -9.0, 0.0, 0.01)] * 3, threshold=1.0)
    passages = _passages("What CNN architecture is used?")
    hits = [replace(passages.hits[0], chunk=Chunk("c.md", 0, len(code), code)), *passages.hits[1:]]
    reading = reader.read(replace(passages, hits=hits, unknown_terms=("CNN",)))
    assert not reading.abstained and reading.citations[0].source == "c.md"


def test_a_name_no_document_contains_does_not_refuse_an_explanation_question():
    """The margin is not calibrated for explanations (their answers have no short span): the name alone
    does not make the model decide; the top passage answers, read once for its span."""
    reader = FixedReader([SpanScore(0, 2, -9.0, 0.0, 0.01)] * 3, threshold=1.0)
    passages = replace(_passages("How is BLEU used to evaluate a translation model?"), unknown_terms=("BLEU",))
    reading = reader.read(passages)
    assert not reading.abstained and reading.citations[0].source == "b.txt"
    assert reader.read_counts == [1]


@pytest.mark.parametrize("question, names", [
    ("What BLEU score does the Transformer translation model reach?", ["BLEU"]),
    ("How many H100 GPUs, and is RLHF or RAG used? RAG again", ["H100", "RLHF", "RAG"]),
    ("Whom did King Moctezuma II mistake for the Feathered Serpent?", []),  # a Roman numeral
    ("What does the Transformer do?", []),  # capitalised, not upper-case
    ("What is MAX_LEN set to, and is max_Len or GPT-4 used?", ["MAX_LEN", "GPT-4"]),  # one name, as BM25 has it
    ("BLEU 分数是多少？", []),  # Chinese questions: named_terms refuses those outright
])
def test_acronyms_are_the_upper_case_names_of_a_non_chinese_question(question, names):
    from assistant.language import acronyms

    assert acronyms(question) == names


@pytest.mark.e2e
@pytest.mark.parametrize("question, quote, around", [
    ("Transformer 文本分类示例里 d_model 设为多少？", "512", "d_model=512"),
    # issue 19's example: the top passage explains the PPO example, the number of steps is in the code read next
    ("PPO 训练 CartPole 的示例里一共训练了多少步？", "10000", "total_timesteps=10000"),
])
def test_real_assistant_answers_with_a_span_on_the_corpus(real_assistant, question, quote, around):
    answer = real_assistant.ask(question, reader=real_assistant.reader_named("span"))
    assert not answer.abstained
    assert answer.span is not None and answer.span.quote == quote, answer.text
    text = (ROOT / "corpus" / answer.span.source).read_text("utf-8")
    assert text[answer.span.start:answer.span.end] == answer.span.quote
    assert around in text[answer.span.start - 20:answer.span.end]
    first = answer.citations[0]
    assert first.source == answer.span.source and first.start <= answer.span.start < answer.span.end <= first.end
    assert json.loads(json.dumps(answer.to_dict()))["answer_span"]["text"] == answer.span.quote


@pytest.mark.e2e
def test_real_assistant_refuses_an_english_question_on_a_name_no_document_contains(real_assistant):
    """The own eval's q060, reworded: the Transformer translation passage is close (cosine about 0.5), but no
    document mentions BLEU and the model finds no answer in the top passages."""
    answer = real_assistant.ask("What BLEU score does the Transformer translation model reach on WMT14 English-German?",
                                reader=real_assistant.reader_named("span"))
    assert answer.abstained and answer.citations == () and answer.related, answer.text
    assert answer.text.startswith("The documents never mention BLEU.")


@pytest.mark.e2e
def test_real_assistant_keeps_an_english_question_whose_name_the_code_answers(real_assistant):
    """No document writes "CNN" (the text says 卷积神经网络), and the model scores the Conv2D code that answers
    low: the nearest passage is code, so the question is answered from it."""
    answer = real_assistant.ask("What CNN architecture is used for image recognition?",
                                reader=real_assistant.reader_named("span"))
    assert not answer.abstained, answer.text
    assert "Conv2D" in answer.text and answer.citations[0].source.startswith("001_")


@pytest.mark.e2e
def test_real_assistant_refuses_a_chinese_short_fact_its_close_passages_do_not_hold(real_assistant):
    """Issue 19's example: the compute passages are close (cosine 0.47) but none says how much memory a 70B
    model needs; the model's margins over the top 3 (-6.9 to -11.9) are all under TERM_MARGIN."""
    answer = real_assistant.ask("训练一个700亿参数的模型需要多少显存？", reader=real_assistant.reader_named("span"))
    assert answer.abstained and answer.citations == () and answer.related, answer.text
    assert answer.text.startswith("文档中没有涉及这个问题")


@pytest.mark.e2e
def test_real_assistant_shows_no_unsure_span_for_a_chinese_short_fact_below_the_cosine_threshold(real_assistant):
    """A vague short fact (cosine 0.39): the code passages' best margin (about 1.5) passes the trained threshold but
    not ZH_THRESHOLD; at the trained threshold the answer led with "10000" (the PPO steps), not d_model's 512."""
    answer = real_assistant.ask("模型维度设为多少？", reader=real_assistant.reader_named("span"))
    assert answer.abstained or (answer.span is not None and answer.span.quote == "512"), answer.text
