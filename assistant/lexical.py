"""The lexical side: jieba + character-bigram tokens scored with BM25 (bm25s, saved without pickle)."""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TOKENIZER = "jieba-search+cjk-bigram+lower-v1"
_WORD = re.compile(r"[a-z0-9_]+|[\u3400-\u9fff\uf900-\ufaff]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_STOP = frozenset(
    "的 了 和 是 在 与 及 或 等 也 就 都 而 及其 以及 如何 怎么 怎样 什么 哪些 为什么 吗 呢 吧 啊 "
    "一个 一种 这个 那个 可以 进行 通过 对于 我们 你 我 他 它 其 之 "
    "the a an of to in on for and or is are be what how why which who does do with by as at from that this".split()
)
_jieba_lock = threading.Lock()
_jieba = None


def _tokenizer():
    """jieba's default tokenizer, created on first use with its cache under our home, not /tmp."""
    global _jieba  # a lazily built, read-only tokenizer; building it twice is only wasted time
    with _jieba_lock:
        if _jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tk = jieba.Tokenizer()
            tk.initialize()
            _jieba = tk
        return _jieba


def _bm25s():
    """bm25s, imported on first use; it sets its logger to DEBUG, which would print on every CLI build."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(text: str) -> list[str]:
    """Lower-cased words; Chinese runs are cut by jieba (search mode) plus their character bigrams."""
    tokens: list[str] = []
    for run in _WORD.findall(text.lower()):
        if _CJK.match(run):
            tokens.extend(w for w in _tokenizer().cut_for_search(run) if w.strip() and w not in _STOP)
            tokens.extend(run[i:i + 2] for i in range(len(run) - 1))
        elif run not in _STOP:
            tokens.append(run)
    return tokens


class LexicalIndex:
    """BM25 over chunk texts. ``scores(query)`` is one sparse matrix product: no Python loop over chunks."""

    def __init__(self, bm25) -> None:
        self._bm25 = bm25
        self._vocab = bm25.vocab_dict

    @classmethod
    def build(cls, texts: list[str]) -> LexicalIndex:
        bm25s = _bm25s()
        bm25 = bm25s.BM25()
        corpus = [tokenize(t) or ["\u2205"] for t in texts]
        bm25.index(corpus, show_progress=False)
        return cls(bm25)

    def save(self, folder: Path) -> None:
        self._bm25.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        bm25s = _bm25s()
        return cls(bm25s.BM25.load(str(folder), mmap=False, allow_pickle=False))

    def contains(self, term: str) -> bool:
        """Whether some chunk holds every token of ``term`` (a plural's singular counts: "APIs" -> "API")."""
        for form in (term, term[:-1]) if len(term) > 2 and term.endswith("s") else (term,):
            tokens = tokenize(form)
            if tokens and all(t in self._vocab for t in tokens):
                return True
        return False

    def scores(self, query: str) -> np.ndarray:
        n = int(self._bm25.scores["num_docs"])
        tokens = [t for t in tokenize(query) if t in self._vocab]
        if not tokens:
            return np.zeros(n, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)
