"""Follow-up questions: which ones lean on the conversation, and what to search for. No language model, no Gradio.

A follow-up ("那第二点具体怎么做？", "tell me more about that") is searched for together with the conversation's
topic, the latest earlier question that stands alone.
"""
from __future__ import annotations

import re

from .language import CJK

_ZH_REFERS = re.compile(r"它|这个|这些|这种|这样|那个|那些|那种|上面|上述|刚才|前面|前者|后者|"
                        r"第[一二三四五六七八九十两\d]+(?:点|条|个|步|项|种|部分)")
_ZH_OPENERS = re.compile(r"^(?:那|那么|这|其|还有|另外|然后|所以|再)")
_ZH_VAGUE = re.compile(r"具体|详细|展开|更多|举个?例|为什么|为啥|怎么做|怎么办|呢")
_EN_REFERS = re.compile(r"\b(?:it|that|this|these|those|they|them|the (?:first|second|third|fourth|fifth|last|"
                        r"previous|above|other) (?:one|point|item|step|part|option|idea))\b")
_EN_PHRASES = re.compile(r"\b(?:tell me more|more about|more detail|in detail|elaborate|go on|expand on|what about|"
                         r"how about|and then|for example|an example|why is that|how so)\b")
_EN_VAGUE = frozenset("why how what so and then more else really example examples please details detail explain "
                      "elaborate go on continue about tell me".split())
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def is_follow_up(question: str) -> bool:
    """Whether a question leans on the conversation ("那第二点具体怎么做？", "tell me more about that")."""
    q = question.strip().lower()
    if CJK.search(q):
        bare = _PUNCT.sub("", q)
        return bool(_ZH_REFERS.search(q) or (_ZH_OPENERS.match(bare) and len(bare) <= 12)
                    or (_ZH_VAGUE.search(q) and len(bare) <= 8))
    words = re.findall(r"[a-z']+", q)
    if not words:
        return False
    return bool(_EN_PHRASES.search(q) or (_EN_REFERS.search(q) and len(words) <= 8)
                or (len(words) <= 3 and all(w in _EN_VAGUE for w in words)))


def message_text(content) -> str:
    """The text of a chat message, in either form Gradio uses (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return " ".join(message_text(part) for part in content).strip()
    return ""


def resolve_query(question: str, history: list, limit: int = 2000) -> str:
    """What to search for: the question, with the conversation's topic folded in when it is a follow-up.

    The topic is the latest earlier question that is not itself a follow-up (else the latest one).
    """
    question = question.strip()
    asked = [message_text(m.get("content")).strip() for m in history or () if m.get("role") == "user"]
    asked = [q for q in asked if q]
    if not asked or not is_follow_up(question):
        return question
    topic = next((q for q in reversed(asked) if not is_follow_up(q)), asked[-1])
    room = limit - len(question) - 1
    if room < 8:
        return question
    return f"{topic[:room]} {question}"



def last_question(history: list) -> str:
    """The latest question asked in the conversation ("" when there is none)."""
    asked = (message_text(m.get("content")).strip() for m in reversed(history or ()) if m.get("role") == "user")
    return next(asked, "")
