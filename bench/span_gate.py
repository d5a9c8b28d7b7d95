"""Calibrate when the span reader leads an answer with its span, on held-out training articles.

The span reader shows the model's span when its probability is at least ``span_prob`` (and its
margin passes the answerability threshold, and it is at most 60 characters); otherwise the user sees
the quoted passage alone. This reads the answerable pairs of the articles that ``make train-reader``
holds out (never the CMRC dev benchmark), and for each candidate ``span_prob`` reports how often a
span is shown, its F1 when shown, and the answer F1 the user sees: the span's when shown, else that
of the sentence holding the answer (the passage reader's best case). It reports all questions, and
those that ask for one short fact (language.asks_for_fact, shown from ``fact_span_prob``) apart from the
others (shown from ``span_prob``).

Usage: python -m bench.span_gate [--train DIR] [--limit N] [--negatives N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPO
from bench.reader import sentence_f1

CANDIDATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SPAN_CHARS = 60


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(REPO.parent / "shared" / "train"), help="the training data folder")
    ap.add_argument("--limit", type=int, default=400, help="answerable held-out pairs per language")
    ap.add_argument("--max-len", type=int, default=0, help="tokens per window (default: the model's)")
    ap.add_argument("--negatives", type=int, default=0, help="also read this many held-out paragraphs that do not "
                    "answer their question, per language")
    ap.add_argument("--out", default="", help="also write the result as JSON here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO / "scripts"))
    import train_reader as tr
    from assistant.config import Settings
    from assistant.evaluation import answer_scores
    from assistant.language import asks_for_fact
    from assistant.models import resolve_reader_weights
    from assistant.pipeline import make_embedder
    from assistant.span_model import MAX_LEN, score_windows
    from assistant.span_reader import _strip, load_reader_model

    settings = Settings.from_env()
    embedder = make_embedder(settings)
    model, tokenizer, threshold = load_reader_model(embedder, resolve_reader_weights(settings.reader_model))
    sources = tr.load_sources(Path(args.train))
    _, held = tr.make_pairs(sources, random.Random(tr.SEED), 0.0)
    _, others = tr.make_pairs(sources, random.Random(tr.SEED), 1.0) if args.negatives else ([], [])
    rng = random.Random(tr.SEED)
    result: dict = {"threshold": threshold, "span_chars": SPAN_CHARS}

    def read(pair: dict):
        """The model's best span of the pair's paragraph: (score, start, end without light punctuation, short)."""
        (found,) = score_windows(model, tokenizer, pair["question"], [pair["context"]], max_len=args.max_len or MAX_LEN)
        start, end = _strip(pair["context"], found.start, found.end)
        return found, start, end, 0 < end - start <= SPAN_CHARS

    t0 = time.time()
    for lang in ("zh", "en"):
        pairs = [p for p in held if p["lang"] == lang and p["answer"] is not None]
        pairs = rng.sample(pairs, min(args.limit, len(pairs)))
        rows, questions = [], []
        for n, pair in enumerate(pairs):
            found, start, end, short = read(pair)
            f1 = answer_scores(pair["context"][start:end], pair["golds"])[1]
            fits = found.margin >= threshold and short
            rows.append((found.prob, fits, f1, sentence_f1(pair["context"], pair["golds"]),
                         asks_for_fact(pair["question"])))
            questions.append({"question": pair["question"], "span": pair["context"][start:end], "prob": found.prob,
                              "margin": found.margin, "short": short, "fits": bool(fits),
                              "f1": f1})
            if (n + 1) % 100 == 0:
                print(f"{lang}: {n + 1}/{len(pairs)} read, {time.time() - t0:.0f} s", flush=True)
        prob, fits, f1, fallback, fact = (np.array(c, float) for c in zip(*rows))
        print(lang, f"span F1 {f1.mean():.3f}, {time.time() - t0:.0f} s", flush=True)
        result[lang] = {"pairs": len(rows), "f1": float(f1.mean()), "sentence_f1": float(fallback.mean())}
        # By question type too: the product shows spans of questions that ask for a short fact
        # (language.asks_for_fact) from a lower probability than those of the others.
        for kind, keep in (("all", fact >= 0), ("fact", fact > 0), ("other", fact == 0)):
            table = {}
            for p in CANDIDATES:
                shown = (prob >= p) & (fits > 0) & keep
                visible = np.where(shown, f1, fallback)[keep]
                table[f"{p:.2f}"] = {"shown": float(shown.sum() / max(keep.sum(), 1)),
                                     "span_f1": float(f1[shown].mean()) if shown.any() else None,
                                     "visible_f1": float(visible.mean()) if keep.any() else None}
                print(lang, kind, f"({int(keep.sum())})", f"span_prob {p:.2f}", json.dumps(table[f"{p:.2f}"]),
                      flush=True)
            result[lang][kind] = {"pairs": int(keep.sum()), "by_span_prob": table}
        result[lang]["questions"] = questions
        # Paragraphs that do not answer (another paragraph of the same article, or of another article): a span
        # shown there is wrong. What the product would show if such a passage ranked first.
        negatives = [p for p in others if p["lang"] == lang and p["answer"] is None]
        shown_wrong = []
        for pair in rng.sample(negatives, min(args.negatives, len(negatives))):
            found, _, _, short = read(pair)
            shown_wrong.append({"question": pair["question"], "prob": found.prob, "margin": found.margin,
                                "short": short, "fact": asks_for_fact(pair["question"])})
        result[lang]["negatives"] = shown_wrong
        print(lang, f"{len(shown_wrong)} negatives read, {time.time() - t0:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
