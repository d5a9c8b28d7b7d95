"""The lexical side: jieba + character-bigram tokens scored with BM25 (numpy, saved without pickle).

BM25 as Lucene (and bm25s' default) scores it: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), and a
term's weight in a chunk = idf * tf / (tf + k1 * (1 - b + b * len / avg len)), k1 1.5, b 0.75. A
query's scores are the sum over its tokens of those weights (a sparse row per token).

Each chunk's token ids are kept with the index, so an incremental build tokenizes only new chunks
(jieba is the slow part: about 100 s for 20,000 chunks here). The index keeps each part's (segment's)
term frequencies, sorted once when the part is made; appending a segment (``LexicalIndex.extended``)
sorts only the new chunks' tokens, then recomputes idf (a vector over the vocabulary) and each
posting's tf / (tf + length norm) in one vectorised pass (about 60 ms at 20,000 chunks), so a query
only gathers its rows, scales them by idf and adds.
"""
from __future__ import annotations

import bisect
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Mapping
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


class _Part:
    """The term frequencies of one run of chunks (a segment of the index), term-major.

    Row ``g`` (a global token id) of the part: its chunks are ``chunks[indptr[g]:indptr[g + 1]]`` (ids local to
    the part, ascending) with counts ``tf[...]``; ids at or past ``len(indptr) - 1`` (tokens first seen in a
    later part) have no chunk here. Parts are never changed once made, so an index that is served while a
    new one is built from it stays valid."""

    def __init__(self, start: int, token_ids: np.ndarray, offsets: np.ndarray, vocab_size: int) -> None:
        self.start = start  # the part's first chunk id in the index
        self.token_ids, self.offsets = token_ids, offsets  # global token ids, local chunk offsets
        n = len(offsets) - 1
        lengths = np.diff(offsets)
        doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
        # One sort over this part's tokens only: (token, chunk) pairs in token-major order, counted.
        pairs, tf = np.unique(token_ids.astype(np.int64) * max(n, 1) + doc, return_counts=True)
        terms = pairs // max(n, 1)
        self.chunks = (pairs % max(n, 1)).astype(np.int32)
        self.tf = tf.astype(np.float64)
        self.indptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=vocab_size), out=self.indptr[1:])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def df(self, vocab_size: int) -> np.ndarray:
        """In how many of this part's chunks each token occurs (``vocab_size`` entries)."""
        df = np.zeros(vocab_size, dtype=np.int64)
        own = np.diff(self.indptr)
        df[:len(own)] = own
        return df


class LexicalIndex:
    """BM25 over chunk texts. ``scores(query)`` gathers the query tokens' rows: no Python loop over chunks.

    The index is a list of parts (one per segment of the index folder, see docs/index-format.md) over one
    vocabulary; ``extended(other)`` appends the chunks of another index as a new part without touching the
    existing ones, in time proportional to the new chunks plus a few vectorised operations over the
    vocabulary and the postings. idf (of the document frequency over all parts) is applied per query row."""

    def __init__(self, vocab: list[str], token_ids: np.ndarray, offsets: np.ndarray, k1: float = 1.5,
                 b: float = 0.75, ids: dict[str, int] | None = None) -> None:
        token_ids = np.asarray(token_ids, dtype=np.int32)
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or token_ids.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 \
                or offsets[-1] != len(token_ids) or np.any(np.diff(offsets) < 0) \
                or (len(token_ids) and not 0 <= token_ids.min() <= token_ids.max() < len(vocab)):
            raise ValueError("lexical token tables are out of step")
        self.vocab = vocab
        self._ids = ids if ids is not None else dict(zip(vocab, range(len(vocab))))
        self.k1, self.b = k1, b
        self._parts = [_Part(0, token_ids, offsets, len(vocab))]
        self._df = self._parts[0].df(len(vocab))
        self._lengths = np.diff(offsets)
        self._weigh()

    def _weigh(self) -> None:
        """idf of every token and the length norm of every chunk (Lucene BM25, over all parts)."""
        n, df = len(self._lengths), self._df
        self._idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avg = self._lengths.mean() if n and self._lengths.mean() > 0 else 1.0
        self._norm = self.k1 * (1 - self.b + self.b * self._lengths / avg)
        # Each posting's tf / (tf + norm), without idf (a query's rows are scaled by theirs): one vectorised
        # pass over the postings (about 20 ms at 20,000 chunks), so a query only gathers and adds.
        self._tfw = [(p.tf / (p.tf + self._norm[p.start:p.start + len(p)][p.chunks])).astype(np.float32)
                     for p in self._parts]

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def token_ids(self) -> np.ndarray:
        """Every chunk's token ids, chunk after chunk (joined from the parts when there are several)."""
        parts = self._parts
        return parts[0].token_ids if len(parts) == 1 else np.concatenate([p.token_ids for p in parts])

    @property
    def offsets(self) -> np.ndarray:
        """Chunk i's tokens are ``token_ids[offsets[i]:offsets[i + 1]]``."""
        if len(self._parts) == 1:
            return self._parts[0].offsets
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self._lengths, out=offsets[1:])
        return offsets

    def chunk_tokens(self, chunk_id: int) -> np.ndarray:
        part = self._part_of(chunk_id)
        local = chunk_id - part.start
        return part.token_ids[part.offsets[local]:part.offsets[local + 1]]

    def _part_of(self, chunk_id: int) -> _Part:
        parts = self._parts
        if len(parts) == 1:
            return parts[0]
        return parts[bisect.bisect_right([p.start for p in parts], chunk_id) - 1]

    def extended(self, other: LexicalIndex) -> LexicalIndex:
        """This index with the chunks of ``other`` (a one-part index of new chunks) appended after its own.

        Tokens ``other`` shares with this index keep their ids, its new ones are appended to the vocabulary;
        the existing parts are shared, not copied (neither index is changed)."""
        if len(other._parts) != 1:
            raise ValueError("only a one-part lexical index can be appended")
        new = [t for t in other.vocab if t not in self._ids]
        vocab = self.vocab + new
        ids = _Layered({t: i for i, t in enumerate(new, len(self.vocab))}, self._ids)
        mapping = np.fromiter((ids[t] for t in other.vocab), dtype=np.int32, count=len(other.vocab))
        part = other._parts[0]
        out = object.__new__(LexicalIndex)
        out.vocab, out._ids, out.k1, out.b = vocab, ids, self.k1, self.b
        out._parts = self._parts + [_Part(len(self), mapping[part.token_ids] if len(part.token_ids) else
                                          part.token_ids, part.offsets, len(vocab))]
        out._df = np.concatenate([self._df, np.zeros(len(new), dtype=np.int64)]) + out._parts[-1].df(len(vocab))
        out._lengths = np.concatenate([self._lengths, other._lengths])
        out._weigh()
        return out

    @classmethod
    def build(cls, texts: list[str], reuse: list[tuple[LexicalIndex, int] | None] | None = None) -> LexicalIndex:
        """Index ``texts``; ``reuse[i] = (previous index, its chunk id)`` takes chunk i's tokens from there.

        The vocabulary holds only the tokens of ``texts``: the ids of reused tokens change when some are gone."""
        previous = next((r[0] for r in reuse or () if r is not None), None)
        vocab = list(previous.vocab) if previous else []  # while building, old ids stay valid: new tokens are appended
        ids = dict(zip(vocab, range(len(vocab))))
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
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab.json lists a token twice")
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
        rows = Counter(self._ids[t] for t in tokenize(query) if t in self._ids)
        chunks, tfs = [], []  # every posting of the query's rows, in all parts, weighed
        for row, repeats in rows.items():
            weight = repeats * self._idf[row]
            for part, tfw in zip(self._parts, self._tfw):
                if row + 1 < len(part.indptr) and part.indptr[row] < part.indptr[row + 1]:
                    a, z = part.indptr[row], part.indptr[row + 1]
                    chunks.append(part.chunks[a:z] + part.start if part.start else part.chunks[a:z])
                    tfs.append(tfw[a:z] * np.float32(weight))
        if not chunks:
            return np.zeros(len(self), dtype=np.float32)
        return np.bincount(np.concatenate(chunks), weights=np.concatenate(tfs), minlength=len(self)).astype(np.float32)


class _Layered(Mapping):
    """Token -> id: a few new tokens over the (shared, never changed) ids of the index they extend."""

    def __init__(self, own: dict[str, int], base: Mapping[str, int]) -> None:
        if isinstance(base, _Layered):
            self._maps = [own, *base._maps]
        else:
            self._maps = [own, base]

    def __getitem__(self, token: str) -> int:
        for m in self._maps:
            if token in m:
                return m[token]
        raise KeyError(token)

    def __contains__(self, token: object) -> bool:
        return any(token in m for m in self._maps)

    def __iter__(self):
        for i, m in enumerate(self._maps):
            yield from (t for t in m if not any(t in later for later in self._maps[:i]))

    def __len__(self) -> int:
        return sum(len(m) for m in self._maps)
