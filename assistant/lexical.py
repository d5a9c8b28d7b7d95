"""The lexical side: jieba + character-bigram tokens scored with BM25 (numpy/scipy, saved without pickle).

BM25 as Lucene (and bm25s' default) scores it: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), and a
term's weight in a chunk = idf * tf / (tf + k1 * (1 - b + b * len / avg len)), k1 1.5, b 0.75. The
weights form one sparse term x chunk matrix; a query's scores are the sum of its tokens' rows.

Each chunk's token ids are kept with the index, so an incremental build tokenizes only new chunks
(jieba is the slow part: about 100 s for 20,000 chunks here) and rebuilds the matrix with a few
vectorised numpy operations.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TOKENIZER = "jieba-search+cjk-bigram+lower-v1"
SCORING = "bm25-lucene k1=1.5 b=0.75"
FILES = ("vocab.json", "token_ids.npy", "offsets.npy")
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
    """BM25 over chunk texts. ``scores(query)`` is one sparse row sum: no Python loop over chunks."""

    def __init__(self, vocab: list[str], token_ids: np.ndarray, offsets: np.ndarray, k1: float = 1.5,
                 b: float = 0.75, ids: dict[str, int] | None = None) -> None:
        token_ids = np.asarray(token_ids, dtype=np.int32)
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(token_ids) \
                or np.any(np.diff(offsets) < 0) or (len(token_ids) and not 0 <= token_ids.min() <= token_ids.max()
                                                     < len(vocab)):
            raise ValueError("lexical token tables are out of step")
        self.vocab = vocab
        self._ids = ids if ids is not None else dict(zip(vocab, range(len(vocab))))
        self.token_ids, self.offsets = token_ids, offsets
        self.k1, self.b = k1, b
        self._matrix = self._weights()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _weights(self):
        from scipy import sparse

        n, v = len(self), max(len(self.vocab), 1)
        lengths = np.diff(self.offsets)
        doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
        pairs, tf = np.unique(doc * v + self.token_ids, return_counts=True)
        d, t = pairs // v, pairs % v
        df = np.bincount(t, minlength=v)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = lengths.mean() if n and lengths.mean() > 0 else 1.0
        w = idf[t] * tf / (tf + self.k1 * (1 - self.b + self.b * lengths[d] / avg))
        return sparse.csr_matrix((w.astype(np.float32), (t, d)), shape=(v, n))

    def chunk_tokens(self, chunk_id: int) -> np.ndarray:
        return self.token_ids[self.offsets[chunk_id]:self.offsets[chunk_id + 1]]

    @classmethod
    def build(cls, texts: list[str], reuse: list[tuple[LexicalIndex, int] | None] | None = None) -> LexicalIndex:
        """Index ``texts``; ``reuse[i] = (previous index, its chunk id)`` takes chunk i's tokens from there.

        The vocabulary holds only the tokens of ``texts``: the ids of reused tokens change when some are gone."""
        previous = next((r[0] for r in reuse or () if r is not None), None)
        vocab = list(previous.vocab) if previous else []  # while building, old ids stay valid: new tokens are appended
        ids = dict(previous._ids) if previous else {}
        known_count = len(ids)
        parts, lengths = [], []
        for i, text in enumerate(texts):
            known = reuse[i] if reuse else None
            if known is not None and known[0] is previous:
                row = known[0].chunk_tokens(known[1])
            else:
                row = np.fromiter((ids.setdefault(t, len(ids)) for t in tokenize(text)), dtype=np.int32)
            parts.append(row)
            lengths.append(len(row))
        vocab += list(ids)[known_count:] if len(ids) > known_count else []  # dicts keep insertion order
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        token_ids = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
        used = np.bincount(token_ids, minlength=len(vocab)) > 0
        if not used.all():  # tokens only removed or changed chunks had: no word of a deleted document stays
            vocab = [t for t, keep in zip(vocab, used) if keep]
            token_ids = (np.cumsum(used) - 1).astype(np.int32)[token_ids]
            ids = None
        return cls(vocab, token_ids, offsets, ids=ids)

    def save(self, folder: Path) -> None:
        folder.mkdir()
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), "utf-8")
        np.save(folder / "token_ids.npy", self.token_ids, allow_pickle=False)
        np.save(folder / "offsets.npy", self.offsets, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        vocab = json.loads((folder / "vocab.json").read_text("utf-8"))
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError("vocab.json is not a list of tokens")
        return cls(vocab, np.load(folder / "token_ids.npy", allow_pickle=False),
                   np.load(folder / "offsets.npy", allow_pickle=False))

    def contains(self, term: str) -> bool:
        """Whether some chunk holds every token of ``term`` (a plural's singular counts: "APIs" -> "API")."""
        for form in (term, term[:-1]) if len(term) > 2 and term.endswith("s") else (term,):
            tokens = tokenize(form)
            if tokens and all(t in self._ids for t in tokens):
                return True
        return False

    def matched_terms(self, query: str, chunk_ids: list[int]) -> list[tuple[str, ...]]:
        """For each chunk, the query's tokens (once each, in query order) that occur in it."""
        terms = list(dict.fromkeys(t for t in tokenize(query) if t in self._ids))
        out = []
        for c in chunk_ids:  # a set of the chunk's few hundred ids: faster here than np.isin
            held = set(self.chunk_tokens(c).tolist())
            out.append(tuple(t for t in terms if self._ids[t] in held))
        return out

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query`` (a repeated query token counts again, as in bm25s)."""
        rows = [self._ids[t] for t in tokenize(query) if t in self._ids]
        if not rows:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self._matrix[rows].sum(axis=0), dtype=np.float32).ravel()
