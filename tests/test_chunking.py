"""Tests for assistant.chunking: exact offsets, section-aware packing, size limits."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.chunking import CHUNKER_VERSION, DEBRIS, chunk_document, spans
from assistant.ingest import read_document
from assistant.types import Chunk, Document

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def make_document(text: str, source: str = "doc.md") -> Document:
    return Document(source, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def chunks_of(text: str, size: int = 400, overlap: int = 0) -> list[Chunk]:
    document = make_document(text)
    chunks = chunk_document(document, size, overlap)
    assert_well_formed(document, chunks)
    return chunks


def assert_well_formed(document: Document, chunks: list[Chunk], overlap: int = 0) -> None:
    """The invariants every chunking must keep."""
    for c in chunks:
        assert c.source == document.source
        assert 0 <= c.start < c.end <= len(document.text)
        assert document.text[c.start:c.end] == c.text
        assert c.text == c.text.strip() and not c.text[0].isspace() and not c.text[-1].isspace()
        assert not DEBRIS.search(c.text)
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    if overlap == 0:
        for a, b in zip(chunks, chunks[1:]):
            assert a.end <= b.start


def containing(chunks: list[Chunk], needle: str) -> list[Chunk]:
    return [c for c in chunks if needle in c.text]


# -- offsets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "本产品保修期为两年。如果设备出现故障，请先关闭电源，然后联系售后服务中心。\n\n退货政策：七天内可以退货。",
    "The warranty lasts two years. If the device fails, switch it off first!\n\nReturns are accepted within "
    "seven days? Yes; within seven days.",
    "混合文本 mixed text: 使用 Python 3.11 运行。Run `make test` first. 然后检查结果！\n- 第一项\n- second item.",
    "Line one.\r\nLine two.\r\n\r\n第二段。\r\n# 标题\r\n正文。\r\n",
])
def test_offsets_are_exact(text):
    chunks = chunks_of(text, size=40)
    assert chunks
    # Every non-space character of the text is in some chunk: nothing but whitespace is dropped.
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_crlf_text_keeps_carriage_returns_inside_and_trims_them_at_edges():
    text = "First paragraph line.\r\nSecond line.\r\n\r\nNext paragraph.\r\n"
    chunks = chunks_of(text, size=400)
    assert [c.text for c in chunks] == ["First paragraph line.\r\nSecond line.\r\n\r\nNext paragraph."]


def test_chat_template_debris_is_never_part_of_a_chunk():
    text = "大模型的优势很多。<|bot|>### 面试题\n\n**1. 什么是微调？**\n\n答：继续训练。<|im_end|>\n结束语。"
    chunks = chunks_of(text, size=400)
    joined = "".join(c.text for c in chunks)
    assert "<|" not in joined and "|>" not in joined
    # Debris separates chunks: text before and after a marker never share one.
    assert containing(chunks, "大模型的优势很多。")[0] is not containing(chunks, "### 面试题")[0]
    assert containing(chunks, "结束语。")[0] is not containing(chunks, "答：继续训练。")[0]
    assert {"大模型的优势很多。", "结束语。"} <= {c.text for c in chunks}


def test_heading_right_after_debris_is_a_heading():
    text = "前文内容。\n<|bot|>### 面试题\n\n**1. 什么是微调？**\n\n答：继续训练。"
    chunks = chunks_of(text, size=400)
    assert [c.text for c in chunks] == ["前文内容。", "### 面试题\n\n**1. 什么是微调？**\n\n答：继续训练。"]
    assert ("heading", "### 面试题") in [(s.kind, text[s.start:s.end]) for s in spans(text)]


# -- structure -------------------------------------------------------------------------------------

def test_code_block_stays_with_the_sentence_that_introduces_it():
    text = ("# 训练\n\n下面是一个简化的训练示例：\n\n```python\nimport torch\n\nmodel = torch.nn.Linear(4, 2)\n"
            "for step in range(10):\n    loss = model(x).sum()\n```\n\n以上代码演示了训练循环。")
    chunks = chunks_of(text, size=120)
    code = containing(chunks, "```python")
    assert len(code) == 1
    assert "下面是一个简化的训练示例：" in code[0].text
    assert code[0].text.count("```") == 2  # the whole block, fences included


def test_long_code_block_is_split_at_line_ends_only():
    lines = [f"value_{i} = compute({i})" for i in range(60)]
    text = "```python\n" + "\n".join(lines) + "\n```"
    chunks = chunks_of(text, size=100)
    assert len(chunks) > 1
    for c in chunks:
        assert len(c.text) <= 300  # code_size defaults to 3 * size
        for line in c.text.splitlines():  # never a cut inside a line
            assert line in text.splitlines()


def test_interview_item_stays_in_one_chunk_with_its_answer():
    text = ("**1. 什么是大模型？**\n\n**答案：** 大模型是参数量很大的神经网络。它能完成多种任务。\n\n"
            "**2. 什么是微调？**\n\n**答案：** 微调是在预训练模型上用少量数据继续训练。")
    chunks = chunks_of(text, size=80)
    assert [c.text for c in chunks] == [
        "**1. 什么是大模型？**\n\n**答案：** 大模型是参数量很大的神经网络。它能完成多种任务。",
        "**2. 什么是微调？**\n\n**答案：** 微调是在预训练模型上用少量数据继续训练。",
    ]


def test_heading_lines_start_new_chunks():
    text = "# 第一章\n\n第一章的内容。\n\n## 第一节\n\n第一节的内容。\n\n# 第二章\n\n第二章的内容。"
    chunks = chunks_of(text, size=400)  # everything would fit in one chunk
    assert [c.text.splitlines()[0] for c in chunks] == ["# 第一章", "## 第一节", "# 第二章"]


def test_heading_in_mid_line_after_a_sentence_end_starts_a_new_chunk():
    text = "上一节的最后一句话。### 新的小节\n新小节的内容。"
    chunks = chunks_of(text, size=400)
    assert [c.text for c in chunks] == ["上一节的最后一句话。", "### 新的小节\n新小节的内容。"]


def test_hash_inside_a_sentence_is_not_a_heading():
    text = "Use C# and F# here. Issue #12 is open."
    assert [c.text for c in chunks_of(text, size=400)] == [text]


def test_heading_context_is_the_path_of_parent_sections():
    text = ("# 指南\n\n简介。\n\n## 安装\n\n" + "安装步骤很多。" * 12 + "\n\n## 使用\n\n使用方法。\n\n# 附录\n\n附录内容。")
    chunks = chunks_of(text, size=50)
    by_start = {c.text.splitlines()[0]: c for c in chunks}
    assert by_start["# 指南"].heading == ""
    assert by_start["## 安装"].heading == "指南"
    assert by_start["## 使用"].heading == "指南"  # a sibling section is not a parent
    assert by_start["# 附录"].heading == ""
    continued = [c for c in chunks if c.text.startswith("安装步骤")]
    assert continued and all(c.heading == "指南 > 安装" for c in continued)


def test_bold_heading_markers_are_stripped_from_the_context():
    text = "### **一、引言**\n\n" + "引言的内容很长。" * 10
    chunks = chunks_of(text, size=40)
    assert len(chunks) > 1
    assert chunks[1].heading == "一、引言"


# -- sizes -----------------------------------------------------------------------------------------

def test_prose_chunks_respect_the_size_and_cut_at_sentence_ends():
    sentences = [f"这是第{i}个句子，内容比较普通。" for i in range(40)]
    text = "".join(sentences)
    chunks = chunks_of(text, size=60)
    assert len(chunks) > 5
    assert all(len(c.text) <= 60 for c in chunks)
    assert all(c.text.endswith("。") for c in chunks)  # never a cut inside a sentence that fits


def test_english_prose_is_cut_at_sentence_ends():
    text = " ".join(f"Sentence number {i} says something short." for i in range(30))
    chunks = chunks_of(text, size=100)
    assert all(len(c.text) <= 100 and c.text.endswith(".") for c in chunks)


def test_long_sentence_without_punctuation_is_cut():
    text = "这是一句很长的话没有任何标点符号" * 40
    chunks = chunks_of(text, size=100)
    assert len(chunks) >= len(text) // 100
    assert all(len(c.text) <= 100 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_long_sentence_is_cut_at_a_comma_when_possible():
    text = "，".join(["一段没有句号的长文字"] * 30) + "。"
    chunks = chunks_of(text, size=100)
    assert len(chunks) > 1
    assert all(len(c.text) <= 100 for c in chunks)
    assert all(c.text.endswith(("，", "。")) for c in chunks)


def test_a_unit_that_cannot_be_split_may_exceed_the_size():
    heading = "# " + "很长的标题" * 30  # a heading line is never cut
    chunks = chunks_of(heading + "\n\n正文。", size=50)
    assert chunks[0].text.startswith(heading)
    assert len(chunks[0].text) > 50


@pytest.mark.parametrize("overlap", [10, 24])
def test_overlap_repeats_whole_sentences_and_stays_within_the_size(overlap):
    text = " ".join(["Aa.", "Bbbbbbbbbbbbbbbbbbbb.", "Cccccccccccccccccccccccccccccccccccc.", "Dd.", "Eeee."] * 3)
    document = make_document(text)
    chunks = chunk_document(document, 45, overlap)
    assert_well_formed(document, chunks, overlap=overlap)
    assert all(len(c.text) <= 45 for c in chunks)
    repeated = [b for a, b in zip(chunks, chunks[1:]) if b.start < a.end]
    for a, b in zip(chunks, chunks[1:]):
        if b.start < a.end:
            assert a.end - b.start <= overlap
    if overlap == 24:
        assert repeated  # "Bbbb…." (21 characters) is carried into the next chunk at least once


def test_whitespace_only_text_gives_no_chunks():
    assert chunks_of(" \n\r\n\t\u3000 ") == []
    assert chunks_of("<|bot|>\n<|im_end|>") == []


def test_spans_are_units_with_exact_offsets():
    text = "# 标题\n第一句。第二句！\n\n```\ncode\n```"
    found = spans(text)
    assert [(s.kind, text[s.start:s.end]) for s in found] == [
        ("heading", "# 标题"), ("text", "第一句。"), ("text", "第二句！"), ("code", "```\ncode\n```")]


# -- properties ------------------------------------------------------------------------------------

_PIECES = st.sampled_from(["#", "## ", "### 标题\n", "```", "```python\n", "~~~", "<|bot|>", "<|im_end|>", "\n",
                           "\n\n", "\r\n", "。", ".", ". ", "？", "！", "；", "，", " ", "\t", "\u3000", "**",
                           "**1. 问题？**", "1. ", "- "])
_CJK = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=40)
_ANY = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
_TEXT = st.lists(st.one_of(_PIECES, _CJK, _ANY), max_size=50).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, size=st.integers(4, 80))
def test_property_offsets_order_and_no_overlap(text, size):
    document = make_document(text)
    assert_well_formed(document, chunk_document(document, size, 0))


@settings(max_examples=200, deadline=None)
@given(text=_TEXT, size=st.integers(8, 80), overlap=st.integers(1, 40))
def test_property_offsets_hold_with_overlap(text, size, overlap):
    overlap = min(overlap, size // 2 - 1)
    document = make_document(text)
    chunks = chunk_document(document, size, max(overlap, 0))
    assert_well_formed(document, chunks, overlap=max(overlap, 0))


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.one_of(st.sampled_from(["\n", "\n\n", "\r\n", "。", ". ", "？", "，", " ", "\u3000"]),
                               st.text(alphabet="abcxyz ,.", max_size=40), _CJK), max_size=40).map("".join),
       size=st.integers(4, 80), overlap=st.integers(0, 30))
def test_property_prose_chunks_never_exceed_the_size(text, size, overlap):
    overlap = min(overlap, max(size // 2 - 1, 0))
    chunks = chunk_document(make_document(text), size, overlap)
    assert all(len(c.text) <= size for c in chunks)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.txt")), ids=lambda p: p.name)
def test_real_corpus_offsets(path):
    document = read_document(path, CORPUS)
    chunks = chunk_document(document, 360, 0)
    assert chunks
    assert_well_formed(document, chunks)
    joined = "".join(c.text for c in chunks)
    assert "<|" not in joined


# -- CHUNKER_VERSION -------------------------------------------------------------------------------
# An index stores the CHUNKER_VERSION of its chunks and reuses them while it is unchanged, so the
# version must change whenever the output does. The fingerprint of chunking SAMPLE (offsets, texts,
# headings and units, with three settings) is recorded here for the version it belongs to. (Versions
# 1 to 3 were recorded before SAMPLE gained its last paragraphs: only the current entry is checked.)
CHUNKER_FINGERPRINTS = {1: "c176f41b43d6d2ee", 2: "a9b110f23d5e9181", 3: "d5248fc3e4b855a5", 4: "34a46ab4b630e23b"}

SAMPLE = (
    "# 机器学习面试题\n\n**1. 什么是过拟合？**\n\n"
    "过拟合是模型在训练集上表现很好，在测试集上表现很差。常见原因：模型太复杂；数据太少！怎么办？加正则。\n\n"
    "## Code\n\nUse early stopping:\n\n```python\nfor epoch in range(10):\n    train()\n"
    "    if val_loss > best:\n        break\n```\n\n"
    "<|bot|> A sentence after debris. Another one here! And a question? Yes; indeed.\n"
    "- item one\n- item two, with a comma, and more words so that it is long enough to be cut somewhere\n\n"
    "一个很长的句子没有任何句号但是有逗号，逗号后面还有很多字，这样它就会在逗号处被切开，继续写更多的字直到超过大小限制还要更长一些才行"
    "\n\n**什么是欠拟合?**\n欠拟合是模型太简单。\u3000\n\n### 小结 ###\n\n中文与 English mixed text. 最后一句。 See "
    "section 2.1 for more. 结束。\n\u3000\n注意事项。 ## 中间的标题\n内容在这里。\n\n  ~~~\nx = 1\n  ~~~\n\n"
    "清单：苹果、香蕉、葡萄、橙子、西瓜、草莓、蓝莓、芒果、菠萝、荔枝、龙眼、柚子、石榴、樱桃、桃子、李子、杏子"
    "\n\n### **AI 大模型创业：如何利用渠道优势？**\n\n#### **一、引言**\n\n随着技术的发展，大模型展现出了能力。"
    "\n\n### 1. 实现一个基于 GAN 的人脸生成模型。\n\n使用 Keras 实现。"
)


def chunker_fingerprint() -> str:
    document = make_document(SAMPLE)
    out = []
    for size, overlap in ((40, 0), (80, 16), (400, 0)):
        chunks = chunk_document(document, size, overlap)
        out.append([[c.start, c.end, c.heading, c.text, [[u.start, u.end, u.kind, u.block] for u in spans(c.text)]]
                    for c in chunks])
    out.append([[u.start, u.end, u.kind, u.block] for u in spans(SAMPLE, 60)])
    return hashlib.sha256(json.dumps(out, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def test_a_change_of_the_chunking_output_bumps_chunker_version():
    fingerprint = chunker_fingerprint()
    assert CHUNKER_FINGERPRINTS.get(CHUNKER_VERSION) == fingerprint, (
        f"the chunking output changed without a new CHUNKER_VERSION ({CHUNKER_VERSION}): bump CHUNKER_VERSION in "
        f"assistant/chunking.py (indexes are then re-embedded on their next build) and record "
        f"{CHUNKER_VERSION + 1 if CHUNKER_VERSION in CHUNKER_FINGERPRINTS else CHUNKER_VERSION}: {fingerprint!r} "
        "in CHUNKER_FINGERPRINTS in tests/test_chunking.py")


def test_a_bold_title_ending_in_a_question_mark_is_one_heading():
    """``### **如何利用渠道优势？**``: the ？ is the title's last mark, inside the bold: the whole line is
    the heading (a mid-line rule once cut it to ``### **AI`` and made ``AI`` the next chunk's heading)."""
    text = "### **AI 大模型创业：如何利用渠道优势？**\n\n#### **一、引言**\n\n随着人工智能技术的快速发展，大模型展现出了强大的能力。\n"
    units = [u for u in spans(text) if u.kind == "heading"]
    assert [text[u.start:u.end] for u in units] == ["### **AI 大模型创业：如何利用渠道优势？**", "#### **一、引言**"]
    chunks = chunk_document(Document(source="a.md", text=text, sha256="0"), 360, 0)
    assert len(chunks) == 1 and chunks[0].text.startswith("### **AI 大模型创业：如何利用渠道优势？**")


def test_a_title_ending_with_a_full_stop_is_one_heading_but_a_heading_word_and_a_sentence_are_not():
    text = "### 1. 实现一个基于 GAN 的人脸生成模型。\n\n使用 Keras 实现。\n\n简介在这里。 ## 数据 初创公司缺少数据时，可以合作。\n"
    headings = [text[u.start:u.end] for u in spans(text) if u.kind == "heading"]
    assert headings == ["### 1. 实现一个基于 GAN 的人脸生成模型。", "## 数据"]
