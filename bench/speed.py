"""Speed and memory benchmark (``make bench``): our pipeline beside the plain LangChain recipe.

Three corpus sizes: the default corpus; the 848 CMRC 2018 dev contexts; and about 20,000 chunks
(the CMRC contexts plus 11 generated variants of each). For each: cold index build (documents/s,
chunks/s), the embedding model's raw encode throughput on the same chunks (the limit here), time to
add one document, warm ask latency (retrieval alone and the full answer, p50/p95), cold start
(process start to first answer, ``assistant ask`` as a new process) and peak RSS. The same for the
LangChain recipe: ``RecursiveCharacterTextSplitter`` + LangChain's FAISS vector store +
``HuggingFaceEmbeddings`` (same model, same bf16 precision), top-k similarity search.

Every measurement runs in its own process (``--worker``), so peak RSS and cold start are that
process's own. Nothing here is a test: no number is asserted.

The 20k tier: its 11 variants of each CMRC context substitute Chinese characters by a fixed
per-variant permutation, so the text, the words and the BM25 index are new but chunk boundaries
match the originals. Their vectors are **not** re-embedded (that is about 45 min on this machine):
each variant chunk's vector (and each sentence vector) is its original's real vector plus small
seeded noise, renormalised. Search, lexical and reader cost do not depend on the values of the
vectors, so latency and memory are measured faithfully; build throughput is measured at the CMRC
size, where everything is embedded for real. ``--real-variants`` embeds them for real (cached).

Usage: ``python -m bench.speed [--tiers default,cmrc,20k] [--questions N] [--no-write]``.
Results go to the ``speed`` section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, peak_rss_mb, rounded, run_worker, serve_worker, stats

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see assistant/config.py: quiet_openmp
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("bench.speed")
START, END = "<!-- speed:start -->", "<!-- speed:end -->"
VARIANTS = 11
TARGETS = {"p50_ms": 300, "p95_ms": 800, "cold_s": 15, "rss_gb": 2.5, "build_share": 0.9, "add_overhead_s": 2}


# -- workers: each runs in a fresh process and prints one RESULT line ------------------------------
def worker_build(spec: dict) -> dict:
    """Cold build of our index (rebuild: every chunk embedded)."""
    from assistant.config import Settings
    from assistant.pipeline import Assistant

    settings = Settings.from_env(corpus=Path(spec["corpus"]), index=Path(spec["index"]))
    assistant = Assistant(settings)
    t0 = time.perf_counter()
    assistant.embedder._load()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = assistant.build(rebuild=True)
    seconds = time.perf_counter() - t0
    return {"documents": report.documents, "chunks": report.chunks, "seconds": seconds, "model_load_s": load,
            "rss_mb": peak_rss_mb()}


def worker_raw(spec: dict) -> dict:
    """The model's raw encode throughput on the index's chunk texts, in the runtime builds use: ONNX Runtime's
    ``OnnxEncoder.encode`` where the embedder has its export (the default), else ``SentenceTransformer.encode``."""
    from assistant.config import Settings
    from assistant.index_store import load_index
    from assistant.pipeline import make_embedder

    chunks = load_index(Path(spec["index"])).chunks
    if spec.get("sample") and spec["sample"] < len(chunks):
        chunks = random.Random(0).sample(chunks, spec["sample"])
    embedder = make_embedder(Settings.from_env())
    inputs = [f"title: {c.heading or 'none'} | text: {c.text}" for c in chunks]
    encoder = embedder.onnx_encoder()
    if encoder is not None:
        t0 = time.perf_counter()
        encoder.encode(inputs, batch_size=embedder.batch_size)
        runtime = "onnxruntime fp32"
    else:
        model = embedder._load()
        t0 = time.perf_counter()
        model.encode(inputs, batch_size=embedder.batch_size, convert_to_numpy=True, normalize_embeddings=True)
        runtime = f"torch {embedder.dtype}"
    seconds = time.perf_counter() - t0
    return {"chunks": len(chunks), "seconds": seconds, "chunks_per_s": len(chunks) / seconds, "runtime": runtime}


def worker_ask(spec: dict) -> dict:
    """Warm latency: retrieval alone (query embedding + hybrid search) and the full answer."""
    from assistant.config import Settings
    from assistant.pipeline import Assistant

    questions = spec["questions"]
    assistant = Assistant(Settings.from_env(index=Path(spec["index"])))
    assistant.ask(questions[0])  # load the model and the index outside the measurement
    retriever = assistant._current().retriever
    retrieve, search, full = [], [], []
    for q in questions:
        t0 = time.perf_counter()
        vector = assistant.embedder.embed_queries([q])[0]
        t1 = time.perf_counter()
        retriever.search(q, assistant.settings.top_k, query_vector=vector)
        t2 = time.perf_counter()
        assistant.ask(q)
        t3 = time.perf_counter()
        retrieve.append((t2 - t0) * 1000)
        search.append((t2 - t1) * 1000)
        full.append((t3 - t2) * 1000)
    return {"questions": len(questions), **stats("retrieve", retrieve), **stats("search", search),
            **stats("answer", full), "rss_mb": peak_rss_mb()}


def worker_add(spec: dict) -> dict:
    """Add one document to a copy of a built index; its embedding time alone, measured apart."""
    from assistant.chunking import spans
    from assistant.config import Settings
    from assistant.ingest import read_document
    from assistant.chunking import chunk_document
    from assistant.pipeline import Assistant

    settings = Settings.from_env(corpus=Path(spec["corpus"]), index=Path(spec["index"]))
    assistant = Assistant(settings)
    assistant.status()  # load the index
    path = Path(spec["document"])
    document = read_document(path, path.parent)
    chunks = chunk_document(document, settings.chunk_size, settings.chunk_overlap)
    texts = [c.text for c in chunks]
    embed = assistant.embedder.embed_passages
    embed(texts[:1], [""], [[(0, 1)]])  # load the model outside the measurement
    from assistant.lexical import tokenize

    tokenize("载入分词词典")  # and jieba's dictionary (once a process: a server has loaded it)
    t0 = time.perf_counter()
    embed(texts, [c.heading for c in chunks], [[(s.start, s.end) for s in spans(t)] for t in texts])
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    added = assistant.add([path])
    add_s = time.perf_counter() - t0
    assert not added.refused, added.refused
    report = added.build
    return {"chunks_added": report.embedded_chunks, "index_chunks": report.chunks, "add_s": add_s,
            "embed_s": embed_s, "overhead_s": add_s - embed_s}


def worker_lc_build(spec: dict) -> dict:
    """The LangChain recipe: split, embed with HuggingFaceEmbeddings, FAISS.from_documents, save_local."""
    t0 = time.perf_counter()
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = lc_embeddings()
    imports = time.perf_counter() - t0
    corpus = Path(spec["corpus"])
    docs = [Document(page_content=p.read_text("utf-8"), metadata={"source": p.name})
            for p in sorted(corpus.rglob("*")) if p.suffix in (".txt", ".md")]
    t0 = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter(chunk_size=spec["chunk_size"], chunk_overlap=0, add_start_index=True)
    chunks = splitter.split_documents(docs)
    split_s = time.perf_counter() - t0
    store = FAISS.from_documents(chunks, embeddings)
    store.save_local(spec["index"])
    seconds = time.perf_counter() - t0
    return {"documents": len(docs), "chunks": len(chunks), "seconds": seconds, "split_s": split_s,
            "imports_and_load_s": imports, "rss_mb": peak_rss_mb()}


def worker_lc_from_vectors(spec: dict) -> dict:
    """A LangChain FAISS store holding our index's chunks and vectors (the 20k tier: not re-embedded)."""
    from langchain_community.vectorstores import FAISS

    from assistant.index_store import load_index

    index = load_index(Path(spec["index"]))
    vectors = index.vectors.reconstruct_n(0, index.vectors.ntotal)
    pairs = [(c.text, v.tolist()) for c, v in zip(index.chunks, vectors)]
    store = FAISS.from_embeddings(pairs, lc_embeddings(), metadatas=[{"source": c.source} for c in index.chunks])
    store.save_local(spec["out"])
    return {"chunks": len(pairs)}


def worker_lc_ask(spec: dict) -> dict:
    """The recipe's warm latency: ``similarity_search_with_score`` (embeds the query, searches)."""
    from langchain_community.vectorstores import FAISS

    embeddings = lc_embeddings()
    # LangChain's FAISS store keeps its docstore as a pickle; these are files this benchmark just wrote.
    store = FAISS.load_local(spec["index"], embeddings, allow_dangerous_deserialization=True)
    questions = spec["questions"]
    store.similarity_search_with_score(questions[0], k=5)
    first_answer_at = time.time()
    times = []
    for q in questions:
        t0 = time.perf_counter()
        store.similarity_search_with_score(q, k=5)
        times.append((time.perf_counter() - t0) * 1000)
    return {"questions": len(questions), **stats("retrieve", times), "rss_mb": peak_rss_mb(),
            "first_answer_at": first_answer_at}


def lc_embeddings():
    import torch
    from langchain_community.embeddings import HuggingFaceEmbeddings

    from assistant.config import Settings
    from assistant.models import resolve_embedding_model

    location = resolve_embedding_model(Settings.from_env().embed_model, Settings.from_env().home).location
    return HuggingFaceEmbeddings(model_name=str(location), model_kwargs={"device": "cpu",
                                 "model_kwargs": {"dtype": torch.bfloat16}},
                                 encode_kwargs={"normalize_embeddings": True, "batch_size": 16})


WORKERS = {"build": worker_build, "raw": worker_raw, "ask": worker_ask, "add": worker_add,
           "lc_build": worker_lc_build, "lc_from_vectors": worker_lc_from_vectors, "lc_ask": worker_lc_ask}


def measure(kind: str, spec: dict, timeout: int = 3600) -> dict:
    """Run one worker in a fresh Python process; its result plus the wall time of the whole process."""
    t0 = time.time()
    result = run_worker("bench.speed", [kind], spec, timeout, kind)
    result["process_wall_s"] = time.time() - t0
    if "first_answer_at" in result:
        result["cold_start_s"] = result.pop("first_answer_at") - t0
    log.info("%s: %s", kind, rounded(result))
    return result


def cold_start(index: Path, question: str, runs: int = 2) -> list[float]:
    """Seconds from starting ``assistant ask`` as a new process to its exit with the answer printed."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "assistant", "ask", "--index", str(index), "--json", question],
                              capture_output=True, text=True, cwd=REPO, timeout=300)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"assistant ask failed: {proc.stderr[-2000:]}")
    log.info("cold start: %s", [round(t, 2) for t in times])
    return times


# -- corpora ---------------------------------------------------------------------------------------
def variant_tables(texts: list[str], count: int) -> list[dict[int, str]]:
    """Per variant, a fixed permutation of the Chinese characters used in ``texts`` (a bijection)."""
    chars = sorted({ch for text in texts for ch in text if "\u4e00" <= ch <= "\u9fff"})
    tables = []
    for v in range(count):
        shuffled = chars[:]
        random.Random(1000 + v).shuffle(shuffled)
        tables.append(str.maketrans(dict(zip(chars, shuffled))))
    return tables


def write_variants(contexts: dict[str, str], folder: Path, count: int) -> dict[str, tuple[int, dict]]:
    """The CMRC contexts plus ``count`` variants of each; returns variant file name -> (variant, inverse table)."""
    from bench.cmrc_data import source_name, write_corpus

    write_corpus(contexts, folder)
    tables = variant_tables(list(contexts.values()), count)
    inverse = [{v: chr(k) for k, v in table.items()} for table in tables]
    names = {}
    for v, table in enumerate(tables):
        for cid, text in contexts.items():
            name = source_name(cid).replace("ctx-", f"var{v + 1:02d}-")
            path = folder / name
            data = text.translate(table)
            if not path.exists() or path.read_text("utf-8") != data:
                path.write_text(data, "utf-8")
            names[name] = (v, inverse[v])
    return names


class VariantEmbedder:
    """Vectors for variant chunks from their originals' cached real vectors plus seeded noise.

    A variant chunk's text maps back to its original by the inverse character permutation; an
    original chunk (or one whose original is not cached) is embedded for real (and cached).
    """

    def __init__(self, cached, inverses: list[dict], noise: float = 0.05) -> None:
        self.cached = cached
        self.tables = [str.maketrans(inverse) for inverse in inverses]
        self.noise = noise
        self.model_id, self.weights_sha256, self.dtype = cached.model_id, cached.weights_sha256, cached.dtype
        self.real = 0

    @property
    def dimension(self) -> int:
        return self.cached.dimension

    def embed_queries(self, texts):
        return self.cached.embed_queries(texts)

    def embed_documents(self, texts, titles=None):
        return self.embed_passages(texts, titles or [""] * len(texts), [[] for _ in texts])[0]

    def embed_passages(self, texts, titles, units):
        import hashlib

        import numpy as np

        from assistant.embedding import normalize

        originals = []
        for title, text in zip(titles, texts):
            original = text
            for table in self.tables:
                candidate = text.translate(table)
                if candidate != text and self.cached.has_passage(title, candidate):
                    original = candidate
                    break
            originals.append(original)
        self.real += sum(1 for h, t, o in zip(titles, texts, originals) if t == o and not self.cached.has_passage(h, t))
        vectors, unit_vectors = self.cached.embed_passages(originals, titles, units)

        def jitter(matrix, text):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            rng = np.random.default_rng(seed)
            return normalize(matrix + self.noise * rng.standard_normal(matrix.shape).astype(np.float32)
                             / np.sqrt(matrix.shape[-1]))

        out = [jitter(v[None], t)[0] if t != o else v for v, t, o in zip(vectors, texts, originals)]
        units_out = [jitter(u, t) if t != o and len(u) else u for u, t, o in zip(unit_vectors, texts, originals)]
        return np.stack(out), units_out


# -- the run ---------------------------------------------------------------------------------------
def measure_tier(name: str, corpus: Path, work: Path, questions: list[str], cold_question: str,
                 raw_sample: int | None, build: bool, lc_build: bool, index: Path | None = None) -> dict:
    result: dict = {"tier": name}
    ours = index or work / f"{name}-index"
    if build:
        result["build"] = measure("build", {"corpus": str(corpus), "index": str(ours)})
        result["raw"] = measure("raw", {"index": str(ours), "sample": raw_sample})
    result["ask"] = measure("ask", {"index": str(ours), "questions": questions})
    result["cold"] = cold_start(ours, cold_question)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        shutil.copytree(ours, Path(tmp) / "index")
        shutil.copytree(corpus, Path(tmp) / "corpus", symlinks=False)
        from bench.add_document import three_pages

        result["add"] = measure("add", {"corpus": str(Path(tmp) / "corpus"), "index": str(Path(tmp) / "index"),
                                        "document": str(three_pages(Path(tmp) / "new"))})
    lc = work / f"{name}-langchain"
    shutil.rmtree(lc, ignore_errors=True)
    from assistant.config import Settings

    if lc_build:
        result["lc_build"] = measure("lc_build", {"corpus": str(corpus), "index": str(lc),
                                                  "chunk_size": Settings.from_env().chunk_size})
    else:
        measure("lc_from_vectors", {"index": str(ours), "out": str(lc)})
    result["lc_ask"] = measure("lc_ask", {"index": str(lc), "questions": questions})
    return result


def build_20k(contexts: dict[str, str], work: Path, real_variants: bool) -> tuple[Path, Path, dict]:
    """The ~20k-chunk corpus and its index (vectors cached; see the module docstring)."""
    from bench.cmrc import CachedEmbedder

    from assistant.config import Settings
    from assistant.index_store import build_index
    from assistant.ingest import scan_folder
    from assistant.pipeline import make_embedder

    settings = Settings.from_env()
    corpus = work / "corpus-20k"
    names = write_variants(contexts, corpus, VARIANTS)
    inner = make_embedder(settings)
    cache = settings.home / "bench" / "cmrc" / "vectors" / f"{inner.weights_sha256[:16] or 'model'}-{inner.dtype}"
    cached = CachedEmbedder(inner, cache)
    inverses = {v: inverse for v, inverse in names.values()}
    embedder = cached if real_variants else VariantEmbedder(cached, [inverses[v] for v in sorted(inverses)])
    index = work / ("index-20k-real" if real_variants else "index-20k")
    documents, skipped = scan_folder(corpus, settings.max_file_mb << 20)
    if not real_variants:
        # The originals first: a variant's vector is its original's cached one, and the build embeds
        # chunks longest first across documents, so a variant can come before its original.
        originals = [d for d in documents if not d.source.startswith("var")]
        build_index(work / "index-20k-originals", originals, cached, chunk_size=settings.chunk_size,
                    chunk_overlap=settings.chunk_overlap, corpus=corpus)
        cached.save()
    originals_embedded = cached.computed  # by the pass above (0 when they were all cached)
    t0 = time.perf_counter()
    report = build_index(index, documents, embedder, chunk_size=settings.chunk_size,
                         chunk_overlap=settings.chunk_overlap, skipped=skipped, corpus=corpus)
    cached.save()
    info = {"documents": report.documents, "chunks": report.chunks, "seconds": time.perf_counter() - t0,
            "unchanged": report.unchanged, "real_embedded": getattr(embedder, "real", cached.computed),
            "originals_embedded": originals_embedded}
    log.info("20k index: %s", info)
    return corpus, index, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiers", default="default,cmrc,20k", help="comma-separated: default, cmrc, 20k")
    parser.add_argument("--cmrc", type=Path, default=None, help="CMRC 2018 dev json (default CMRC_PATH or "
                        "../shared/bench/cmrc2018/cmrc2018_dev.json)")
    parser.add_argument("--work", type=Path, default=None, help="cache folder (default <assistant home>/bench/speed)")
    parser.add_argument("--questions", type=int, default=150, help="questions per latency measurement")
    parser.add_argument("--raw-sample", type=int, default=400, help="chunks for the raw encode measurement at the "
                        "CMRC size (0 = all)")
    parser.add_argument("--real-variants", action="store_true", help="embed the 20k tier's variants for real")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return serve_worker(WORKERS[args.worker])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    from bench.cmrc_data import DEFAULT_CMRC, load_cmrc, spread, write_corpus
    from bench.common import machine, write_section

    from assistant.config import Settings
    from assistant.evaluation import load_questions

    t_start = time.monotonic()
    settings = Settings.from_env()
    work = (args.work or settings.home / "bench" / "speed").expanduser()
    work.mkdir(parents=True, exist_ok=True)
    tiers = args.tiers.split(",")
    results = []
    own = [q.question for q in load_questions(REPO / "tests" / "data" / "eval.jsonl")]
    if "default" in tiers:
        results.append(measure_tier("default", REPO / "corpus", work, spread(own, args.questions), own[0],
                                    None, True, True))
    if "cmrc" in tiers or "20k" in tiers:
        path = args.cmrc or Path(os.environ.get("CMRC_PATH") or REPO / DEFAULT_CMRC)
        if not path.is_file():
            print(f"error: no CMRC file at {path}: set CMRC_PATH or pass --cmrc", file=sys.stderr)
            return 2
        contexts, items = load_cmrc(path)
        cmrc_questions = [i.question for i in spread(items, args.questions)]
        if "cmrc" in tiers:
            corpus = work / "corpus-cmrc"
            write_corpus(contexts, corpus)
            results.append(measure_tier("cmrc", corpus, work, cmrc_questions, cmrc_questions[0],
                                        args.raw_sample or None, True, True))
        if "20k" in tiers:
            corpus, index, info = build_20k(contexts, work, args.real_variants)
            tier = measure_tier("20k", corpus, work, cmrc_questions, cmrc_questions[0], None, False, False, index)
            tier["index_build"] = info
            results.append(tier)
    report = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "command": " ".join(["python -m bench.speed", *(sys.argv[1:] if argv is None else argv)]),
              "questions": args.questions, "tiers": results, "seconds": time.monotonic() - t_start}
    (work / "last-report.json").write_text(json.dumps(report, indent=1), "utf-8")
    text = render(report)
    print(text)
    if not args.no_write and set(tiers) == {"default", "cmrc", "20k"}:
        write_section(text, REPO / "BENCHMARKS.md", START, END)
    return 0


# -- the table -------------------------------------------------------------------------------------
def render(report: dict) -> str:
    m = report["machine"]
    lines = [f"## Speed and memory (`make bench`)", "",
             f"Measured {report['date']} on {m['cpu']} ({m['cores']} cores, {m['ram_gib']} GiB), "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f"; {m['threads']}. "
             f"Command: `{report['command']}` ({report['seconds'] / 60:.1f} min in all). "
             f"{report['questions']} questions per latency row. LangChain recipe: "
             "`RecursiveCharacterTextSplitter` (same chunk size) + LangChain FAISS + `HuggingFaceEmbeddings` "
             "(same model, bf16, batch 16), `similarity_search_with_score(k=5)`; ratio = ours / recipe.", "",
             "| corpus | chunks | cold build | chunks/s | raw encode chunks/s | build / raw | add 1 doc (its embedding) "
             "| search only p50 / p95 | retrieval p50 / p95 | full answer p50 / p95 | cold start | peak RSS (ask) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in report["tiers"]:
        a, add = t["ask"], t["add"]
        if "build" in t:
            b, raw = t["build"], t["raw"]
            rate = b["chunks"] / b["seconds"]
            build = f"{b['seconds']:.1f} s ({b['documents'] / b['seconds']:.2f} docs/s)"
            throughput = f"{rate:.1f} | {raw['chunks_per_s']:.1f} | {rate / raw['chunks_per_s']:.0%}"
            chunks = b["chunks"]
        else:
            info = t["index_build"]
            build = "n/a (vectors cached)"
            throughput = "n/a | n/a | n/a"
            chunks = info["chunks"]
        lines.append(f"| {t['tier']} (ours) | {chunks:,} | {build} | {throughput} | {add['add_s']:.2f} s "
                     f"({add['embed_s']:.2f} s) | {a['search_p50_ms']:.1f} / {a['search_p95_ms']:.1f} ms | "
                     f"{a['retrieve_p50_ms']:.0f} / {a['retrieve_p95_ms']:.0f} ms | "
                     f"{a['answer_p50_ms']:.0f} / {a['answer_p95_ms']:.0f} ms | {min(t['cold']):.1f} s | "
                     f"{a['rss_mb'] / 1024:.2f} GB |")
        lc = t["lc_ask"]
        if "lc_build" in t:
            lb = t["lc_build"]
            lc_build = f"{lb['seconds']:.1f} s ({lb['documents'] / lb['seconds']:.2f} docs/s)"
            lc_rate = f"{lb['chunks'] / lb['seconds']:.1f}"
            ratio = f" (ratio {b['seconds'] / lb['seconds']:.2f})" if "build" in t else ""
            lc_chunks = f"{lb['chunks']:,}"
        else:
            lc_build, lc_rate, ratio, lc_chunks = "n/a (our vectors)", "n/a", "", f"{chunks:,}"
        lines.append(f"| {t['tier']} (LangChain) | {lc_chunks} | {lc_build}{ratio} | {lc_rate} | | | | | "
                     f"{lc['retrieve_p50_ms']:.0f} / {lc['retrieve_p95_ms']:.0f} ms (ratio "
                     f"{a['retrieve_p50_ms'] / lc['retrieve_p50_ms']:.2f}) | (no answer step) | "
                     f"{lc['cold_start_s']:.1f} s | {lc['rss_mb'] / 1024:.2f} GB |")
    lines += ["", "Columns: *cold build* = `Assistant.build(rebuild=True)` in a fresh process after the model "
              "is loaded (chunking, embedding with sentence vectors, BM25, write); *raw encode* = "
              "the embedder's encode alone, in the runtime builds use (ONNX Runtime by default, else "
              "`SentenceTransformer.encode`), on the same chunk texts and prompt (at the CMRC size a seeded "
              "random sample of chunks); *add 1 doc* = `Assistant.add` of a new 3-page document (`bench.add_document.three_pages`, 4,724 characters) to a copy of "
              "the index (an add-only update: stats the corpus, reads only the new file, writes one new segment; "
              "jieba loaded first, as in a server) with the time to embed "
              "that document alone in brackets; *search only* = FAISS + BM25 + fusion for an embedded query; "
              "*retrieval* = query embedding + hybrid search; *full answer* = "
              "`Assistant.ask`; *cold start* = `python -m assistant ask` as a new process, start to exit "
              "(best of 2; the recipe: process start to its first search result, loading its pickled store); "
              "*peak RSS* = the asking process's own maximum resident set (VmHWM from /proc/<pid>/status; not "
              "`ru_maxrss`, which carries the parent's peak into a child)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
