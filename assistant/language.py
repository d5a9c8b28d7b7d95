"""Which language a text is in, the names a question asks about, whether it asks for a short fact, the
"not covered" sentence in its language, and names made printable on one line."""
from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff]")  # CJK ideographs (extension A and the unified block)
_LATIN = re.compile(r"[A-Za-z]")
_TERM = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Za-z0-9]*(?:[-.][A-Za-z0-9]+)*")


def is_chinese(text: str) -> bool:
    cjk = len(CJK.findall(text))
    return cjk > 0 and cjk >= 0.25 * len(_LATIN.findall(text))


def named_terms(question: str) -> list[str]:
    """Latin-script names in a Chinese question (``Kubernetes``, ``H100``, ``LoRA``), in order, once each.

    A Chinese document that covers such a topic writes the name as is, so a name that no document
    contains means the documents do not cover the question: measured on our eval set, this catches
    questions on near topics (Kubernetes, H100) whose passages are otherwise close enough to answer,
    and never fired on an answerable question; on CMRC it fired for 3 of 3,219 questions. English
    questions are left out: their names are often translated in Chinese documents.
    """
    if not is_chinese(question):
        return []
    found = dict.fromkeys(m.group() for m in _TERM.finditer(question))
    return [t for t in found if len(t) >= 2 and not t.islower()]


_ACRONYM = re.compile(r"(?<![\w.-])[A-Z][A-Z0-9_]*[A-Z0-9](?:[-.][A-Z0-9_]+)*(?![\w])")  # MAX_LEN whole
_ROMAN = re.compile(r"[IVXLCDM]+")


def acronyms(question: str) -> list[str]:
    """Upper-case names in a question that is not Chinese (``BLEU``, ``RLHF``, ``H100``; not Roman numerals), in
    order, once each.

    Unlike the names of a Chinese question (named_terms), one of these that no document contains does not settle
    the question by itself: an English question about Chinese documents may name in Latin letters what they write
    in Chinese ("the 2007 AFC Champions League", 亚冠联赛). The reader model confirms (span_reader.Answerability).
    """
    if is_chinese(question):
        return []
    found = dict.fromkeys(m.group() for m in _ACRONYM.finditer(question))
    return [t for t in found if not _ROMAN.fullmatch(t)]


# A question that asks for one short fact: who, when, where, which, how many, what year (Chinese and English).
# Nouns whose answer is an explanation or a list ("什么原因", "…的作用是什么"): no short fact.
_EXPLAINED = ("原因|作用|区别|差别|好处|影响|办法|方法|方式|措施|对策|优势|特点|步骤|工作|问题|内容|要求|条件|关系|意义|功能|用途"
              "|思路|经验|建议|机会|风险|挑战|技术|策略|原理|过程|流程|定义|含义|概念|看法|评价|目的|情况|意思|样")
_FACT_ZH = re.compile(
    r"多少|第几|几[个岁年月号日次位种名人天层部本届座条项家所倍]|谁|何时|何地|何年|何处|何人|何种|什么时候|多久|多长|多大|多高"
    r"|多远|多重|多深|叫什么|什么名字|称为什么|名为什么|哪(?!些)[一个位年里儿国座所家种部条支天届项款本首次月日间份边方]"
    rf"|什么(?!是|{_EXPLAINED})[\u4e00-\u9fff]"
    rf"|的(?:(?!{_EXPLAINED})[\u4e00-\u9fffA-Za-z0-9]){{1,8}}是什么[?？]?$"  # "GAN 的损失函数是什么？"
    r"|[是为于][?？]?$")  # a sentence to complete: "李白描写秦岭山路的作品是？"
_FACT_EN = re.compile(  # at the start, or after one leading clause ("In the GAN example, which ...")
    r"^(?:[^,?]{0,80},\s*)?(?:in |for |by |from |to |on |at )?"
    r"(?:who|whom|whose|when|where|which|how (?:many|much|long|old|far|big|large|tall|often)"
    r"|what (?:year|time|date|day|month|century|percentage|percent|number|age|colou?r|country|city|language|name)"
    # "What loss function does it use?": a singular noun after "what" (not "what is", "what can", "what challenges")
    r"|what (?!(?:is|are|was|were|do|does|did|can|could|should|would|will|has|have|had|happens|happened|other|else"
    r"|kinds?|types?|sorts?|ways?)\b)[a-z]+(?<![^s]s))\b",
    re.IGNORECASE)
# ... and one that asks for an explanation, a list or several things at once: no single short span answers it.
_NOT_FACT = re.compile(
    r"(?<![称名成作])为什么|为何(?!种)|有什么|怎么|怎样|如何|哪些|有何|介绍|解释|描述|说明|比较|区别|原理|优缺点|分析|谈谈|步骤"
    r"|\b(?:why|how (?:do|does|did|can|could|should|would|is|are|to)|explain|describe|walk me|compare|difference"
    r"|should|what are|list)\b", re.IGNORECASE)
_SEVERAL = re.compile(r"[,，、] *(?:and|以及|并且|还有)\b|\band (?:in |for |at |on )?(?:what|which|how|who|where|when)\b",
                      re.IGNORECASE)


def asks_for_fact(question: str) -> bool:
    """Whether ``question`` asks for one short fact (a name, a number, a date, a place), which a short span
    answers: "谁发明了…？", "GAN 的损失函数是什么？", "How many timesteps…?". Explanation and list questions
    ("怎么办？", "有哪些…？", "…的作用是什么？", "What is X?") and questions with several parts ("…？…？", "X, and
    which Y") are not."""
    text = question.strip().replace("甚么", "什么")
    if len(re.findall(r"[?？]", text)) > 1 or text.count("什么") > 1 or _SEVERAL.search(text):
        return False
    if _NOT_FACT.search(text):
        return False
    cues = len(_FACT_ZH.findall(text))
    return cues == 1 or (cues == 0 and bool(_FACT_EN.search(text)))


def not_covered(question: str, missing: tuple[str, ...] = ()) -> str:
    """What a reader says when the documents do not cover ``question`` (naming the ``missing`` terms), in its language."""
    if is_chinese(question):
        said = f"文档中没有提到 {'、'.join(missing)}，" if missing else "文档中没有涉及这个问题。"
        return said + "下面是最接近的段落，仅供参考。"
    said = f"The documents never mention {', '.join(missing)}." if missing else \
        "The documents do not cover this question."
    return said + " The closest passages are listed below for reference."


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def printable(name: str) -> str:
    """A file name (or any label) as one line: newlines, tabs and other control characters escaped
    (``\\n``, ``\\t``, ``\\x1b``...), so a hostile name cannot split or forge an output line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), name)
