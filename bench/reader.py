"""Reader-model benchmark on CMRC 2018 dev (never trained on): span reading, answerability, English.

1. Span reading: a seeded sample of dev questions, each read with its own (gold) paragraph; exact
   match and F1 as the CMRC 2018 evaluation scores them. Beside it, the best a sentence-level
   reader could do (the passage reader quotes whole sentences): the F1 of the gold answer's own
   sentence.
2. Answerability: each sampled question paired with its own paragraph and with a hard negative,
   the other dev paragraph that the project's BM25 (jieba) ranks first for it and that holds none
   of its gold answers. ROC-AUC of the reader's margin; abstention precision / recall at the
   shipped threshold; the cosine AUC of the embedding model on (a subset of) the same pairs.
3. The same for the English translations (bench/cmrc_en_questions.jsonl), negatives from their
   Chinese originals.

Usage: python bench/reader.py [--cmrc PATH] [--limit N] [--pairs N] [--cosine N] [--weights FILE]
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
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from assistant.evaluation import answer_scores, roc_auc  # noqa: E402

EN_QUESTIONS = Path(__file__).resolve().with_name("cmrc_en_questions.jsonl")
SEED = 7
_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?]?")


def load_dev(path: Path) -> tuple[dict[str, str], list[dict]]:
    data = json.loads(path.read_text("utf-8"))["data"]
    contexts, questions = {}, []
    for article in data:
        for p in article["paragraphs"]:
            contexts[p["id"]] = p["context"]
            for qa in p["qas"]:
                questions.append({"id": qa["id"], "question": qa["question"], "context_id": p["id"],
                                  "answers": [a["text"] for a in qa["answers"]]})
    return contexts, questions


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmrc", default=str(REPO.parent / "shared" / "bench" / "cmrc2018" / "cmrc2018_dev.json"))
    ap.add_argument("--limit", type=int, default=600, help="dev questions read with their own paragraph")
    ap.add_argument("--pairs", type=int, default=300, help="of those, paired with a hard negative")
    ap.add_argument("--cosine", type=int, default=100, help="of those, also scored by embedding cosine")
    ap.add_argument("--weights", default="", help="reader weights (default: the committed ones)")
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "assistant" / "bench-reader.json"))
    args = ap.parse_args(argv)

    import torch

    from assistant.config import Settings
    from assistant.models import resolve_reader_weights
    from assistant.pipeline import make_embedder
    from assistant.span_model import score_windows
    from assistant.span_reader import load_reader_model

    torch.manual_seed(0)
    settings = Settings.from_env()
    embedder = make_embedder(settings)
    weights = resolve_reader_weights(args.weights)
    model, tokenizer, threshold = load_reader_model(embedder, weights)
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

    def run(items, lang):
        ems, f1s, sent, margins, labels, seconds = [], [], [], [], [], []
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
            if (n + 1) % 50 == 0:
                print(f"{lang}: {n + 1}/{len(items)} read, {time.time() - t0:.0f} s", flush=True)
        margins_a, labels_a = np.array(margins), np.array(labels)
        refuse = margins_a < threshold
        tp = int((refuse & ~labels_a).sum())
        return {"questions": len(items), "em": float(np.mean(ems)), "f1": float(np.mean(f1s)),
                "sentence_f1": float(np.mean(sent)), "pairs": int((~labels_a).sum()),
                "auc": roc_auc(margins_a, labels_a),
                "abstention_precision": tp / max(1, int(refuse.sum())),
                "abstention_recall": tp / max(1, int((~labels_a).sum())),
                "answered_refused": int((refuse & labels_a).sum()),
                "read_ms_p50": 1000 * float(np.median(seconds))}

    result["zh"] = run(sample, "zh")
    en_items = [{"id": e["id"], "question": e["question"], "context_id": e["context_id"], "answers": e["answers"],
                 "source_question_id": e["source_question_id"]} for e in en]
    result["en"] = run(en_items, "en")
    if args.cosine:
        pairs = [q for q in paired if q["id"] in negatives][:args.cosine]
        qv = embedder.embed_queries([q["question"] for q in pairs])
        own = embedder.embed_documents([contexts[q["context_id"]] for q in pairs])
        neg = embedder.embed_documents([contexts[negatives[q["id"]]] for q in pairs])
        cos = np.r_[np.sum(qv * own, 1), np.sum(qv * neg, 1)]
        labels = np.r_[np.ones(len(pairs), bool), np.zeros(len(pairs), bool)]
        result["cosine_auc"] = {"pairs": len(pairs), "auc": roc_auc(cos, labels)}
        margins = []
        for q in pairs:
            margins += [read(q["question"], contexts[q["context_id"]]).margin]
        for q in pairs:
            margins += [read(q["question"], contexts[negatives[q["id"]]]).margin]
        result["cosine_auc"]["reader_auc_same_pairs"] = roc_auc(np.array(margins), labels)
    result["seconds"] = round(time.time() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
