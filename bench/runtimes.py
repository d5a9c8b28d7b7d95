"""The reader model in each inference runtime: the same spans as torch float32, how fast, how much memory.

Issue 17 asks to pick the runtime by measurement. Candidates (all built here from the verified
weights): torch float32 eager (the reference), torch bf16 eager (the embedder's bf16 layers), torch
float32 with ``torch.compile``, ONNX Runtime float32 (assistant/onnx_reader.py, the product's
export), ONNX Runtime dynamic int8 (that export quantized), OpenVINO f32 and bf16 (that export
compiled). A candidate can become the default only at equal answers: the same span as the
reference for >= 99% of the sampled CMRC dev questions (read with their own paragraph) and
answerability ROC-AUC (own paragraph against the BM25-first other paragraph) within 0.005.

Speed and memory are measured apart, one fresh process per runtime (``--worker``): load time, then
``--time`` reads of a chunk-sized passage (the paragraph's first 360 characters, as the product reads
its top chunk), p50/p95, and the process's peak resident memory (VmHWM). Run it on an idle machine.

Usage: python -m bench.runtimes [--limit 500] [--time 60] [--only onnx-fp32,torch-fp32] [--table JSON...]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from bench.cmrc_data import load_dev
from bench.common import REPO, chosen_runtimes, measure_runtimes, peak_rss_mb, percentile, serve_worker

SEED = 7
RUNTIMES = ("torch-fp32", "torch-bf16", "torch-compile", "onnx-fp32", "onnx-int8", "openvino-f32", "openvino-bf16")
CMRC = REPO.parent / "shared" / "bench" / "cmrc2018" / "cmrc2018_dev.json"


def load(name: str):
    """(model, tokenizer) of the reader in runtime ``name``, with the default embedder."""
    from assistant import onnx_reader
    from assistant.onnx_reader import OnnxSpanModel
    from assistant.config import Settings
    from assistant.models import resolve_reader_weights
    from assistant.pipeline import make_embedder
    from assistant.span_reader import load_reader_model

    # torch-bf16 shares the bf16 embedder's layers (as bench.reader_dtype does): with the default dtype the
    # embedder may be float32 here, and then load_reader_model(bf16=True) runs in float32.
    settings = Settings.from_env(**({"embed_dtype": "bf16"} if name == "torch-bf16" else {}))
    embedder = make_embedder(settings)
    weights = resolve_reader_weights(settings.reader_model)
    if name.startswith("torch"):
        model, tokenizer, _ = load_reader_model(embedder, weights, bf16=name == "torch-bf16")
        if name == "torch-bf16":
            import torch

            if next(model.top.parameters()).dtype != torch.bfloat16:  # load_reader_model fell back to float32
                raise SystemExit("torch-bf16: this CPU computes no bf16 natively, so the reader runs in float32 "
                                 "here; leave torch-bf16 out (--only)")
        if name == "torch-compile":
            import torch

            compiled = torch.compile(model.logits, dynamic=True)
            model.logits = compiled
        return model, tokenizer
    model, tokenizer, _ = load_reader_model(embedder, weights, runtime="onnx", home=settings.home)
    table = model.table  # the embedder's token table, as the product's ONNX reader reads it
    export = model.folder / onnx_reader.GRAPH
    if name == "onnx-fp32":
        return model, tokenizer
    if name == "onnx-int8":
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = settings.home / "bench" / "runtimes" / model.folder.name / "reader.int8.onnx"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            quantize_dynamic(str(export), str(out), weight_type=QuantType.QInt8)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        return OnnxSpanModel(table, out.parent, run=lambda h, m: session.run(None, {"hidden": h, "mask": m})[0]), tokenizer
    import openvino as ov

    precision = "bf16" if name == "openvino-bf16" else "f32"
    compiled = ov.Core().compile_model(str(export), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return OnnxSpanModel(table, export.parent, run=lambda h, m: compiled({"hidden": h, "mask": m})[0]), tokenizer


def _sample(limit: int):
    from bench.reader import hard_negatives

    contexts, questions = load_dev(CMRC)
    sample = random.Random(SEED).sample(questions, min(limit, len(questions)))
    return contexts, sample, hard_negatives(contexts, sample)


def quality(names: list[str], limit: int) -> dict:
    """Same span as torch float32 and answerability AUC, per runtime, on ``limit`` CMRC dev questions."""
    from assistant.evaluation import roc_auc
    from assistant.span_model import score_windows

    contexts, sample, negatives = _sample(limit)
    models = {name: load(name) for name in ["torch-fp32", *[n for n in names if n != "torch-fp32"]]}
    found = {name: [] for name in models}
    margins = {name: [] for name in models}
    labels = []
    t0 = time.time()
    for n, q in enumerate(sample):
        neg = negatives.get(q["id"])
        passages = [contexts[q["context_id"]], *([contexts[neg]] if neg else [])]
        for name, (model, tokenizer) in models.items():
            own, *other = score_windows(model, tokenizer, q["question"], passages)
            found[name].append((own.start, own.end))
            margins[name] += [own.margin, *(o.margin for o in other)]
        labels += [True, *([False] if neg else [])]
        if (n + 1) % 100 == 0:
            print(f"{n + 1}/{len(sample)} read by {len(models)} runtimes, {time.time() - t0:.0f} s", flush=True)
    out = {}
    for name in models:
        out[name] = {"same_span": float(np.mean([a == b for a, b in zip(found[name], found["torch-fp32"])])),
                     "auc": roc_auc(np.array(margins[name]), np.array(labels)),
                     "margin_abs_diff_max": float(np.max(np.abs(np.array(margins[name])
                                                                - np.array(margins["torch-fp32"]))))}
    return {"questions": len(sample), "pairs": len(labels), "runtimes": out}


def worker_speed(spec: dict) -> dict:
    """In a fresh process: load one runtime, time chunk-sized reads, report the peak memory."""
    from assistant.span_model import score_windows

    t0 = time.perf_counter()
    model, tokenizer = load(spec["runtime"])
    contexts, sample, _ = _sample(spec["reads"])
    passages = [(q["question"], contexts[q["context_id"]][:360]) for q in sample]
    score_windows(model, tokenizer, passages[0][0], [passages[0][1]])  # the first read (compiles, warms)
    load_s = time.perf_counter() - t0
    ms = []
    for question, passage in passages:
        t = time.perf_counter()
        score_windows(model, tokenizer, question, [passage])
        ms.append(1000 * (time.perf_counter() - t))
    three = []  # three chunk-sized passages in one call: what the model reads on weak evidence
    for k in range(0, len(passages) - 2, 3):
        t = time.perf_counter()
        score_windows(model, tokenizer, passages[k][0], [p for _, p in passages[k:k + 3]])
        three.append(1000 * (time.perf_counter() - t))
    return {"load_s": load_s, "read_p50_ms": percentile(ms, 0.5), "read_p95_ms": percentile(ms, 0.95),
            "read3_p50_ms": percentile(three, 0.5), "peak_rss_mb": peak_rss_mb()}


LABELS = {"torch-fp32": "torch fp32 eager", "torch-bf16": "torch bf16 eager", "torch-compile": "torch fp32 compile",
          "onnx-fp32": "ONNX Runtime fp32", "onnx-int8": "ONNX Runtime dynamic int8", "openvino-f32": "OpenVINO f32",
          "openvino-bf16": "OpenVINO bf16 hint"}


def _num(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "(not run)"


def table(result: dict) -> str:
    """The runtime table (markdown) of a result: quality and speed, each time also as a ratio to torch fp32."""
    quality_, speed = result.get("quality", {}).get("runtimes", {}), result.get("speed", {})
    base = speed.get("torch-fp32", {})
    n, pairs = result.get("quality", {}).get("questions", 0), result.get("quality", {}).get("pairs", 0)

    def timed(row: dict, key: str, unit: str = "ms") -> str:
        if key not in row:
            return ""
        ratio = f" ({base[key] / row[key]:.2f}x)" if base.get(key) else ""
        return f"{row[key]:,.0f} {unit}{ratio}" if unit == "ms" else f"{row[key]:.1f} s"

    lines = [f"| runtime | same span as torch fp32 ({n}) | AUC ({pairs} pairs) | max margin diff. | one read p50 / p95 "
             "(speed-up) | 3 passages p50 | load | peak memory (VmHWM) |", "|---|---|---|---|---|---|---|---|"]
    for name in [r for r in RUNTIMES if r in quality_ or r in speed]:
        q, t = quality_.get(name, {}), speed.get(name, {})
        lines.append(f"| {LABELS[name]} | {_num(q, 'same_span', '.3f')} | {_num(q, 'auc', '.4f')} | "
                     f"{_num(q, 'margin_abs_diff_max', '.2g')} | {timed(t, 'read_p50_ms')}"
                     f"{' / ' + format(t['read_p95_ms'], ',.0f') + ' ms' if 'read_p95_ms' in t else ''} | "
                     f"{timed(t, 'read3_p50_ms')} | {timed(t, 'load_s', 's')} | "
                     f"{format(t['peak_rss_mb'], ',.0f') + ' MB' if 'peak_rss_mb' in t else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return serve_worker(worker_speed)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="CMRC dev questions read in every runtime (0: skip)")
    ap.add_argument("--time", type=int, default=60, help="chunk-sized reads timed per runtime (0: skip)")
    ap.add_argument("--only", default=",".join(RUNTIMES), help="comma-separated runtimes (default: all)")
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "assistant" / "bench-runtimes.json"))
    ap.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                    help="print the table of earlier results (their quality and speed parts joined), run nothing")
    args = ap.parse_args(argv)
    if args.table:
        joined: dict = {}
        for path in args.table:
            joined.update({k: v for k, v in json.loads(path.read_text()).items() if k in ("quality", "speed")})
        print(table(joined))
        return 0
    names = chosen_runtimes(ap, args.only, RUNTIMES)
    result = measure_runtimes("bench.runtimes", names,
                              lambda chosen, limit: quality([n for n in chosen if n != "torch-compile"], limit),
                              args.limit, {"reads": args.time} if args.time else None, Path(args.out))
    print(f"\n{result['machine']}\n\n{table(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
