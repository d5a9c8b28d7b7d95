"""Answerability pairs from the articles that ``make train-reader`` holds out (never the CMRC dev benchmark).

The same protocol as bench/reader.py's answerability part, on held-out training data, so that the
shipped decision can be calibrated without looking at the benchmark: each sampled question is paired
with its own paragraph and with a hard negative, the other held-out paragraph of its language that
BM25 (jieba) ranks first for it and that holds none of its gold answers. Three sets:

- ``zh``: Chinese questions (DRCD, CMRC 2018 trial) against Chinese paragraphs;
- ``en``: English questions (SQuAD) against English paragraphs;
- ``xl``: the same Chinese questions in English (the local LLM's translations,
  scripts/translate_questions.py, cached) against their Chinese paragraphs: a main use of the product.

For every pair it records the embedding cosine (question to paragraph), the reader model's margin
and whether the product's short-fact margin check applies (span_reader.margin_checked); the rows are
written to ``--out`` (JSON; ``--rows FILE`` reuses them). Then, per set, the abstention precision and
recall of the shipped decision (a paragraph answers when its cosine reaches ``min_evidence``, or
``floor`` and its margin the threshold; span_reader.ZH_FLOOR and ZH_THRESHOLD for Chinese short-fact
questions), and the (floor, threshold) pairs with the best balanced accuracy, from which those two were
chosen (on "zh", all and short-fact questions alone).

Usage: python -m bench.gate_pairs [--train DIR] [--per-set N] [--out FILE] [--rows FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from bench.common import REPO  # noqa: E402
from bench.reader import abstention, hard_negatives, shipped_refusals  # noqa: E402

OUT = Path.home() / ".cache" / "assistant" / "gate-pairs.json"


def held_questions(sources: dict[str, list[dict]], held_out, lang: str) -> tuple[dict[str, str], list[dict]]:
    """(paragraph id -> text, answerable questions) of the held-out articles of one language, in
    bench.reader's shape (id, question, context_id, answers)."""
    contexts, questions = {}, []
    for name, articles in sources.items():
        if ("en" if name.startswith("squad") else "zh") != lang:
            continue
        for a, article in enumerate(articles):
            if not held_out(article["title"]):
                continue
            for p, paragraph in enumerate(article["paragraphs"]):
                cid = f"{name}:{a}:{p}"
                contexts[cid] = paragraph["context"]
                for k, qa in enumerate(paragraph["qas"]):
                    golds = [t for t in qa["golds"] if t]
                    if not qa["impossible"] and golds:
                        questions.append({"id": f"{cid}:{k}", "question": qa["question"], "context_id": cid,
                                          "answers": golds})
    return contexts, questions


def refused(rows: list[dict], min_evidence: float, floor, threshold) -> np.ndarray:
    """The shipped decision for each row (bench.reader.shipped_refusals)."""
    cos, margin = (np.array([r[k] for r in rows], float) for k in ("cosine", "margin"))
    return shipped_refusals(cos, margin, np.array([r["checked"] for r in rows], bool), min_evidence, floor, threshold)


def scores(refuse: np.ndarray, answerable: np.ndarray) -> dict:
    """Abstention precision, recall (bench.reader.abstention), and balanced accuracy."""
    got = abstention(refuse, answerable, "shipped")
    kept = 1 - got["shipped_answerable_refused"] / max(1, int(answerable.sum()))
    return {"precision": round(got["shipped_precision"], 3), "recall": round(got["shipped_recall"], 3),
            "balanced": round((got["shipped_recall"] + kept) / 2, 3)}


def calibrate(rows: list[dict], min_evidence: float, top: int = 5) -> list[dict]:
    """At the shipped cosine threshold, the ``top`` (floor, margin threshold) pairs by balanced accuracy, on a grid
    of 0.01 (floor) by 0.25 (margin)."""
    answerable = np.array([r["answerable"] for r in rows], bool)
    found = []
    for floor in np.arange(0.10, min_evidence + 1e-9, 0.01):
        for threshold in np.arange(-8.0, 4.001, 0.25):
            got = scores(refused(rows, min_evidence, floor, threshold), answerable)
            found.append({**got, "floor": round(float(floor), 2), "threshold": float(threshold)})
    return sorted(found, key=lambda g: -g["balanced"])[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(REPO.parent / "shared" / "train"), help="the training data folder")
    ap.add_argument("--per-set", type=int, default=300, help="questions sampled per language")
    ap.add_argument("--weights", default="", help="reader weights (default: the committed ones)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--rows", default="", help="report on the rows of an earlier run (JSON) instead of scoring")
    args = ap.parse_args(argv)
    from assistant.reader import DEFAULT_MIN_EVIDENCE
    from assistant.span_reader import DEFAULT_MODEL_FLOOR, ZH_FLOOR, ZH_THRESHOLD

    result = json.loads(Path(args.rows).read_text("utf-8")) if args.rows else collect(args)
    sets = {"zh": result["zh"], "zh short-fact": [r for r in result["zh"] if r["checked"]], "en": result["en"],
            "xl": result["xl"]}
    for name, rows in sets.items():
        answerable = np.array([r["answerable"] for r in rows], bool)
        # Chinese short-fact questions against Chinese paragraphs (span_reader.zh_fact: the "checked" zh rows)
        zh = np.array([name.startswith("zh") and r["checked"] for r in rows], bool)
        floor, threshold = np.where(zh, ZH_FLOOR, DEFAULT_MODEL_FLOOR), np.where(zh, ZH_THRESHOLD, result["threshold"])
        trained = scores(refused(rows, DEFAULT_MIN_EVIDENCE, DEFAULT_MODEL_FLOOR, result["threshold"]), answerable)
        shipped = scores(refused(rows, DEFAULT_MIN_EVIDENCE, floor, threshold), answerable)
        print(f"{name}: {len(rows)} pairs; at floor {DEFAULT_MODEL_FLOOR} and the trained threshold "
              f"{json.dumps(trained)}; shipped {json.dumps(shipped)}; best (floor, threshold) for all:", flush=True)
        for best in calibrate(rows, DEFAULT_MIN_EVIDENCE):
            print(f"  {json.dumps(best)}")
    return 0


def collect(args) -> dict:
    """Sample, translate (cached) and score the three sets; write them to ``args.out``."""
    sys.path.insert(0, str(REPO / "scripts"))
    import train_reader as tr
    from translate_questions import translate, usable

    from assistant.config import Settings
    from assistant.language import acronyms
    from assistant.models import resolve_reader_weights
    from assistant.pipeline import make_embedder
    from assistant.span_model import score_windows
    from assistant.span_reader import load_reader_model, margin_checked

    sources = tr.load_sources(Path(args.train))
    rng = random.Random(tr.SEED + 2)  # its own draw: not the training run's held-out sample
    sets: dict[str, tuple[dict[str, str], list[dict]]] = {}
    for lang in ("zh", "en"):
        contexts, questions = held_questions(sources, tr._held_out, lang)
        sets[lang] = contexts, rng.sample(questions, min(args.per_set, len(questions)))
    contexts_zh, sample_zh = sets["zh"]
    english = translate([q["question"] for q in sample_zh])
    sets["xl"] = contexts_zh, [{**q, "question": english[q["question"]], "source_question": q["question"]}
                               for q in sample_zh if usable(q["question"], english[q["question"]])]

    settings = Settings.from_env()
    embedder = make_embedder(settings)
    model, tokenizer, threshold = load_reader_model(embedder, resolve_reader_weights(args.weights))
    result: dict = {"weights": args.weights or "committed", "threshold": threshold}
    t0 = time.time()
    for name, (contexts, questions) in sets.items():
        # xl questions take their Chinese originals' negatives (BM25 over Chinese paragraphs needs Chinese words).
        originals = [{**q, "question": q.get("source_question", q["question"])} for q in questions]
        negatives = hard_negatives(contexts, originals)
        corpus_text = "\n".join(contexts.values()).lower()
        vectors: dict[str, np.ndarray] = {}  # paragraph id -> its vector: a paragraph holds several questions
        rows = []
        for n, q in enumerate(questions):
            if q["id"] not in negatives:
                continue
            unknown = [t for t in acronyms(q["question"]) if t.lower() not in corpus_text]
            checked = margin_checked(q["question"], unknown)
            qv = embedder.embed_queries([q["question"]])[0]
            for cid, answerable in ((q["context_id"], True), (negatives[q["id"]], False)):
                text = contexts[cid]
                if cid not in vectors:
                    vectors[cid] = embedder.embed_documents([text])[0]
                (found,) = score_windows(model, tokenizer, q["question"], [text])
                rows.append({"id": q["id"], "answerable": answerable, "question": q["question"],
                             "cosine": float(qv @ vectors[cid]), "margin": found.margin,
                             "checked": checked, "unknown_terms": unknown})
            if (n + 1) % 50 == 0:
                print(f"{name}: {n + 1}/{len(questions)}, {time.time() - t0:.0f} s", flush=True)
        result[name] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=0) + "\n", "utf-8")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
