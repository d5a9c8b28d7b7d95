"""``assistant eval``: retrieval, answer and abstention quality on a JSONL question set."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AssistantError
from .types import Answer


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    sources: tuple[str, ...]
    keys: tuple[str, ...]
    answerable: bool
    lang: str = ""


@dataclass
class Report:
    rows: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def load_questions(path: Path) -> list[Question]:
    questions = []
    try:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            questions.append(Question(str(row["id"]), str(row["question"]), tuple(row.get("sources", [])),
                                      tuple(row.get("keys", [])), bool(row.get("answerable", True)),
                                      str(row.get("lang", ""))))
    except (OSError, UnicodeDecodeError) as exc:
        raise AssistantError(f"cannot read {path}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise AssistantError(f"{path} line {number}: not a valid eval question ({exc})") from exc
    if not questions:
        raise AssistantError(f"{path} holds no questions")
    return questions


def score(question: Question, answer: Answer, document_text) -> dict:
    """One row of the report. ``document_text(source)`` returns a document's text, for verifying quotes."""
    cited = answer.related if answer.abstained else answer.citations
    ranks = [c.n for c in cited if c.source in question.sources]
    valid = [document_text(c.source)[c.start:c.end] == c.quote for c in [*answer.citations, *answer.related]]
    keys_found = [k for k in question.keys if k.lower() in answer.text.lower()]
    return {
        "id": question.id, "question": question.question, "answerable": question.answerable,
        "abstained": answer.abstained, "first_hit": min(ranks) if ranks else None,
        "key_recall": len(keys_found) / len(question.keys) if question.keys else None,
        "keys_missing": [k for k in question.keys if k not in keys_found],
        "citations_valid": all(valid), "citations": len(valid),
        "ms": answer.timings_ms.get("total", 0.0),
        "sources": [c.source for c in cited],
    }


def summarize(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    answered = [r for r in answerable if not r["abstained"]]

    def share(xs) -> float:
        xs = list(xs)
        return sum(xs) / len(xs) if xs else float("nan")

    abstained = [r for r in rows if r["abstained"]]
    ms = sorted(r["ms"] for r in rows)
    return {
        "questions": len(rows), "answerable": len(answerable), "unanswerable": len(unanswerable),
        "hit@1": share(r["first_hit"] == 1 for r in answered) * len(answered) / max(len(answerable), 1),
        "hit@5": share(r["first_hit"] is not None and r["first_hit"] <= 5 for r in answered)
        * len(answered) / max(len(answerable), 1),
        "mrr": sum(1 / r["first_hit"] for r in answered if r["first_hit"]) / max(len(answerable), 1),
        "key_recall": share(r["key_recall"] if not r["abstained"] else 0.0 for r in answerable),
        "citation_validity": share(r["citations_valid"] for r in rows),
        "abstention_precision": share(not r["answerable"] for r in abstained),
        "abstention_recall": share(r["abstained"] for r in unanswerable),
        "latency_p50_ms": statistics.median(ms) if ms else 0.0,
        "latency_p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))] if ms else 0.0,
    }


def run(assistant, questions: list[Question], corpus: Path, progress=None) -> Report:
    """Ask every question and score it; quotes are checked against the documents in ``corpus``."""
    from .ingest import read_document

    texts: dict[str, str] = {}

    def document_text(source: str) -> str:
        if source not in texts:
            texts[source] = read_document(corpus / source, corpus).text
        return texts[source]

    report = Report()
    for i, q in enumerate(questions):
        report.rows.append(score(q, assistant.ask(q.question), document_text))
        if progress:
            progress(i + 1, len(questions))
    report.metrics = summarize(report.rows)
    return report


def format_report(report: Report) -> str:
    m = report.metrics
    lines = [f"{m['questions']} questions ({m['answerable']} answerable, {m['unanswerable']} not covered)", ""]
    for key in ("hit@1", "hit@5", "mrr", "key_recall", "citation_validity", "abstention_precision",
                "abstention_recall"):
        lines.append(f"  {key:<22} {m[key]:.3f}")
    lines.append(f"  {'latency p50 / p95':<22} {m['latency_p50_ms']:.0f} / {m['latency_p95_ms']:.0f} ms")
    failures = [r for r in report.rows if _failed(r)]
    if failures:
        lines += ["", f"{len(failures)} questions not fully right:"]
        for r in failures:
            what = ("answered, should abstain" if not r["answerable"] else "abstained" if r["abstained"]
                    else f"first right source at {r['first_hit']}, missing keys {r['keys_missing']}")
            lines.append(f"  {r['id']} {r['question'][:50]!r}: {what}")
    return "\n".join(lines)


def _failed(row: dict) -> bool:
    if not row["answerable"]:
        return not row["abstained"]
    return row["abstained"] or row["first_hit"] != 1 or bool(row["keys_missing"]) or not row["citations_valid"]
