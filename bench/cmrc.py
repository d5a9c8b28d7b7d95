"""CMRC 2018 quality benchmark: retrieval, reader accuracy and abstention on a public Chinese QA set.

Every dev context becomes one document ``ctx-<paragraph id>.txt`` in a corpus folder outside the
repository; the project's own pipeline indexes it (``Assistant.build``, reused on later runs).
Every question is then asked twice: once normally (the right answer cites its own context) and
once with its own context left out (``exclude``), where the right behaviour is to abstain.
English translations of a subset (``bench/cmrc_en_questions.jsonl``) measure cross-lingual
retrieval beside their Chinese originals.

How it stays affordable on a CPU: the reader embeds the sentences of its top passages for every
question, and the same passages come back again and again (several questions per context, and
each question is asked twice). ``CachedEmbedder`` remembers each text's vector (persisted as
``.npy`` + ``.jsonl``, no pickle), so each sentence is embedded once; the pipeline code is not
changed; OpenMP threads wait passively (see below). The reader runs without its evidence
threshold, which is applied afterwards to the recorded evidence (the nearest chunk's cosine
similarity: exactly the reader's rule), so one pass gives the numbers for every threshold and for
other abstention rules. ``--timing N`` asks N questions through the unmodified ``Assistant``
(default reader, no cache) for honest latency, and checks that it agrees with the cached path.

Usage: ``python -m bench.cmrc [--cmrc PATH] [--limit N] [--json] [--no-write]``
(``make bench-quality``). Results go to the ``cmrc`` section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.cmrc_data import DEFAULT_CMRC, EN_QUESTIONS, Item, load_cmrc, load_english, spread, write_corpus
from bench.common import BENCHMARKS, REPO, machine, percentile, write_section

# OpenMP threads that spin while waiting make every embedding call ~25x slower when the cores are
# shared with other processes (measured: 9 sentences 23 s vs 0.8 s on a busy 2-core machine). Set
# before torch or faiss start OpenMP; OMP_WAIT_POLICY=ACTIVE in the environment restores the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from assistant.config import Settings  # noqa: E402
from assistant.index_store import LoadedIndex, load_index  # noqa: E402
from assistant.pipeline import Assistant, make_embedder  # noqa: E402
from assistant.reader import DEFAULT_MIN_EVIDENCE, ExtractiveReader, Passages  # noqa: E402
from assistant.retriever import HybridRetriever  # noqa: E402

log = logging.getLogger("bench.cmrc")

START, END = "<!-- cmrc:start -->", "<!-- cmrc:end -->"
TARGETS = {"hybrid_r5": 0.985, "reader_accuracy": 0.85, "abstention": 0.9, "cross_lingual_gap": 0.05}
# (fusion, dense weight, lexical weight); the first is HybridRetriever's default
FUSION = [("score", 1.0, 0.05), ("score", 1.0, 0.0), ("score", 1.0, 0.1), ("score", 1.0, 0.2), ("score", 1.0, 0.3),
          ("score", 1.0, 0.5), ("rrf", 1.0, 1.0), ("rrf", 1.0, 0.5)]
UNIT_WEIGHTS = [0.0, 0.15, 0.4]  # the reader's weight of the unit (sentence) match against the passage match
THRESHOLDS = [0.30, 0.35, 0.40, 0.42, 0.45, 0.48, 0.50, 0.52, 0.55, 0.60]


# -- data ----------------------------------------------------------------------------------------
@dataclass
class Result:
    """What one question produced, asked with its own context and without it (``*_out``)."""

    item: Item
    dense_rank: int | None
    bm25_rank: int | None
    hybrid_rank: int | None
    evidence: float  # nearest chunk's cosine similarity (own context present)
    correct: bool  # the reader's quotes contain a gold answer (threshold not applied)
    abstained: bool  # the reader found nothing to quote
    cited: tuple[str, ...]
    margin: float = 0.0  # best document's cosine minus the second document's
    sentence: float = 0.0  # the reader's score of the sentence it cited first
    evidence_out: float = 0.0  # the same with the own context left out
    correct_out: bool = False
    abstained_out: bool = False
    margin_out: float = 0.0
    sentence_out: float = 0.0
    ms: float = 0.0


@dataclass(frozen=True)
class Rule:
    """An abstention rule over the recorded signals: answer when ``accept(evidence, margin, sentence)``."""

    name: str
    accept: Callable[[float, float, float], bool]

    def answered(self, r: Result) -> bool:
        return not r.abstained and self.accept(r.evidence, r.margin, r.sentence)

    def answered_out(self, r: Result) -> bool:
        return not r.abstained_out and self.accept(r.evidence_out, r.margin_out, r.sentence_out)


def cosine_rule(t: float) -> Rule:
    return Rule(f"nearest-chunk cosine >= {t:.2f}", lambda e, m, s: e >= t)


RULES = [cosine_rule(0.45),
         *(Rule(f"cited-sentence score >= {t:.2f}", lambda e, m, s, t=t: s >= t) for t in (0.45, 0.50, 0.55)),
         *(Rule(f"document margin >= {t:.2f}", lambda e, m, s, t=t: m >= t) for t in (0.04, 0.06, 0.08, 0.10)),
         *(Rule(f"cosine >= 0.45 and margin >= {t:.2f}", lambda e, m, s, t=t: e >= 0.45 and m >= t)
           for t in (0.03, 0.05)),
         *(Rule(f"cited-sentence score >= {u:.2f} and margin >= {t:.2f}", lambda e, m, s, u=u, t=t: s >= u and m >= t)
           for u, t in ((0.50, 0.04), (0.48, 0.05)))]


# -- an embedder that remembers ------------------------------------------------------------------
class CachedEmbedder:
    """Wraps an Embedder and remembers every vector it returned, keyed by kind, title and text.

    Saved as ``vectors.npy`` + ``keys.jsonl`` in a folder named after the model's weights, so a
    cache from another model is never used.
    """

    def __init__(self, inner, folder: Path | None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.weights_sha256 = inner.weights_sha256
        self.dtype = getattr(inner, "dtype", "")
        self.folder = folder
        self._rows: dict[str, int] = {}
        self._vectors: list[np.ndarray] = []
        self._saved = 0
        self.computed = 0
        if folder and (folder / "keys.jsonl").exists():
            keys = [json.loads(line) for line in (folder / "keys.jsonl").read_text("utf-8").splitlines()]
            matrix = np.load(folder / "vectors.npy", allow_pickle=False)
            if len(keys) == len(matrix):
                self._rows = {k: i for i, k in enumerate(keys)}
                self._vectors = list(matrix)
                self._saved = len(keys)

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_documents(self, texts: list[str], titles: list[str] | None = None) -> np.ndarray:
        titles = titles or [""] * len(texts)
        keys = [f"d\x1f{t}\x1f{x}" for t, x in zip(titles, texts, strict=True)]
        return self._get(keys, lambda ids: self.inner.embed_documents([texts[i] for i in ids],
                                                                        [titles[i] for i in ids]))

    def embed_passages(self, texts: list[str], titles: list[str], units: list[list[tuple[int, int]]]
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Chunk and unit vectors from one pass of the inner embedder (see SentenceTransformerEmbedder)."""
        keys = [f"p\x1f{t}\x1f{x}" for t, x in zip(titles, texts, strict=True)]
        unit_keys = [[f"{k}\x1f{s}:{e}" for s, e in u] for k, u in zip(keys, units, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self._rows or any(u not in self._rows for u in unit_keys[i])]
        if todo:
            vectors, unit_vectors = self.inner.embed_passages([texts[i] for i in todo], [titles[i] for i in todo],
                                                              [units[i] for i in todo])
            for i, v, uv in zip(todo, vectors, unit_vectors, strict=True):
                for key, vector in [(keys[i], v), *zip(unit_keys[i], uv, strict=True)]:
                    self._rows[key] = len(self._vectors)
                    self._vectors.append(np.asarray(vector, dtype=np.float32))
            self.computed += len(todo)
        chunk = np.stack([self._vectors[self._rows[k]] for k in keys]) if keys else np.zeros((0, self.dimension))
        return chunk, [np.stack([self._vectors[self._rows[k]] for k in u]) if u else np.zeros((0, self.dimension))
                       for u in unit_keys]

    def has_passage(self, title: str, text: str) -> bool:
        return f"p\x1f{title}\x1f{text}" in self._rows

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._get([f"q\x1f{x}" for x in texts], lambda ids: self.inner.embed_queries([texts[i] for i in ids]))

    def _get(self, keys: list[str], compute) -> np.ndarray:
        missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._rows and key not in missing:
                missing[key] = i
        if missing:
            vectors = compute(list(missing.values()))
            for key, vector in zip(missing, vectors, strict=True):
                self._rows[key] = len(self._vectors)
                self._vectors.append(np.asarray(vector, dtype=np.float32))
            self.computed += len(missing)
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._vectors[self._rows[k]] for k in keys])

    def save(self) -> None:
        if not self.folder or len(self._vectors) == self._saved:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._rows, key=self._rows.get)
        with open(self.folder / "vectors.tmp.npy", "wb") as f:
            np.save(f, np.stack(self._vectors), allow_pickle=False)
        (self.folder / "keys.tmp.jsonl").write_text("".join(json.dumps(k, ensure_ascii=False) + "\n" for k in keys),
                                                    "utf-8")
        os.replace(self.folder / "vectors.tmp.npy", self.folder / "vectors.npy")  # keys last: they decide validity
        os.replace(self.folder / "keys.tmp.jsonl", self.folder / "keys.jsonl")
        self._saved = len(keys)


class MemoLexical:
    """A LexicalIndex whose per-query scores are remembered (levers re-search the same queries)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self._scores: dict[str, np.ndarray] = {}

    def scores(self, query: str) -> np.ndarray:
        if query not in self._scores:
            self._scores[query] = self.inner.scores(query)
        return self._scores[query]

    def __getattr__(self, name: str):  # the rest (matched_terms, contains...) as the inner index has it
        return getattr(self.inner, name)


# -- measuring -----------------------------------------------------------------------------------
def document_rank(sources, gold: str) -> int | None:
    """1-based rank of ``gold`` among the distinct documents of a chunk ranking."""
    seen: set[str] = set()
    for source in sources:
        if source not in seen:
            seen.add(source)
            if source == gold:
                return len(seen)
    return None


def document_margin(hits) -> float:
    """Cosine of the best document minus that of the second (1 when only one document was found)."""
    best: dict[str, float] = {}
    for hit in hits:
        best[hit.chunk.source] = max(best.get(hit.chunk.source, -1.0), hit.dense_score)
    top = sorted(best.values(), reverse=True)[:2]
    return top[0] - top[1] if len(top) == 2 else 1.0


def contains_answer(citations, answers: tuple[str, ...]) -> bool:
    return any(a in c.quote for c in citations for a in answers)


class Bench:
    def __init__(self, settings: Settings, cached: CachedEmbedder, index: LoadedIndex) -> None:
        self.settings = settings
        self.cached = cached
        self.index = replace(index, lexical=MemoLexical(index.lexical))
        self.sources = [c.source for c in index.chunks]
        self.retriever = HybridRetriever(self.index, cached)
        self.reader = ExtractiveReader(cached, min_evidence=float("-inf"))
        self.assistant = Assistant(settings, embedder=cached, reader=self.reader)
        self.threshold = settings.min_evidence or DEFAULT_MIN_EVIDENCE

    def dense_ranks(self, items: list[Item], vectors: np.ndarray) -> list[int | None]:
        n = len(self.sources)
        ranks = []
        for k in range(0, len(items), 256):
            _, ids = self.index.vectors.search(vectors[k:k + 256], n)
            ranks += [document_rank((self.sources[i] for i in row if i >= 0), item.source)
                      for row, item in zip(ids, items[k:k + 256])]
        return ranks

    def bm25_rank(self, item: Item) -> int | None:
        scores = self.index.lexical.scores(item.question)
        order = np.argsort(-scores, kind="stable")
        return document_rank((self.sources[i] for i in order if scores[i] > 0), item.source)

    def ask(self, item: Item, vector: np.ndarray, exclude: frozenset[str] = frozenset()) -> dict:
        """Ask through ``Assistant.ask``; the same search again gives the evidence the reader saw."""
        t0 = time.perf_counter()
        answer = self.assistant.ask(item.question, exclude=exclude)
        ms = (time.perf_counter() - t0) * 1000
        found = self.retriever.search(item.question, 2 * self.retriever.depth, query_vector=vector, exclude=exclude)
        return {"rank": document_rank((h.chunk.source for h in found.hits), item.source),
                "evidence": found.best_dense, "margin": document_margin(found.hits),
                "sentence": answer.citations[0].score if answer.citations else 0.0,
                "correct": contains_answer(answer.citations, item.answers), "abstained": answer.abstained,
                "cited": tuple(c.source for c in answer.citations), "ms": ms}

    def run(self, items: list[Item], label: str = "") -> list[Result]:
        """Ask each question with and without its own context."""
        t0 = time.monotonic()
        vectors = self.cached.embed_queries([i.question for i in items])
        dense = self.dense_ranks(items, vectors)
        results = []
        for n, (item, vector, d_rank) in enumerate(zip(items, vectors, dense, strict=True), 1):
            a = self.ask(item, vector)
            result = Result(item, d_rank, self.bm25_rank(item), a["rank"], a["evidence"], a["correct"],
                            a["abstained"], a["cited"], a["margin"], a["sentence"], ms=a["ms"])
            b = self.ask(item, vector, frozenset({item.source}))
            result.evidence_out, result.margin_out, result.sentence_out = b["evidence"], b["margin"], b["sentence"]
            result.correct_out, result.abstained_out = b["correct"], b["abstained"]
            results.append(result)
            if n % 100 == 0 or n == len(items):
                rate = n / (time.monotonic() - t0)
                log.info("%s %d/%d questions, %.1f/s, %d texts embedded, about %.0f s left", label, n, len(items),
                         rate, self.cached.computed, (len(items) - n) / rate)
            if n % 500 == 0:
                self.cached.save()
        self.cached.save()
        return results

    def fusion_lever(self, items: list[Item], fusion: str = "score", dense_weight: float = 1.0,
                     lexical_weight: float = 0.05, reader: ExtractiveReader | None = None) -> dict:
        """Retrieval and reader accuracy (no threshold) with another fusion, other weights or another reader."""
        retriever = HybridRetriever(self.index, self.cached, fusion=fusion, dense_weight=dense_weight,
                                    lexical_weight=lexical_weight)
        reader = reader or self.reader
        vectors = self.cached.embed_queries([i.question for i in items])
        ranks, correct = [], 0
        for item, vector in zip(items, vectors, strict=True):
            found = retriever.search(item.question, 2 * retriever.depth, query_vector=vector)
            ranks.append(document_rank((h.chunk.source for h in found.hits), item.source))
            reading = reader.read(Passages(item.question, vector, found.hits[:self.settings.top_k],
                                                found.best_dense, self.index.lines, self.index.pages,
                                                self.index.units))
            correct += contains_answer(reading.citations, item.answers)
        return dict(rank_metrics(ranks), reader_any=correct / max(len(items), 1))


def rank_metrics(ranks: list[int | None]) -> dict:
    n = max(len(ranks), 1)
    return {"r@1": sum(r == 1 for r in ranks) / n, "r@5": sum(r is not None and r <= 5 for r in ranks) / n,
            "mrr": sum(1 / r for r in ranks if r) / n}


def quality(results: list[Result], rule: Rule | float) -> dict:
    """Reader and abstention numbers under an abstention rule (a number: the cosine threshold)."""
    rule = cosine_rule(rule) if isinstance(rule, float) else rule
    n = max(len(results), 1)
    answered = [r for r in results if rule.answered(r)]
    right = sum(r.correct for r in answered)
    out_answered = sum(rule.answered_out(r) for r in results)
    abstained_in = len(results) - len(answered)
    abstained_out = len(results) - out_answered
    return {
        "rule": rule.name, "answered": len(answered) / n,
        "reader_accuracy": right / max(len(answered), 1), "reader_accuracy_all": right / n,
        "false_answer_rate": out_answered / n,
        "false_answers_with_gold": sum(rule.answered_out(r) and r.correct_out for r in results) / n,
        "abstention_precision": abstained_out / max(abstained_in + abstained_out, 1),
        "abstention_recall": abstained_out / n,
    }


def summarize(results: list[Result], t: float) -> dict:
    summary = {"questions": len(results),
               "dense": rank_metrics([r.dense_rank for r in results]),
               "bm25": rank_metrics([r.bm25_rank for r in results]),
               "hybrid": rank_metrics([r.hybrid_rank for r in results]),
               "reader_any": sum(r.correct for r in results) / max(len(results), 1)}
    summary.update(quality(results, t))
    return summary


def answer_ceiling(index: LoadedIndex, items: list[Item]) -> float:
    """Share of questions whose gold answer lies whole inside one chunk of its own context."""
    by_source: dict[str, list[str]] = {}
    for chunk in index.chunks:
        by_source.setdefault(chunk.source, []).append(chunk.text)
    ok = sum(any(a in text for a in item.answers for text in by_source.get(item.source, [])) for item in items)
    return ok / max(len(items), 1)


def timing_sample(settings: Settings, inner, items: list[Item], bench: Bench, results: dict[str, Result]) -> dict:
    """Latency of the unmodified pipeline (default reader, no cache) and its agreement with the bench path."""
    if not items:
        return {}
    assistant = Assistant(settings, embedder=inner)
    assistant.ask(items[0].question)  # load the model and the index outside the measurement
    totals, agree = [], 0
    for item in items:
        answer = assistant.ask(item.question)
        totals.append(answer.timings_ms["total"])
        r = results[item.id]
        agree += (answer.abstained == (not cosine_rule(bench.threshold).answered(r))
                  and (answer.abstained or tuple(c.source for c in answer.citations) == r.cited))
    return {"questions": len(items), "p50_ms": statistics.median(totals), "p95_ms": percentile(totals, 0.95),
            "mean_ms": statistics.fmean(totals), "agreement": agree / len(items)}


# -- reporting -----------------------------------------------------------------------------------
def f3(x: float) -> str:
    return f"{x:.3f}"


def check(value: float, target: float) -> str:
    return "yes" if value >= target else "**no**"


def render(report: dict) -> str:
    zh, en, en_zh, t = report["zh"], report["en"], report["en_originals"], report["threshold"]
    gap = max(en_zh["hybrid"]["r@5"] - en["hybrid"]["r@5"], en_zh["hybrid"]["r@1"] - en["hybrid"]["r@1"])
    lines = [
        "## CMRC 2018 (dev): retrieval, reader and abstention", "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"{report['machine']['ram_gib']} GiB RAM (shared with other jobs; timings are noisy); "
        f"{report['machine']['threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["machine"]["versions"].items()),
        f"- command: `{report['command']}`",
        f"- data: {report['data']}; {report['contexts']} contexts as documents ({report['chunks']} chunks), "
        f"{zh['questions']} questions; {en['questions']} English translations (bench/cmrc_en_questions.jsonl)",
        f"- settings: model {report['model']}, chunk size {report['settings']['chunk_size']}, overlap "
        f"{report['settings']['chunk_overlap']}, top_k {report['settings']['top_k']}, min_evidence {t}, fusion "
        f"{report['settings']['fusion']}",
        f"- run time: {report['seconds']['total']:.0f} s in all (index {report['seconds']['index']:.0f} s, questions "
        f"{report['seconds']['questions']:.0f} s, levers {report['seconds']['levers']:.0f} s); the reader's sentence "
        f"vectors are cached across questions ({report['embedded_texts']} texts embedded in this run)",
        "",
        "Retrieval (a hit = the question's own context among the documents of the ranked chunks):", "",
        "| | R@1 | R@5 | MRR | target |", "|---|---|---|---|---|",
    ]
    for name, key in (("dense only", "dense"), ("BM25 only", "bm25"), ("hybrid (default fusion)", "hybrid")):
        m = zh[key]
        target = f"R@5 >= {TARGETS['hybrid_r5']}: {check(m['r@5'], TARGETS['hybrid_r5'])}" if key == "hybrid" else ""
        lines.append(f"| {name} | {f3(m['r@1'])} | {f3(m['r@5'])} | {f3(m['mrr'])} | {target} |")
    a = TARGETS["abstention"]
    lines += [
        "", f"Reader and abstention (threshold {t}; each question asked with and without its own context):", "",
        "| | value | target |", "|---|---|---|",
        f"| answered (own context present) | {f3(zh['answered'])} | |",
        f"| reader accuracy (answered; quotes contain a gold answer) | {f3(zh['reader_accuracy'])} | "
        f">= {TARGETS['reader_accuracy']}: {check(zh['reader_accuracy'], TARGETS['reader_accuracy'])} |",
        f"| reader accuracy over all questions (abstention = wrong) | {f3(zh['reader_accuracy_all'])} | |",
        f"| reader accuracy without threshold | {f3(zh['reader_any'])} | |",
        f"| gold answer lies whole inside one chunk (ceiling) | {f3(report['ceiling'])} | |",
        f"| false-answer rate (own context removed, answered anyway) | {f3(zh['false_answer_rate'])} | |",
        f"| ... of which the quote still contains a gold answer | {f3(zh['false_answers_with_gold'])} | |",
        f"| abstention precision | {f3(zh['abstention_precision'])} | >= {a}: {check(zh['abstention_precision'], a)} |",
        f"| abstention recall | {f3(zh['abstention_recall'])} | >= {a}: {check(zh['abstention_recall'], a)} |",
        f"| mean quote length (characters) | {report['quote_chars']:.0f} | |",
        "",
        f"Cross-lingual: {en['questions']} English questions over the Chinese documents, beside their Chinese "
        f"originals (same items). Hybrid gap: R@1 {en_zh['hybrid']['r@1'] - en['hybrid']['r@1']:+.3f}, R@5 "
        f"{en_zh['hybrid']['r@5'] - en['hybrid']['r@5']:+.3f} (target: within {TARGETS['cross_lingual_gap']:.2f}: "
        f"{'yes' if gap <= TARGETS['cross_lingual_gap'] else '**no**'}):", "",
        "| | dense R@1 | dense R@5 | BM25 R@5 | hybrid R@1 | hybrid R@5 | hybrid MRR | answered | reader acc. "
        "(answered) | reader acc. (all) | false-answer rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in (("Chinese originals", en_zh), ("English", en)):
        lines.append(f"| {name} | {f3(m['dense']['r@1'])} | {f3(m['dense']['r@5'])} | {f3(m['bm25']['r@5'])} | "
                     f"{f3(m['hybrid']['r@1'])} | {f3(m['hybrid']['r@5'])} | {f3(m['hybrid']['mrr'])} | "
                     f"{f3(m['answered'])} | {f3(m['reader_accuracy'])} | {f3(m['reader_accuracy_all'])} | "
                     f"{f3(m['false_answer_rate'])} |")
    lines += render_levers(report)
    timing = report.get("timing")
    if timing:
        lines += ["", f"Latency of the unmodified pipeline (`Assistant.ask`, default reader, no vector cache) on "
                      f"{timing['questions']} questions: p50 {timing['p50_ms']:.0f} ms, p95 {timing['p95_ms']:.0f} ms; "
                      f"at the mean ({timing['mean_ms']:.0f} ms) the {2 * zh['questions']} asks of this run would "
                      f"take about {2 * zh['questions'] * timing['mean_ms'] / 60000:.0f} min without the cache. "
                      f"Same decision and same cited documents as the cached path: {timing['agreement']:.0%}."]
    return "\n".join(lines)


def render_levers(report: dict) -> list[str]:
    levers = report.get("levers")
    if not levers:
        return []
    lines = ["", "Lever: fusion of the dense and BM25 sides (`score`: dense x cosine + lexical x BM25 / the "
                 "query's top BM25; `rrf`: weights x 1/(60 + rank)); reader accuracy without threshold:", "",
             "| fusion, dense : lexical | zh R@1 | zh R@5 | zh MRR | zh reader | en R@1 | en R@5 | en MRR "
             "| en reader |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in levers["fusion"]:
        zh, en = row["zh"], row["en"]
        lines.append(f"| {row['fusion']} {row['dense']:g} : {row['lexical']:g} | {f3(zh['r@1'])} | {f3(zh['r@5'])} | "
                     f"{f3(zh['mrr'])} | "
                     f"{f3(zh['reader_any'])} | {f3(en['r@1'])} | {f3(en['r@5'])} | {f3(en['mrr'])} | "
                     f"{f3(en['reader_any'])} |")
    if levers.get("unit_weight"):
        lines += ["", "Lever: the reader's unit weight w (a passage's score = w x its best sentence's cosine + "
                      "(1 - w) x the passage's cosine; sentence vectors from the index); reader accuracy without "
                      "threshold:", "", "| w | zh reader | en reader |", "|---|---|---|"]
        lines += [f"| {row['weight']:g} | {f3(row['zh']['reader_any'])} | {f3(row['en']['reader_any'])} |"
                  for row in levers["unit_weight"]]
    lines += ["", "Lever: the evidence threshold `min_evidence` (abstain below it); zh = all Chinese questions, "
                  "en = the English ones:", "",
              "| threshold | zh answered | zh reader acc. | zh acc. (all) | zh false-answer | zh abst. P | zh abst. R "
              "| en answered | en false-answer | en abst. P | en abst. R |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, zh, en in zip(THRESHOLDS, levers["thresholds"]["zh"], levers["thresholds"]["en"], strict=True):
        lines.append(f"| {t:.2f} | {f3(zh['answered'])} | {f3(zh['reader_accuracy'])} | "
                     f"{f3(zh['reader_accuracy_all'])} | {f3(zh['false_answer_rate'])} | "
                     f"{f3(zh['abstention_precision'])} | {f3(zh['abstention_recall'])} | {f3(en['answered'])} | "
                     f"{f3(en['false_answer_rate'])} | {f3(en['abstention_precision'])} | "
                     f"{f3(en['abstention_recall'])} |")
    lines += ["", "Lever: other abstention rules on the same runs (margin = the best document's cosine minus the "
                  "second document's; cited-sentence score = the reader's w x sentence cosine + (1 - w) x passage "
                  f"cosine, w = {ExtractiveReader(None).unit_weight:g}):", "",
              "| answer when | zh answered | zh reader acc. | zh acc. (all) | zh false-answer | zh abst. P "
              "| zh abst. R "
              "| en answered | en acc. (all) | en false-answer |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for zh, en in zip(levers["rules"]["zh"], levers["rules"]["en"], strict=True):
        lines.append(f"| {zh['rule']} | {f3(zh['answered'])} | {f3(zh['reader_accuracy'])} | "
                     f"{f3(zh['reader_accuracy_all'])} | {f3(zh['false_answer_rate'])} | "
                     f"{f3(zh['abstention_precision'])} | {f3(zh['abstention_recall'])} | {f3(en['answered'])} | "
                     f"{f3(en['reader_accuracy_all'])} | {f3(en['false_answer_rate'])} |")
    return lines


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CMRC 2018 benchmark: retrieval (dense / BM25 / hybrid), reader accuracy, abstention with the "
                    "question's own context removed, and English questions over the Chinese documents. Writes the "
                    "cmrc section of BENCHMARKS.md.")
    parser.add_argument("--cmrc", type=Path, default=None,
                        help=f"CMRC dev JSON (default: $CMRC_PATH, else {DEFAULT_CMRC} relative to the repository)")
    parser.add_argument("--english", type=Path, default=EN_QUESTIONS, help="English questions (JSONL)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the corpus, index and vector cache (default: <assistant home>/bench/cmrc)")
    parser.add_argument("--limit", type=int, default=None,
                        help="ask only N Chinese questions, evenly spread (the whole corpus is still indexed); "
                             "implies --no-write")
    parser.add_argument("--timing", type=int, default=20,
                        help="questions asked through the unmodified pipeline for latency (default 20; 0 = none)")
    parser.add_argument("--no-levers", action="store_true", help="skip the fusion, threshold and abstention-rule rows")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the persisted vector cache")
    parser.add_argument("--rows", type=Path, default=None, help="write one JSON line per question to this file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    return parser.parse_args(argv)


def build(settings: Settings, contexts: dict[str, str], cache: bool) -> tuple[Bench, CachedEmbedder, float]:
    """Write the corpus, build (or reuse) its index with the project's pipeline; the bench and the build time."""
    write_corpus(contexts, settings.corpus)
    inner = make_embedder(settings)
    folder = settings.index.parent / "vectors" / f"{inner.weights_sha256[:16] or 'model'}-{inner.dtype}"
    cached = CachedEmbedder(inner, folder if cache else None)
    t0 = time.monotonic()
    built = Assistant(settings, embedder=cached, reader=ExtractiveReader(cached)).build(
        progress=lambda done, total: log.info("embedded %d/%d chunks", done, total) if done % 512 < 64 else None)
    log.info("index: %d documents, %d chunks (%d embedded now) in %.0f s", built.documents, built.chunks,
             built.embedded_chunks, built.seconds)
    return Bench(settings, cached, load_index(settings.index)), cached, time.monotonic() - t0


def ask_all(bench: Bench, asked: list[Item], english: list[tuple[Item, Item]]):
    """Results for the Chinese questions, the English ones, and the English ones' Chinese originals."""
    zh = bench.run(asked, label="zh")
    en = bench.run([e for e, _ in english], label="en")
    by_id = {r.item.id: r for r in zh}
    missing = [o for _, o in english if o.id not in by_id]  # originals outside a --limit subset
    by_id.update({r.item.id: r for r in bench.run(missing, label="zh originals")} if missing else {})
    return zh, en, [by_id[o.id] for _, o in english]


def measure_levers(bench: Bench, asked: list[Item], english: list[Item], zh: list[Result], en: list[Result]) -> dict:
    return {"fusion": [{"fusion": f, "dense": d, "lexical": w, "zh": bench.fusion_lever(asked, f, d, w),
                        "en": bench.fusion_lever(english, f, d, w)} for f, d, w in FUSION],
            "unit_weight": [{"weight": u, **{lang: bench.fusion_lever(qs, reader=ExtractiveReader(
                bench.cached, min_evidence=float("-inf"), unit_weight=u)) for lang, qs in (("zh", asked),
                                                                                           ("en", english))}}
                            for u in UNIT_WEIGHTS],
            "thresholds": {"zh": [quality(zh, t) for t in THRESHOLDS], "en": [quality(en, t) for t in THRESHOLDS]},
            "rules": {"zh": [quality(zh, rule) for rule in RULES], "en": [quality(en, rule) for rule in RULES]}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.monotonic()
    path = args.cmrc or Path(os.environ.get("CMRC_PATH") or REPO / DEFAULT_CMRC)
    if not path.is_file():
        print(f"error: no CMRC file at {path}: set CMRC_PATH or pass --cmrc", file=sys.stderr)
        return 2
    base = Settings.from_env()
    work = (args.work or base.home / "bench" / "cmrc").expanduser()
    settings = base.with_(corpus=work / "corpus", index=work / f"index-c{base.chunk_size}-o{base.chunk_overlap}")
    contexts, items = load_cmrc(path)
    english = spread(load_english(args.english, {i.id: i for i in items}), args.limit and max(10, args.limit // 10))
    asked = spread(items, args.limit)

    bench, cached, t_index = build(settings, contexts, not args.no_cache)
    t0 = time.monotonic()
    zh, en, originals = ask_all(bench, asked, english)
    t_questions = time.monotonic() - t0
    t0 = time.monotonic()
    levers = None if args.no_levers else measure_levers(bench, asked, [e for e, _ in english], zh, en)
    t_levers = time.monotonic() - t0
    cached.save()
    timing = timing_sample(settings, cached.inner, spread(asked, args.timing), bench,
                           {r.item.id: r for r in zh}) if args.timing else None

    given = sys.argv[1:] if argv is None else argv
    t = bench.threshold
    quotes = quote_lengths(bench, spread(asked, 200))
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y"),
        "machine": machine(),
        "command": " ".join(["python -m bench.cmrc", *given]) + ("" if given else "  (make bench-quality)"),
        "data": f"{path.name} (CMRC 2018 dev)", "contexts": len(contexts), "chunks": len(bench.index.chunks),
        "model": bench.index.model_id,
        "settings": {"chunk_size": settings.chunk_size, "chunk_overlap": settings.chunk_overlap,
                     "top_k": settings.top_k,
                     "fusion": f"{bench.retriever.fusion}, dense x {bench.retriever.dense_weight:g} + lexical x "
                               f"{bench.retriever.lexical_weight:g}"},
        "threshold": t, "zh": summarize(zh, t), "en": summarize(en, t), "en_originals": summarize(originals, t),
        "ceiling": answer_ceiling(bench.index, asked), "quote_chars": statistics.fmean(quotes) if quotes else 0.0,
        "levers": levers, "timing": timing, "embedded_texts": cached.computed,
        "seconds": {"index": t_index, "questions": t_questions, "levers": t_levers,
                    "total": time.monotonic() - t_start},
    }
    if args.rows:
        write_rows(args.rows, zh + en)
    text = render(report)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else text)
    if not args.no_write and not args.limit:
        write_section(text, BENCHMARKS, START, END)
        log.info("wrote the cmrc section of %s", BENCHMARKS)
    return 0


def quote_lengths(bench: Bench, items: list[Item]) -> list[int]:
    """Characters quoted per answer (from the cache, so cheap): how long an 'answer' of the reader is."""
    lengths = []
    for item in items:
        answer = bench.assistant.ask(item.question)
        lengths += [sum(len(c.quote) for c in answer.citations)] if answer.citations else []
    return lengths


def write_rows(path: Path, results: list[Result]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"id": r.item.id, "question": r.item.question, "source": r.item.source,
                                "dense_rank": r.dense_rank, "bm25_rank": r.bm25_rank, "hybrid_rank": r.hybrid_rank,
                                "evidence": round(r.evidence, 4), "margin": round(r.margin, 4),
                                "sentence": round(r.sentence, 4), "correct": r.correct, "abstained": r.abstained,
                                "cited": r.cited, "evidence_out": round(r.evidence_out, 4),
                                "margin_out": round(r.margin_out, 4), "sentence_out": round(r.sentence_out, 4),
                                "correct_out": r.correct_out, "abstained_out": r.abstained_out,
                                "ms": round(r.ms, 1)}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
