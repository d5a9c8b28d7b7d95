"""The reader's training-data selection (scripts/train_reader.py) and its English copies of Chinese
questions (scripts/translate_questions.py): pure functions, no model."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import train_reader as tr  # noqa: E402
from scripts import translate_questions as tq  # noqa: E402


def _sources() -> dict[str, list[dict]]:
    def article(title: str, n: int, question: str) -> dict:
        paragraphs = []
        for i in range(n):
            context = f"{title} paragraph {i} holds answer{i}."
            start = context.index(f"answer{i}")
            paragraphs.append({"context": context, "qas": [
                {"question": question.format(title=title, i=i), "impossible": False,
                 "answers": [(start, f"answer{i}")], "golds": [f"answer{i}"]}]})
        return {"title": title, "paragraphs": paragraphs}

    return {"drcd": [article(f"zh-article-{k}", 2, "第{title}篇文章第{i}段讲了什么？") for k in range(140)],
            "squad2": [article(f"en-article-{k}", 4, "What does {title} say in paragraph {i}?") for k in range(30)]}


def test_choose_pairs_keeps_per_language_limits_and_is_seeded():
    kept, held = tr.choose_pairs(_sources(), random.Random(1), 0.5, 20, 7)
    assert sum(p["lang"] == "zh" for p in kept) == 20
    assert sum(p["lang"] == "en" for p in kept) == 7
    assert held and not {p["question"] for p in held} & {p["question"] for p in kept if p["answer"]}
    again, _ = tr.choose_pairs(_sources(), random.Random(1), 0.5, 20, 7)
    assert [p["question"] for p in again] == [p["question"] for p in kept]


def test_english_copies_keep_passage_and_answer_and_mark_the_source():
    kept, held = tr.choose_pairs(_sources(), random.Random(2), 0.5, 40, 5)
    chosen, held_xl = tr.cross_lingual_sources(kept, held, 10, 6)
    assert len(chosen) == 10 and all(p["lang"] == "zh" for p in chosen)
    assert len(held_xl) == 6 and all(p in held for p in held_xl)
    assert tr.cross_lingual_sources(kept, held, 10, 6)[1] == held_xl  # its own seed: the same every run
    english = {p["question"]: f"English question {n}?" for n, p in enumerate(chosen)}
    english[chosen[0]["question"]] = chosen[0]["question"]  # an untranslated copy is dropped
    copies = tr.english_copies(chosen, english)
    dropped = sum(english[p["question"]] == p["question"] for p in chosen)  # a question may appear twice
    assert len(copies) == 10 - dropped and dropped >= 1
    for copy in copies:
        original = next(p for p in chosen if english[p["question"]] == copy["question"]
                        and p["context"] == copy["context"])
        assert copy["lang"] == "en" and copy["answer"] == original["answer"]
        name, _, kind = original["source"].partition("-")
        assert copy["source"] == f"{name}-en" + (f"-{kind}" if kind else "")
    negatives = [c for c in copies if c["answer"] is None]
    assert all(c["source"].endswith(("hard", "other")) for c in negatives)  # the data summary's rule still holds


def test_usable_rejects_copies_empties_and_runaways():
    q = "《战国无双3》是由哪两个公司合作开发的？"
    assert tq.usable(q, "Which two companies co-developed Samurai Warriors 3?")
    assert not tq.usable(q, "")
    assert not tq.usable(q, q)
    assert not tq.usable(q, "Which 两个公司合作开发了战国无双3?")
    assert not tq.usable(q, "what " * 40 + "?")
    assert not tq.usable(q, "Koei and Omega Force co-developed it.")  # answered, not translated


def test_clean_keeps_the_first_line_without_labels_or_quotes():
    assert tq._clean('Translation: "Who wrote it?"\nExplanation: ...') == "Who wrote it?"
    assert tq._clean("  English: When was it built?  ") == "When was it built?"
    assert tq._clean("\n\n") == ""


def test_load_cache_skips_a_line_cut_off_by_an_interrupted_run(tmp_path):
    path = tmp_path / "questions-en.jsonl"
    rows = [{"zh": "谁写的？", "en": "Who wrote it?"}, {"zh": "何时？", "en": "When?"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + '{"zh": "半', "utf-8")
    assert tq.load_cache(path) == {"谁写的？": "Who wrote it?", "何时？": "When?"}
    assert tq.load_cache(tmp_path / "missing.jsonl") == {}
