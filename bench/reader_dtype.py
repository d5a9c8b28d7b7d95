"""The reader model in float32 against bf16: the same spans and answerability, and how fast each reads.

Where the CPU computes bf16 natively (AVX-512 BF16 or AMX) the span reader could run in bf16 with the
embedder, sharing its bottom layers, instead of float32 (the default). This checks that switch the way
issue 17 asks: the same span for >= 99% of 500 CMRC dev questions read with their own paragraph, and the
answerability ROC-AUC (own paragraph against the BM25-first other paragraph) within 0.005. With
``--time N`` it also times N reads of a chunk-sized passage (the first 360 characters of the
paragraph, as the product reads its top chunk) in each precision: run that on an idle machine.

Usage: python -m bench.reader_dtype [--cmrc PATH] [--limit 500] [--time 100]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from bench.cmrc_data import load_dev
from bench.common import REPO, machine, percentile
from bench.reader import hard_negatives

SEED = 7


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmrc", default=str(REPO.parent / "shared" / "bench" / "cmrc2018" / "cmrc2018_dev.json"))
    ap.add_argument("--limit", type=int, default=500, help="dev questions read in each precision")
    ap.add_argument("--time", type=int, default=0, help="also time this many chunk-sized reads in each precision")
    args = ap.parse_args(argv)

    import torch

    from assistant.config import Settings, native_bf16
    from assistant.evaluation import roc_auc
    from assistant.models import resolve_reader_weights
    from assistant.pipeline import make_embedder
    from assistant.span_model import score_windows
    from assistant.span_reader import load_reader_model

    settings = Settings.from_env(embed_dtype="bf16")
    if not native_bf16():
        raise SystemExit("this CPU has no native bf16: the span reader runs in float32 here, nothing to compare")
    embedder = make_embedder(settings)
    weights = resolve_reader_weights(settings.reader_model)
    bf16, tokenizer, _ = load_reader_model(embedder, weights, bf16=True)
    fp32, _, _ = load_reader_model(embedder, weights)  # the default: a float32 copy of the shared layers
    assert next(bf16.top.parameters()).dtype == torch.bfloat16 and next(fp32.top.parameters()).dtype == torch.float32

    contexts, questions = load_dev(Path(args.cmrc))
    sample = random.Random(SEED).sample(questions, min(args.limit, len(questions)))
    negatives = hard_negatives(contexts, sample)
    result: dict = {"questions": len(sample), "machine": machine()}
    found: dict = {"fp32": [], "bf16": []}
    margins: dict = {"fp32": [], "bf16": []}
    labels = []
    t0 = time.time()
    for n, q in enumerate(sample):
        neg = negatives.get(q["id"])
        for name, model in (("fp32", fp32), ("bf16", bf16)):
            own, *other = score_windows(model, tokenizer, q["question"],
                                        [contexts[q["context_id"]], *([contexts[neg]] if neg else [])])
            found[name].append((own.start, own.end))
            margins[name] += [own.margin, *(o.margin for o in other)]
        labels += [True, *([False] if neg else [])]
        if (n + 1) % 100 == 0:
            print(f"{n + 1}/{len(sample)} read, {time.time() - t0:.0f} s", flush=True)
    same = float(np.mean([a == b for a, b in zip(found["fp32"], found["bf16"])]))
    result["same_span"] = same
    for name in ("fp32", "bf16"):
        result[f"auc_{name}"] = roc_auc(np.array(margins[name]), np.array(labels))
    result["margin_abs_diff_mean"] = float(np.mean(np.abs(np.array(margins["fp32"]) - np.array(margins["bf16"]))))
    print(json.dumps(result), flush=True)
    if args.time:
        passages = [(q["question"], contexts[q["context_id"]][:360]) for q in sample[:args.time]]
        for name, model in (("fp32", fp32), ("bf16", bf16)):
            score_windows(model, tokenizer, passages[0][0], [passages[0][1]])  # warm
            ms = []
            for question, passage in passages:
                t = time.perf_counter()
                score_windows(model, tokenizer, question, [passage])
                ms.append(1000 * (time.perf_counter() - t))
            result[f"read_ms_{name}"] = {"p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95)}
            print(name, json.dumps(result[f"read_ms_{name}"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
