"""Milvus's own hybrid search (dense + BM25 full text, RRF) against our local fusion, on the own eval set.

The default corpus is indexed with the real model (the cached index of bench/speed.py when its
chunking is current, else a fresh build). The same chunk vectors and texts go into a Milvus Lite
collection with a BM25 function over a Chinese-analysed text field. Each retriever then serves the
same Assistant (same reader) through ``assistant.evaluation.run``: hit@1, hit@5, MRR, key recall,
abstention. Rows:

- ours, score fusion (the default): cosine + 0.05 * BM25 / max BM25 (our jieba + CJK-bigram BM25);
- ours, RRF: the same two candidate lists fused by reciprocal rank (k = 60, our weights 1 and 0.05);
- Milvus hybrid, RRF: ``hybrid_search`` of a dense request and a BM25 request (50 each), ``RRFRanker(60)``;
- Milvus hybrid, weighted: the same with ``WeightedRanker(1.0, 0.05)`` (Milvus normalises each score first).

Milvus's hits carry no per-route scores: each hit's cosine (the reader's evidence) is read back from
the store, and the best cosine comes from a dense search, as ours does.

Usage: ``python -m bench.hybrid [--no-write]``; results go to the ``hybrid`` section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine, write_section

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from assistant.retriever import Retrieval  # noqa: E402
from assistant.types import Hit  # noqa: E402

log = logging.getLogger("bench.hybrid")
START, END = "<!-- hybrid:start -->", "<!-- hybrid:end -->"
DEPTH = 50
# Milvus's built-in Chinese analyzer is {"type": "chinese"}; Milvus Lite 3.2.2 refuses it ("unknown tokenizer
# type: 'chinese' (supported: 'standard', 'jieba')"), so Lite gets the jieba tokenizer it does support.
ANALYZERS = [{"type": "chinese"}, {"tokenizer": "jieba"}]


class MilvusHybridRetriever:
    """HybridRetriever's interface over Milvus ``hybrid_search`` (dense + BM25 function, one ranker)."""

    def __init__(self, client, collection: str, index, ranker) -> None:
        self.client, self.collection, self.index, self.ranker = client, collection, index, ranker

    def search(self, query: str, k: int = 5, query_vector=None, exclude=frozenset()) -> Retrieval:
        from pymilvus import AnnSearchRequest

        requests = [AnnSearchRequest(data=[query_vector.tolist()], anns_field="vector",
                                     param={"metric_type": "IP"}, limit=DEPTH),
                    AnnSearchRequest(data=[query], anns_field="sparse", param={"metric_type": "BM25"}, limit=DEPTH)]
        found = self.client.hybrid_search(self.collection, requests, self.ranker, limit=k, output_fields=["id"])[0]
        ids = [int(h["id"]) for h in found]
        if not ids:
            return Retrieval([], 0.0)
        cosines = self.index.dense_vectors(np.asarray(ids)) @ query_vector
        best = float(self.index.dense_search(query_vector, 1)[1][0])
        hits = [Hit(i, self.index.chunks[i], float(h["distance"]), float(c))
                for i, h, c in zip(ids, found, cosines)]
        return Retrieval(hits, best)


def fill_collection(path: str, index) -> tuple[object, str, dict]:
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    client = MilvusClient(path)
    tried = {}
    for analyzer in ANALYZERS:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=8192, enable_analyzer=True, analyzer_params=analyzer)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=index.manifest["embedding"]["dimension"])
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))
        params = client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type="IP")
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        try:
            client.create_collection("hybrid", schema=schema, index_params=params)
        except Exception as exc:  # noqa: BLE001 (recorded in the report: which analyzer Milvus Lite refused)
            tried[json.dumps(analyzer)] = getattr(exc, "message", str(exc))
            log.warning("analyzer %s refused: %s", analyzer, tried[json.dumps(analyzer)])
            continue
        tried[json.dumps(analyzer)] = "ok"
        vectors = index.dense_vectors(np.arange(len(index.chunks)))
        client.insert("hybrid", [{"id": i, "text": c.text, "vector": v.tolist()}
                                 for i, (c, v) in enumerate(zip(index.chunks, vectors))])
        client.load_collection("hybrid")
        return client, json.dumps(analyzer), tried
    raise SystemExit(f"Milvus Lite accepted no Chinese analyzer: {tried}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    from pymilvus import RRFRanker, WeightedRanker

    from assistant import evaluation
    from assistant.config import Settings
    from assistant.index_store import chunker_id, load_index, read_manifest
    from assistant.pipeline import Assistant, _Serving
    from assistant.retriever import HybridRetriever

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-hybrid-"))
    try:
        settings = Settings.from_env(corpus=REPO / "corpus", index=work / "index", vector_store="")
        cached = settings.home / "bench" / "speed" / "default-index"
        assistant = Assistant(settings)
        if (cached / "manifest.json").exists() and read_manifest(cached)["chunking"]["chunker"] == chunker_id():
            shutil.copytree(cached, settings.index)
        assistant.build()
        index = load_index(settings.index)
        questions = evaluation.load_questions(REPO / "tests" / "data" / "eval.jsonl")
        client, analyzer, tried = fill_collection(str(work / "hybrid.db"), index)
        retrievers = {
            "ours, score fusion (default)": HybridRetriever(index, assistant.embedder),
            "ours, RRF (dense 1, BM25 0.05)": HybridRetriever(index, assistant.embedder, fusion="rrf"),
            "Milvus hybrid_search, RRFRanker(60)": MilvusHybridRetriever(client, "hybrid", index, RRFRanker(60)),
            "Milvus hybrid_search, WeightedRanker(1, 0.05)":
                MilvusHybridRetriever(client, "hybrid", index, WeightedRanker(1.0, 0.05)),
        }
        rows = {}
        for name, retriever in retrievers.items():
            assistant._serving = _Serving(index, retriever)
            report = evaluation.run(assistant, questions, settings.corpus)
            rows[name] = report.metrics
            log.info("%s: %s", name, {k: round(v, 3) for k, v in report.metrics.items() if isinstance(v, float)})
        client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "analyzer": analyzer, "tried": tried, "rows": rows, "questions": len(questions),
              "seconds": time.monotonic() - t_start}
    text = render(report)
    print(text)
    if not args.no_write:
        write_section(text, REPO / "BENCHMARKS.md", START, END)
    return 0


def render(report: dict) -> str:
    refused = "; ".join(f"`{a}`: {why}" for a, why in report["tried"].items() if why != "ok")
    lines = ["## Milvus hybrid search against our fusion (own eval set, bench/hybrid.py)", "",
             f"Measured {report['date']} on {report['machine']['cpu']}; {report['questions']} questions of "
             "tests/data/eval.jsonl, the default corpus, the real model, the same reader for every row; "
             f"Milvus Lite analyzer {report['analyzer']}"
             + (f" (refused: {refused})" if refused else "") + ".", "",
             "| retriever | hit@1 | hit@5 | MRR | key recall | abstention precision / recall | p50 |",
             "|---|---|---|---|---|---|---|"]
    for name, m in report["rows"].items():
        lines.append(f"| {name} | {m['hit@1']:.3f} | {m['hit@5']:.3f} | {m['mrr']:.3f} | {m['key_recall']:.3f} | "
                     f"{m['abstention_precision']:.3f} / {m['abstention_recall']:.3f} | {m['latency_p50_ms']:.0f} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
