"""Extractive vs generative reader on the own eval set: quality, grounding, language, latency.

    python -m bench.readers [--reader extractive|llm|both] [--ids q001,q002,...|--every N] [--out FILE.json]

Each question is asked through ``Assistant.ask_stream`` (as the CLI and UI do) over an index of
``corpus/`` built in ``.bench-cache/readers-index``. Besides ``assistant eval``'s metrics it records,
per answer: sentences shown and how many passed the grounding check (LLM: a ``[n]`` marker, not
``[?]``), whether the answer is in the question's language (by the Chinese/English test the readers
use), time to first text and total time. For calibrating the support threshold it also keeps every
draft sentence's best support score against its own passages and against another question's passages.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from assistant.config import Settings  # noqa: E402
from assistant.evaluation import load_questions, score, summarize  # noqa: E402
from assistant.generative import UNSUPPORTED, check_sentences, parse_markers, split_sentences  # noqa: E402
from assistant.pipeline import Assistant  # noqa: E402
from assistant.reader import Response, is_chinese  # noqa: E402
from bench.common import REPO as ROOT  # noqa: E402


class Recorder:
    """Wraps a streaming reader and keeps the passages and the draft of the last question."""

    name = "llm"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last = None

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    def load(self) -> None:
        self.inner.load()

    def read(self, passages):
        return self.stream(passages).answer()

    def stream(self, passages):
        def run():
            inner = self.inner.stream(passages)
            draft = []
            for delta in inner:
                draft.append(delta)
                yield delta
            self.last = (passages, "".join(draft))
            return inner.answer()

        return Response(run())


def answer_language_ok(answer, lang: str) -> bool | None:
    if answer.abstained or not lang:
        return None
    text, _ = parse_markers(answer.text.replace(UNSUPPORTED, ""))
    return is_chinese(text) == (lang == "zh")


class Replay:
    """A ChatModel that gives back the drafts of an earlier run (greedy decoding: the same text again)."""

    def __init__(self, drafts: dict[str, str]) -> None:
        self.drafts = drafts

    def chat(self, messages, max_tokens):
        user = messages[-1]["content"]
        question = user[user.rindex("\nQuestion: ") + len("\nQuestion: "):].rsplit("\n", 1)[0]
        yield self.drafts[question]


def run(assistant: Assistant, reader_name: str, questions, corpus: Path, reader=None, timings=None) -> dict:
    from assistant.ingest import read_document

    texts: dict[str, str] = {}

    def document_text(source: str) -> str:
        if source not in texts:
            texts[source] = read_document(corpus / source, corpus).text
        return texts[source]

    reader = reader or assistant.reader_named(reader_name)
    recorder = Recorder(reader) if reader_name == "llm" else reader
    questions = list(questions)
    rows, drafts = [], []
    for i, q in enumerate(questions):
        answer = assistant.ask_stream(q.question, reader=recorder).answer()
        row = score(q, answer, document_text)
        sentences = split_sentences(answer.text) if not answer.abstained else []
        row.update(lang=q.lang, answer=answer.text, abstained=answer.abstained,
                   language_ok=answer_language_ok(answer, q.lang),
                   sentences=len(sentences),
                   supported=sum(1 for s in sentences if s.markers) if reader_name == "llm" else len(sentences),
                   first_ms=answer.timings_ms.get("first_text", answer.timings_ms["total"]),
                   total_ms=answer.timings_ms["total"])
        if timings:  # a replay: the latency is the original run's
            row.update(first_ms=timings[q.id]["first_ms"], total_ms=timings[q.id]["total_ms"], ms=timings[q.id]["ms"])
        if reader_name == "llm" and getattr(recorder, "last", None) is not None:
            drafts.append((q, *recorder.last))
            row["draft"] = recorder.last[1]
            recorder.last = None
        rows.append(row)
        print(f"[{i + 1}/{len(questions)}] {q.id} {reader_name} {row['total_ms'] / 1000:.1f}s "
              f"abstained={answer.abstained} hit={row['first_hit']} keys={row['key_recall']} "
              f"lang_ok={row['language_ok']} supported={row['supported']}/{row['sentences']}", file=sys.stderr,
              flush=True)
    metrics = summarize(rows)
    answered = [r for r in rows if not r["abstained"]]
    langs = [r["language_ok"] for r in rows if r["language_ok"] is not None]
    en = [r["language_ok"] for r in rows if r["language_ok"] is not None and r["lang"] == "en"]
    firsts = sorted(r["first_ms"] for r in rows if not r["abstained"])
    totals = sorted(r["total_ms"] for r in rows)
    metrics.update(
        sentences=sum(r["sentences"] for r in answered), supported=sum(r["supported"] for r in answered),
        grounded_share=(sum(r["supported"] for r in answered) / max(1, sum(r["sentences"] for r in answered))),
        language_match=sum(langs) / max(1, len(langs)), english_answered_in_english=sum(en) / max(1, len(en)),
        english_answered=len(en),
        first_text_p50_ms=statistics.median(firsts) if firsts else 0.0,
        first_text_p95_ms=firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))] if firsts else 0.0,
        total_p50_ms=statistics.median(totals), total_p95_ms=totals[min(len(totals) - 1, round(0.95 * (len(totals) - 1)))],
    )
    support = calibration(reader, drafts) if drafts else {}
    return {"metrics": metrics, "rows": rows, "support": support}


def calibration(reader, drafts) -> dict:
    """Best support score of every draft sentence against its own 3 passages (what the check uses), and
    against the passages of another question none of whose passages comes from the same documents
    (negatives: support there would be a false pass). Sentences and units are embedded once each."""
    import numpy as np

    from assistant.generative import claim_text, passage_units

    prepared = []
    for q, passages, draft in drafts:
        sentences = split_sentences(draft)
        hits = passages.hits[:reader.passages]
        if not sentences or not hits:
            continue
        units = [(hit, u) for hit in hits for u in passage_units(hit.chunk.text)]
        unit_vectors = reader.embedder.embed_documents([h.chunk.text[u.start:u.end] for h, u in units],
                                                       [h.chunk.heading for h, u in units])
        claims = reader.embedder.embed_documents([claim_text(s) for s in sentences])
        sources = {h.chunk.source for h in hits} | set(q.sources)
        prepared.append((q, sentences, claims, unit_vectors, sources))
    own, other, english, other_english = [], [], [], []
    for i, (q, sentences, claims, units, sources) in enumerate(prepared):
        own += [round(float(x), 4) for x in (claims @ units.T).max(axis=1)]
        english += [not is_chinese(s.text) for s in sentences]
        for k in range(1, len(prepared)):
            _, _, _, wrong, wrong_sources = prepared[(i + k) % len(prepared)]
            if not wrong_sources & sources:
                other += [round(float(x), 4) for x in (claims @ wrong.T).max(axis=1)]
                other_english += [not is_chinese(s.text) for s in sentences]
                break
    return {"own": own, "other": other, "own_english": english, "other_english": other_english}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reader", choices=["extractive", "llm", "both"], default="both")
    p.add_argument("--ids", default="", help="comma-separated question ids (default: all)")
    p.add_argument("--every", type=int, default=1, help="every N-th question of the file")
    p.add_argument("--out", type=Path, default=ROOT / ".bench-cache" / "readers.json")
    p.add_argument("--replay", type=Path, default=None,
                   help="re-check the LLM drafts of an earlier --out file (with --min-support) instead of generating")
    p.add_argument("--min-support", type=float, default=None)
    p.add_argument("--min-support-cross", type=float, default=None)
    args = p.parse_args()
    questions = load_questions(ROOT / "tests" / "data" / "eval.jsonl")
    if args.ids:
        wanted = args.ids.split(",")
        questions = [q for q in questions if q.id in wanted]
    questions = questions[::args.every]
    settings = Settings.from_env(corpus=ROOT / "corpus", index=ROOT / ".bench-cache" / "readers-index")
    assistant = Assistant(settings)
    t0 = time.monotonic()
    assistant.build()
    print(f"index ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    results = {"questions": [q.id for q in questions], "settings": {"llm_threads": settings.llm_threads}}
    if args.replay:
        from assistant.generative import DEFAULT_MIN_SUPPORT, GenerativeReader

        old = json.loads(args.replay.read_text("utf-8"))
        rows = {r["id"]: r for r in old["llm"]["rows"]}
        drafts = {r["question"]: r.get("draft", "") for r in rows.values()}
        reader = GenerativeReader(assistant.embedder, Replay(drafts), settings.min_evidence or 0.45,
                                  args.min_support or DEFAULT_MIN_SUPPORT, args.min_support_cross)
        questions = [q for q in questions if q.id in rows]
        results["llm"] = run(assistant, "llm", questions, ROOT / "corpus", reader, rows)
        results["replay_of"] = str(args.replay)
        results["min_support"] = [reader.min_support, reader.min_support_cross]
        results["extractive"] = old.get("extractive")
        print(json.dumps({"llm": results["llm"]["metrics"]}, indent=1), file=sys.stderr)
    for name in ([] if args.replay else ["extractive", "llm"] if args.reader == "both" else [args.reader]):
        if name == "llm":
            t0 = time.monotonic()
            assistant.reader_named("llm").load()
            results["llm_load_s"] = round(time.monotonic() - t0, 2)
        results[name] = run(assistant, name, questions, ROOT / "corpus")
        print(json.dumps({name: results[name]["metrics"]}, indent=1), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=1), "utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
