"""Reader-model benchmark on CMRC 2018 dev (never trained on): span reading, answerability, English.

1. Span reading: a seeded sample of dev questions, each read with its own (gold) paragraph; exact
   match and F1 as the CMRC 2018 evaluation scores them. Beside it, the best a sentence-level
   reader could do (the passage reader quotes whole sentences): the F1 of the gold answer's own
   sentence.
2. Answerability: each sampled question paired with its own paragraph and with a hard negative,
   the other dev paragraph that the project's BM25 (jieba) ranks first for it and that holds none
   of its gold answers. ROC-AUC of the reader's margin and of the embedding cosine; abstention
   precision / recall of three decisions: the model's margin at its threshold, the cosine at its
   threshold, and the shipped combination (span_reader.Answerability, with its own floor and threshold
   for Chinese short-fact questions against Chinese paragraphs).
3. The same for the English translations (bench/cmrc_en_questions.jsonl), negatives from their
   Chinese originals.
4. With --e2e N: N of the sampled questions asked end to end over the whole dev corpus (retrieval,
   then the span reader or today's passage reader), scored on what the user is shown.

Usage: python -m bench.reader [--cmrc PATH] [--limit N] [--pairs N] [--e2e N] [--weights FILE]
       [--fact-span-prob P ...] [--no-english] [--rerank]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from assistant.evaluation import answer_scores, roc_auc  # noqa: E402
from bench.cmrc_data import EN_QUESTIONS, load_dev  # noqa: E402
from bench.common import REPO  # noqa: E402

SEED = 7
_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?]?")


def sentence_f1(context: str, answers: list[str]) -> float:
    """F1 of the sentence holding the first gold answer: a sentence-quoting reader's ceiling."""
    for m in _SENTENCE.finditer(context):
        if answers[0] in m.group():
            return answer_scores(m.group(), answers)[1]
    return answer_scores(context, answers)[1]


def hard_negatives(contexts: dict[str, str], questions: list[dict]) -> dict[str, str]:
    """question id -> the BM25-first other paragraph holding none of its answers."""
    from assistant.lexical import tokenize

    ids = list(contexts)
    docs = [tokenize(contexts[i]) for i in ids]
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for d, toks in enumerate(docs):
        for t in toks:
            rows.append(d)
            cols.append(vocab.setdefault(t, len(vocab)))
    from scipy.sparse import csr_matrix

    tf = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(docs), len(vocab))).tocsc()
    lengths = np.array([len(d) for d in docs], dtype=float)
    df = np.diff(tf.indptr)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    k1, b = 1.5, 0.75
    out = {}
    for q in questions:
        score = np.zeros(len(docs))
        for t in set(tokenize(q["question"])):
            c = vocab.get(t)
            if c is None:
                continue
            col = tf.getcol(c)
            f, d = col.data, col.indices
            score[d] += idf[c] * f * (k1 + 1) / (f + k1 * (1 - b + b * lengths[d] / lengths.mean()))
        for d in np.argsort(-score):
            if ids[d] != q["context_id"] and not any(a in contexts[ids[d]] for a in q["answers"]):
                out[q["id"]] = ids[d]
                break
    return out


def abstention(refuse: np.ndarray, answerable: np.ndarray, name: str) -> dict:
    """Abstention precision and recall of one decision over (answerable, not answerable) pairs."""
    tp = int((refuse & ~answerable).sum())
    return {f"{name}_precision": tp / max(1, int(refuse.sum())), f"{name}_recall": tp / max(1, int((~answerable).sum())),
            f"{name}_answerable_refused": int((refuse & answerable).sum())}


def shipped_refusals(cosine: np.ndarray, margin: np.ndarray, checked: np.ndarray, min_evidence: float, floor,
                     threshold) -> np.ndarray:
    """The shipped decision (span_reader.Answerability), one paragraph at a time: a question the margin may refuse
    (span_reader.margin_checked) is refused below TERM_MARGIN; else the cosine answers from ``min_evidence``, and
    from ``floor`` the model's margin at the threshold (floor and threshold may be arrays: one pair each, for
    Chinese short-fact pairs span_reader.ZH_FLOOR and ZH_THRESHOLD)."""
    from assistant.span_reader import TERM_MARGIN

    return (checked & (margin < TERM_MARGIN)) | ~((cosine >= min_evidence) | ((cosine >= floor) & (margin >= threshold)))


def end_to_end(settings, embedder, weights: Path, contexts: dict[str, str], sample: list[dict], limit: int,
               fact_span_probs: tuple[float, ...] = (), rerank: bool = False) -> dict:
    """Questions asked over the whole dev corpus (848 paragraphs as documents) through Assistant.ask
    with the span reader: answer EM/F1 of what the user sees (the span when one is shown, else the
    quoted passages; 0 when it abstains), beside today's passage reader on the same questions."""
    from bench import cmrc
    from assistant.reader import DEFAULT_MIN_EVIDENCE, ExtractiveReader
    from assistant.span_reader import SpanReader

    work = settings.home / "bench" / "cmrc"
    settings = settings.with_(corpus=work / "corpus", index=work / f"index-c{settings.chunk_size}-o{settings.chunk_overlap}")
    t0 = time.time()
    bench, cached, _ = cmrc.build(settings, contexts, True)
    cached.save()
    built = time.time() - t0
    min_evidence = settings.min_evidence or DEFAULT_MIN_EVIDENCE
    readers = {"span": SpanReader(embedder, weights, min_evidence=min_evidence)}
    for p in fact_span_probs:  # the same decision and loaded model, another span gate for short-fact questions
        variant = SpanReader(embedder, weights, min_evidence=min_evidence, fact_span_prob=p)
        variant.gate = readers["span"].gate
        readers[f"span, fact_span_prob {p:g}"] = variant
    if rerank:  # the top 3 passages always read, the best by margin cited (the same loaded model)
        variant = SpanReader(embedder, weights, min_evidence=min_evidence, rerank=True)
        variant.gate._loaded = readers["span"].gate.model()
        readers["span, rerank"] = variant
    readers["extractive"] = ExtractiveReader(cached, min_evidence)
    out: dict = {"questions": min(limit, len(sample)), "index_seconds": round(built),
                 "chunks": len(bench.index.chunks)}
    for name, reader in readers.items():
        ems, f1s, spans, span_f1s, abstained, ms = [], [], 0, [], 0, []
        for q in sample[:limit]:
            answer = bench.assistant.ask(q["question"], reader=reader)
            ms.append(answer.timings_ms.get("read", 0.0))
            if answer.abstained:
                ems.append(0.0)
                f1s.append(0.0)
                abstained += 1
                continue
            shown = answer.span.quote if answer.span is not None else answer.text
            em, f1 = answer_scores(shown, q["answers"])
            ems.append(em)
            f1s.append(f1)
            if answer.span is not None:
                spans += 1
                span_f1s.append(f1)
        out[name] = {"em": float(np.mean(ems)), "f1": float(np.mean(f1s)), "abstained": abstained,
                     "spans_shown": spans, "span_f1": float(np.mean(span_f1s)) if span_f1s else None,
                     "read_ms_p50": float(np.median(ms))}
        print(f"end to end, {name}: {json.dumps(out[name])}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmrc", default=str(REPO.parent / "shared" / "bench" / "cmrc2018" / "cmrc2018_dev.json"))
    ap.add_argument("--limit", type=int, default=600, help="dev questions read with their own paragraph")
    ap.add_argument("--pairs", type=int, default=300, help="of those, paired with a hard negative")
    ap.add_argument("--weights", default="", help="reader weights (default: the committed ones)")
    ap.add_argument("--e2e", type=int, default=0, help="of the sampled questions, also asked end to end over the "
                    "whole dev corpus (builds its index once, cached in ~/.cache/assistant/bench/cmrc)")
    ap.add_argument("--fact-span-prob", type=float, action="append", default=[],
                    help="end to end, also with this fact_span_prob (repeatable; default: the shipped one only)")
    ap.add_argument("--no-english", action="store_true", help="skip the English questions")
    ap.add_argument("--rerank", action="store_true", help="end to end, also with the reader model reranking")
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "assistant" / "bench-reader.json"))
    args = ap.parse_args(argv)

    import torch

    from assistant.config import Settings
    from assistant.models import resolve_reader_weights
    from assistant.pipeline import make_embedder
    from assistant.span_model import score_windows
    from assistant.reader import DEFAULT_MIN_EVIDENCE
    from assistant.language import acronyms
    from assistant.span_reader import (DEFAULT_MODEL_FLOOR, TERM_MARGIN, ZH_FLOOR, ZH_THRESHOLD, load_reader_model,
                                       margin_checked, zh_fact)

    torch.manual_seed(0)
    settings = Settings.from_env()
    embedder = make_embedder(settings)
    weights = resolve_reader_weights(args.weights)
    model, tokenizer, threshold = load_reader_model(embedder, weights)
    min_evidence, floor = settings.min_evidence or DEFAULT_MIN_EVIDENCE, DEFAULT_MODEL_FLOOR
    contexts, questions = load_dev(Path(args.cmrc))
    rng = random.Random(SEED)
    sample = rng.sample(questions, min(args.limit, len(questions)))
    paired = sample[:args.pairs]
    t0 = time.time()
    negatives = hard_negatives(contexts, paired)
    by_id = {q["id"]: q for q in questions}
    en = [json.loads(line) for line in EN_QUESTIONS.read_text("utf-8").splitlines() if line.strip()]
    negatives.update(hard_negatives(contexts, [by_id[e["source_question_id"]] for e in en
                                               if e["source_question_id"] not in negatives]))
    result: dict = {"threshold": threshold, "weights": weights.name, "date": dt.datetime.now(dt.UTC).isoformat(),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "dtype": embedder.dtype}

    memo: dict = {}

    def read(question: str, context: str):
        if (question, context) not in memo:
            memo[question, context] = score_windows(model, tokenizer, question, [context])[0]
        return memo[question, context]

    vectors: dict = {}

    def cosine(question: str, context: str) -> float:
        """The embedding model's cosine of the question to the paragraph (the product's evidence, at
        paragraph rather than chunk level)."""
        for key, kind in ((question, "q"), (context, "d")):
            if (kind, key) not in vectors:
                embed = embedder.embed_queries if kind == "q" else embedder.embed_documents
                vectors[kind, key] = embed([key])[0]
        return float(vectors["q", question] @ vectors["d", context])

    # The product's rule for upper-case names no document contains (language.acronyms, span_reader.TERM_MARGIN),
    # with the dev corpus as the documents (a substring check, where the product checks its BM25 tokens).
    corpus_text = "\n".join(contexts.values()).lower()

    def unknown(question: str) -> bool:
        return margin_checked(question, [t for t in acronyms(question) if t.lower() not in corpus_text])

    def run(items, lang):
        ems, f1s, sent, margins, labels, seconds, cosines, names, zh = [], [], [], [], [], [], [], [], []
        for n, q in enumerate(items):
            context = contexts[q["context_id"]]
            t = time.perf_counter()
            found = read(q["question"], context)
            seconds.append(time.perf_counter() - t)
            em, f1 = answer_scores(context[found.start:found.end], q["answers"])
            ems.append(em)
            f1s.append(f1)
            sent.append(sentence_f1(context, q["answers"]))
            neg = negatives.get(q.get("source_question_id", q["id"]))
            if neg is not None and (lang == "en" or n < args.pairs):
                margins += [found.margin, read(q["question"], contexts[neg]).margin]
                labels += [True, False]
                cosines += [cosine(q["question"], context), cosine(q["question"], contexts[neg])]
                names += [unknown(q["question"])] * 2
                zh += [zh_fact(q["question"], c) for c in (context, contexts[neg])]
            if (n + 1) % 50 == 0:
                print(f"{lang}: {n + 1}/{len(items)} read, {time.time() - t0:.0f} s", flush=True)
        margins_a, labels_a, cos_a = np.array(margins, float), np.array(labels, bool), np.array(cosines, float)
        refuse = margins_a < threshold
        names_a = np.array(names, bool)
        named = names_a & (margins_a < TERM_MARGIN)  # refused for a name no document contains
        zh_a = np.array(zh, bool)
        bounds = np.where(zh_a, ZH_FLOOR, floor), np.where(zh_a, ZH_THRESHOLD, threshold)
        out = {"questions": len(items), "em": float(np.mean(ems)), "f1": float(np.mean(f1s)),
               "sentence_f1": float(np.mean(sent)), "pairs": int((~labels_a).sum()),
               "auc": roc_auc(margins_a, labels_a), "cosine_auc": roc_auc(cos_a, labels_a),
               **abstention(refuse, labels_a, "model"),
               **abstention(cos_a < min_evidence, labels_a, "cosine"),
               **abstention(shipped_refusals(cos_a, margins_a, names_a, min_evidence, *bounds),
                            labels_a, "shipped"),
               "named_pairs": int(names_a.sum()), "named_refused": int(named.sum()),
               "read_ms_p50": 1000 * float(np.median(seconds))}
        return out

    result["zh"] = run(sample, "zh")
    en_items = [{"id": e["id"], "question": e["question"], "context_id": e["context_id"], "answers": e["answers"],
                 "source_question_id": e["source_question_id"]} for e in en]
    if not args.no_english:
        result["en"] = run(en_items, "en")
    if args.e2e:
        result["end_to_end"] = end_to_end(settings, embedder, weights, contexts, sample, args.e2e,
                                           tuple(args.fact_span_prob), args.rerank)
    result["seconds"] = round(time.time() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
