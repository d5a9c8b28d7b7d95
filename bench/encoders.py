"""The query encoder in each runtime: the same top-5 passages as torch, how fast, how much memory.

Issue 17 asks to pick the query encoder's runtime by measurement, at equal answers: the same
top-5 passages for >= 99% of the own eval and CMRC questions. Candidates: torch bf16 and float32
(sentence-transformers, the reference is the dtype the index was built with), ONNX Runtime float32
(assistant/onnx_encoder.py, the product's export) and ONNX Runtime dynamic int8 (that export
quantized). Each question is encoded alone, as the product does, and searched with the product's
hybrid retriever (FAISS + BM25): over the default corpus's index for the 79 own-eval questions,
and over bench/cmrc.py's index of the CMRC 2018 dev contexts for its Chinese questions (a seeded
sample) and the English ones.

Speed and memory are measured apart, one fresh process per runtime (``--worker``): process-side
load (construct, first vector), then ``--time`` single questions, p50/p95, and the worker's VmHWM.

Usage: python -m bench.encoders [--limit 600] [--time 100] [--only onnx-fp32,torch-bf16]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, chosen_runtimes, measure_runtimes, peak_rss_mb, percentile, serve_worker

RUNTIMES = ("torch-bf16", "torch-fp32", "onnx-fp32", "onnx-int8")
LABELS = {"torch-bf16": "torch bf16", "torch-fp32": "torch fp32", "onnx-fp32": "ONNX Runtime fp32",
          "onnx-int8": "ONNX Runtime dynamic int8"}
SEED = 7
CMRC = REPO.parent / "shared" / "bench" / "cmrc2018" / "cmrc2018_dev.json"


def embedder(name: str):
    """The product's embedder with queries in runtime ``name``."""
    from assistant.config import Settings
    from assistant.embedding import SentenceTransformerEmbedder
    from assistant.models import resolve_embedding_model

    settings = Settings.from_env()
    resolved = resolve_embedding_model(settings.embed_model, settings.home)
    dtype = "bf16" if name == "torch-bf16" else "fp32"
    runtime = "onnx" if name.startswith("onnx") else "torch"
    emb = SentenceTransformerEmbedder(resolved, dtype, embed_runtime=runtime, home=settings.home)
    if name == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from assistant import onnx_files
        from assistant.onnx_encoder import GRAPH

        encoder = emb.onnx_encoder()
        out = settings.home / "bench" / "encoders" / encoder.folder.name / "encoder.int8.onnx"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            quantize_dynamic(str(encoder.folder / GRAPH), str(out), weight_type=QuantType.QInt8,
                             use_external_data_format=True)
        encoder._session = onnx_files.session(out)
    return emb


def _questions(limit: int) -> dict[str, list[str]]:
    from bench.cmrc_data import load_cmrc

    own = [json.loads(line)["question"] for line in (REPO / "tests" / "data" / "eval.jsonl").read_text("utf-8").splitlines()
           if line.strip()]
    _, items = load_cmrc(CMRC)
    zh = [i.question for i in random.Random(SEED).sample(items, min(limit, len(items)))]
    en = [json.loads(line)["question"] for line in (REPO / "bench" / "cmrc_en_questions.jsonl").read_text("utf-8")
          .splitlines() if line.strip()]
    return {"own": own, "cmrc-zh": zh, "cmrc-en": en}


def quality(names: list[str], limit: int) -> dict:
    """Top-5 of every question with each runtime's query vectors, against the index dtype's torch."""
    from assistant.config import Settings
    from assistant.index_load import load_index
    from assistant.retriever import HybridRetriever

    settings = Settings.from_env()
    indexes = {"own": settings.index.resolve(), "cmrc": settings.home / "bench" / "cmrc" /
               f"index-c{settings.chunk_size}-o{settings.chunk_overlap}"}
    loaded = {k: load_index(v) for k, v in indexes.items()}
    dtype = loaded["own"].info.embedding.dtype or "fp32"
    reference = f"torch-{dtype}"
    questions = _questions(limit)
    vectors = {}
    for name in dict.fromkeys([reference, "torch-fp32", *names]):
        emb = embedder(name)
        vectors[name] = {s: np.vstack([emb.embed_queries([q]) for q in qs]) for s, qs in questions.items()}
        print(f"{name}: encoded {sum(len(q) for q in questions.values())} questions", file=sys.stderr, flush=True)
    out: dict = {"index_dtype": dtype, "questions": {s: len(q) for s, q in questions.items()}, "runtimes": {}}
    tops = {}
    for name in vectors:
        tops[name] = {}
        for s, qs in questions.items():
            retriever = HybridRetriever(loaded["own" if s == "own" else "cmrc"], None)
            tops[name][s] = [[h.chunk_id for h in retriever.search(q, 5, query_vector=v).hits]
                             for q, v in zip(qs, vectors[name][s], strict=True)]
    for name in names:
        row: dict = {}
        for ref in dict.fromkeys([reference, "torch-fp32"]):
            if ref not in vectors:
                continue
            agree = {}
            for s in questions:
                a, b = tops[ref][s], tops[name][s]
                cos = np.sum(vectors[ref][s] * vectors[name][s], axis=1)
                agree[s] = {"same_top5": float(np.mean([x == y for x, y in zip(a, b)])),
                            "same_top5_set": float(np.mean([set(x) == set(y) for x, y in zip(a, b)])),
                            "cosine_min": float(cos.min()), "cosine_median": float(np.median(cos))}
            row[ref] = agree
        out["runtimes"][name] = row
    return out


def worker_speed(spec: dict) -> dict:
    """In a fresh process: construct one runtime's embedder, time single questions, report the peak memory."""
    t0 = time.perf_counter()
    emb = embedder(spec["runtime"])
    questions = _questions(spec["questions"])
    sample = (questions["cmrc-zh"] + questions["cmrc-en"])[:spec["questions"]]
    emb.embed_queries([sample[0]])
    load_s = time.perf_counter() - t0
    for q in sample[1:4]:
        emb.embed_queries([q])
    ms = []
    for q in sample:
        t = time.perf_counter()
        emb.embed_queries([q])
        ms.append(1000 * (time.perf_counter() - t))
    return {"load_s": load_s, "p50_ms": percentile(ms, 0.5), "p95_ms": percentile(ms, 0.95),
            "peak_rss_mb": peak_rss_mb()}


def table(result: dict) -> str:
    quality_, speed = result.get("quality", {}), result.get("speed", {})
    dtype = quality_.get("index_dtype", "bf16")
    refs = list(dict.fromkeys([f"torch-{dtype}", "torch-fp32"]))
    counts = quality_.get("questions", {})
    base = speed.get(f"torch-{dtype}", {})
    sets = ("own", "cmrc-zh", "cmrc-en")
    sizes = " / ".join(str(counts.get(s, 0)) for s in sets)
    marks = {r: " (the index's dtype)" if r == f"torch-{dtype}" and len(refs) > 1 else "" for r in refs}
    head = " | ".join(f"same top-5 as {LABELS[r]}{marks[r]}: own / CMRC zh / CMRC en ({sizes})" for r in refs)
    lines = [f"| query encoder | {head} | lowest cosine to torch fp32 | one question p50 / p95 (speed-up to "
             f"{LABELS[f'torch-{dtype}']}) | load (process side) | peak memory (VmHWM) |",
             "|---|" + "---|" * (len(refs) + 4)]
    for name in [r for r in RUNTIMES if r in quality_.get("runtimes", {}) or r in speed]:
        q, t = quality_.get("runtimes", {}).get(name, {}), speed.get(name, {})
        agree = " | ".join(" / ".join(f"{q[r][s]['same_top5']:.3f}" for s in sets) if r in q else "(not run)"
                           for r in refs)
        fp32 = q.get("torch-fp32")
        low = f"{min(fp32[s]['cosine_min'] for s in sets):.5f}" if fp32 else ""
        ratio = f" ({base['p50_ms'] / t['p50_ms']:.2f}x)" if base.get("p50_ms") and t else ""
        timed = f"{t['p50_ms']:.1f} / {t['p95_ms']:.1f} ms{ratio}" if t else ""
        load = f"{t['load_s']:.1f} s" if t else ""
        memory = f"{t['peak_rss_mb']:,.0f} MB" if t else ""
        lines.append(f"| {LABELS[name]} | {agree} | {low} | {timed} | {load} | {memory} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return serve_worker(worker_speed)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=600, help="CMRC dev Chinese questions sampled (0: skip quality)")
    ap.add_argument("--time", type=int, default=100, help="questions timed per runtime (0: skip)")
    ap.add_argument("--only", default=",".join(RUNTIMES), help="comma-separated runtimes (default: all)")
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "assistant" / "bench-encoders.json"))
    args = ap.parse_args(argv)
    names = chosen_runtimes(ap, args.only, RUNTIMES)
    result = measure_runtimes("bench.encoders", names, quality, args.limit,
                              {"questions": args.time} if args.time else None, Path(args.out))
    print(f"\n{result['machine']}\n\n{table(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
