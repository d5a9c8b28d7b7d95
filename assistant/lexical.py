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

Loading is what a process start pays (docs/index-format.md has the files): the term-major postings are
saved, not re-sorted, and the vocabulary stays the bytes of ``vocab.txt``. Tokens are found by a 64-bit
FNV-1a hash of their UTF-8 bytes, hashed for all tokens in one vectorised pass and sorted; a hit is
checked against the token itself. At 1.45 M tokens and 20,000 chunks that loads in about 0.3 s, where a
JSON list, a set and a dict of the tokens plus the sort took 2.2 s.
"""
from __future__ import annotations

import bisect
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TOKENIZER = "jieba-search+cjk-bigram+lower-v1"
SCORING = "bm25-lucene k1=1.5 b=0.75"
FILES = ("vocab.txt", "token_ids.npy", "offsets.npy", "postings.npy", "tf.npy", "indptr.npy")
_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, 2 ** 64 - 1
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

    def __init__(self, start: int, token_ids: np.ndarray, offsets: np.ndarray, vocab_size: int,
                 postings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        self.start = start  # the part's first chunk id in the index
        self.token_ids, self.offsets = token_ids, offsets  # global token ids, local chunk offsets
        n = len(offsets) - 1
        if postings is not None:  # as saved: checked for shape and range (a wrong count only mis-scores)
            chunks, tf, indptr = postings
            if not all(np.issubdtype(a.dtype, np.integer) for a in postings) \
                    or chunks.ndim != 1 or tf.shape != chunks.shape or indptr.shape != (vocab_size + 1,) \
                    or indptr[0] != 0 or indptr[-1] != len(chunks) or np.any(np.diff(indptr) < 0) \
                    or (len(chunks) and not (0 <= chunks.min() and chunks.max() < n and tf.min() >= 1)) \
                    or int(tf.sum(dtype=np.int64)) != len(token_ids):
                raise ValueError("lexical postings are out of step with the token tables")
            self.chunks, self.tf, self.indptr = chunks.astype(np.int32), tf.astype(np.float64), indptr
            return
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

    def __init__(self, vocab: Sequence[str], token_ids: np.ndarray, offsets: np.ndarray, k1: float = 1.5,
                 b: float = 0.75, ids: Mapping[str, int] | None = None,
                 postings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        token_ids = np.asarray(token_ids, dtype=np.int32)
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or token_ids.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 \
                or offsets[-1] != len(token_ids) or np.any(np.diff(offsets) < 0) \
                or (len(token_ids) and not 0 <= token_ids.min() <= token_ids.max() < len(vocab)):
            raise ValueError("lexical token tables are out of step")
        self.vocab = vocab
        self._ids = ids if ids is not None else dict(zip(vocab, range(len(vocab))))
        self.k1, self.b = k1, b
        self._parts = [_Part(0, token_ids, offsets, len(vocab), postings)]
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
        vocab = _Joined(self.vocab, new) if new else self.vocab
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
        """The files of docs/index-format.md: the tokens, one per line, and the token tables and postings."""
        data = "".join(t + "\n" for t in self.vocab).encode("utf-8")
        if data.count(b"\n") != len(self.vocab):
            raise ValueError("a lexical token holds a line break")  # the tokenizer never makes one
        part = self._parts[0] if len(self._parts) == 1 else _Part(0, self.token_ids, self.offsets, len(self.vocab))
        folder.mkdir()
        (folder / "vocab.txt").write_bytes(data)
        tf = part.tf.astype(np.uint16 if len(part.tf) and part.tf.max() < 2 ** 16 else np.int32)
        for name, array in (("token_ids", self.token_ids), ("offsets", self.offsets), ("postings", part.chunks),
                            ("tf", tf), ("indptr", part.indptr)):
            np.save(folder / f"{name}.npy", array, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        tables = [np.load(folder / f"{name}.npy", allow_pickle=False) for name in ("token_ids", "offsets")]
        if not (folder / "vocab.txt").exists() and (folder / "vocab.json").exists():
            vocab = json.loads((folder / "vocab.json").read_text("utf-8"))  # an index saved before vocab.txt
            if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
                raise ValueError("vocab.json is not a list of tokens")
            if len(set(vocab)) != len(vocab):
                raise ValueError("vocab.json lists a token twice")
            return cls(vocab, *tables)
        vocab = _Vocabulary((folder / "vocab.txt").read_bytes())
        postings = tuple(np.load(folder / f"{name}.npy", allow_pickle=False) for name in ("postings", "tf", "indptr"))
        return cls(vocab, *tables, ids=_Lookup(vocab), postings=postings)

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


def _fnv(token: str) -> int:
    """64-bit FNV-1a of the token's UTF-8 bytes (as _Vocabulary.hashes computes it for every token)."""
    h = _FNV_OFFSET
    for byte in token.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return h


class _Vocabulary(Sequence):
    """The tokens of a saved index, kept as the bytes of vocab.txt (one token and a line break each) and
    decoded one at a time: a Python list of 1.45 M tokens costs 0.5 s to make, these bytes 10 ms to read."""

    def __init__(self, data: bytes) -> None:
        data.decode("utf-8")  # a mis-encoded file is refused here (UnicodeDecodeError is a ValueError)
        raw = np.frombuffer(data, dtype=np.uint8)
        if len(raw) and raw[-1] != 10:
            raise ValueError("vocab.txt does not end with a line break")
        self._data, self._ends = data, np.flatnonzero(raw == 10)
        self._starts = np.concatenate([[0], self._ends[:-1] + 1])[:len(self._ends)].astype(np.int64)
        if np.any(self._ends == self._starts):
            raise ValueError("vocab.txt holds an empty token")

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._data[self._starts[i]:self._ends[i]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        yield from self._data.decode("utf-8").split("\n")[:-1]

    def hashes(self) -> np.ndarray:
        """_fnv of every token, vectorised: one pass per byte position over the tokens at least that long."""
        raw = np.frombuffer(self._data, dtype=np.uint8)
        lengths = self._ends - self._starts
        short = len(lengths) and lengths.max() < 2 ** 16  # then the stable sort is a radix sort: 10x faster here
        order = np.argsort(lengths.astype(np.uint16) if short else lengths, kind="stable")
        by_length, starts = lengths[order], self._starts[order]
        h = np.full(len(order), _FNV_OFFSET, dtype=np.uint64)
        prime = np.uint64(_FNV_PRIME)
        for j in range(int(by_length[-1]) if len(order) else 0):
            k = int(np.searchsorted(by_length, j, side="right"))  # the tokens longer than j bytes
            h[k:] ^= raw[starts[k:] + j]
            h[k:] *= prime  # wraps modulo 2**64, as in _fnv
        out = np.empty_like(h)
        out[order] = h
        return out


class _Lookup(Mapping):
    """Token -> id over a _Vocabulary: a binary search of the tokens' sorted hashes, each hit checked against
    the token (a token not in the vocabulary is never given another's id). Tokens whose hashes collide, if
    any, are kept in a small dict; a token listed twice is refused."""

    def __init__(self, vocab: _Vocabulary) -> None:
        hashes = vocab.hashes()
        self._order = np.argsort(hashes)
        self._sorted, self._vocab = hashes[self._order], vocab
        same = np.flatnonzero(self._sorted[1:] == self._sorted[:-1])
        self._colliding: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # tokens looked up already (a query looks up each about three times)
        for i in np.unique(np.concatenate([self._order[same], self._order[same + 1]])).tolist():
            if vocab[i] in self._colliding:
                raise ValueError("vocab.txt lists a token twice")
            self._colliding[vocab[i]] = i

    def __getitem__(self, token: str) -> int:
        if token in self._colliding:
            return self._colliding[token]
        found = self._seen.get(token, -1)
        if found >= 0:
            return found
        if isinstance(token, str) and len(self._sorted):
            h = np.uint64(_fnv(token))
            pos = int(np.searchsorted(self._sorted, h))
            if pos < len(self._sorted) and self._sorted[pos] == h:
                i = int(self._order[pos])
                if self._vocab[i] == token:
                    if len(self._seen) >= 100_000:  # a long-running server: bounded
                        self._seen.clear()
                    self._seen[token] = i
                    return i
        raise KeyError(token)

    def __iter__(self) -> Iterator[str]:
        return iter(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)


class _Joined(Sequence):
    """A vocabulary and the tokens appended to it by a later segment (neither is copied)."""

    def __init__(self, base: Sequence[str], new: list[str]) -> None:
        self._base, self._new = base, new

    def __len__(self) -> int:
        return len(self._base) + len(self._new)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return self._base[i] if i < len(self._base) else self._new[i - len(self._base)]

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from self._new
