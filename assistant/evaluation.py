"""``assistant eval``: retrieval, answer and abstention quality on a JSONL question set."""
from __future__ import annotations

import json
import re
import statistics
import unicodedata
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
    answers: tuple[str, ...] = ()  # gold answer texts, where known: scored by exact match and F1


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
                                      str(row.get("lang", "")), tuple(row.get("answers", []))))
    except (OSError, UnicodeDecodeError) as exc:
        raise AssistantError(f"cannot read {path}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise AssistantError(f"{path} line {number}: not a valid eval question ({exc})") from exc
    if not questions:
        raise AssistantError(f"{path} holds no questions")
    return questions


_WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")


def _segments(text: str) -> list[str]:
    """CMRC 2018's mixed segmentation: Latin words and numbers whole, every other character alone,
    lower-cased, punctuation and spaces dropped."""
    return [t for t in _WORD.findall(text.lower()) if not unicodedata.category(t[0]).startswith(("P", "S"))]


def _longest_common_run(a: list[str], b: list[str]) -> int:
    best, row = 0, [0] * (len(b) + 1)
    for x in a:
        prev, row = row, [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                row[j] = prev[j - 1] + 1
                best = max(best, row[j])
    return best


def answer_scores(prediction: str, golds: list[str] | tuple[str, ...]) -> tuple[float, float]:
    """(exact match, F1) of an answer against its gold answers, as the CMRC 2018 evaluation scores them:
    the best over the golds; F1 from the longest common run of segments."""
    pred = _segments(prediction)
    em = f1 = 0.0
    for gold in golds:
        ref = _segments(gold)
        em = max(em, float(pred == ref and bool(ref)))
        common = _longest_common_run(pred, ref)
        if common:
            p, r = common / len(pred), common / len(ref)
            f1 = max(f1, 2 * p * r / (p + r))
    return em, f1


def roc_auc(scores, positive) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative (ties 1/2)."""
    import numpy as np

    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def score(question: Question, answer: Answer, document_text) -> dict:
    """One row of the report. ``document_text(source)`` returns a document's text, for verifying quotes."""
    cited = answer.related if answer.abstained else answer.citations
    ranks = [c.n for c in cited if c.source in question.sources]
    valid = [document_text(c.source)[c.start:c.end] == c.quote for c in [*answer.citations, *answer.related]]
    keys_found = [k for k in question.keys if k.lower() in answer.text.lower()]
    em = f1 = None
    if question.answers and question.answerable:  # the exact span when there is one, else the whole answer
        em, f1 = (0.0, 0.0) if answer.abstained else answer_scores(
            answer.span.quote if answer.span is not None else answer.text, question.answers)
    return {
        "id": question.id, "question": question.question, "answerable": question.answerable,
        "abstained": answer.abstained, "first_hit": min(ranks) if ranks else None,
        "key_recall": len(keys_found) / len(question.keys) if question.keys else None,
        "keys_missing": [k for k in question.keys if k not in keys_found],
        "citations_valid": all(valid), "citations": len(valid),
        "ms": answer.timings_ms.get("total", 0.0),
        "sources": [c.source for c in cited],
        "em": em, "f1": f1, "span": answer.span.quote if answer.span is not None else None,
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
    golds = [r for r in rows if r.get("em") is not None]
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
        "answer_em": share(r["em"] for r in golds), "answer_f1": share(r["f1"] for r in golds),
        "with_gold_answers": len(golds), "span_answers": sum(r.get("span") is not None for r in rows),
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
    if m.get("with_gold_answers"):
        lines.append(f"  {'answer EM / F1':<22} {m['answer_em']:.3f} / {m['answer_f1']:.3f} "
                     f"({m['with_gold_answers']} questions with gold answers)")
    lines.append(f"  {'span answers':<22} {m.get('span_answers', 0)}")
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
