"""CMRC 2018 data for the benchmarks: the SQuAD-style dev file, its English translations, the corpus folder."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CMRC = Path("../shared/bench/cmrc2018/cmrc2018_dev.json")  # relative to the repository
EN_QUESTIONS = Path(__file__).resolve().with_name("cmrc_en_questions.jsonl")


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answers: tuple[str, ...]
    source: str  # the document holding the question's context


def source_name(context_id: str) -> str:
    return f"ctx-{context_id}.txt"


def load_cmrc(path: Path) -> tuple[dict[str, str], list[Item]]:
    """(context id -> text, the questions) from a SQuAD-style CMRC file."""
    data = json.loads(path.read_text("utf-8"))
    contexts: dict[str, str] = {}
    items: list[Item] = []
    for article in data["data"]:
        for n, paragraph in enumerate(article["paragraphs"]):
            cid = str(paragraph.get("id") or f"{article.get('id', 'A')}-{n}")
            contexts[cid] = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"] if a["text"].strip()))
                items.append(Item(str(qa["id"]), qa["question"], answers, source_name(cid)))
    return contexts, items


def load_dev(path: Path) -> tuple[dict[str, str], list[dict]]:
    """bench/reader.py's view of the same file: (paragraph id -> context, questions as dicts with every
    gold answer as given)."""
    data = json.loads(path.read_text("utf-8"))["data"]
    contexts, questions = {}, []
    for article in data:
        for p in article["paragraphs"]:
            contexts[p["id"]] = p["context"]
            for qa in p["qas"]:
                questions.append({"id": qa["id"], "question": qa["question"], "context_id": p["id"],
                                  "answers": [a["text"] for a in qa["answers"]]})
    return contexts, questions


def load_english(path: Path, chinese: dict[str, Item]) -> list[tuple[Item, Item]]:
    """(English item, its Chinese original) pairs."""
    pairs = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            original = chinese[row["source_question_id"]]
            english = Item(row["id"], row["question"], tuple(row["answers"]), source_name(row["context_id"]))
            if english.source != original.source:
                raise SystemExit(f"{path}: {row['id']} names context {row['context_id']}, "
                                 f"but {original.id} belongs to {original.source}")
            pairs.append((english, original))
    return pairs


def spread(items: list, limit: int | None) -> list:
    """``limit`` items evenly spaced over the list (all of them without a limit)."""
    if not limit or limit >= len(items):
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def write_corpus(contexts: dict[str, str], folder: Path) -> None:
    """One text file per context; unchanged files are left alone, files of other contexts removed."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {source_name(cid): text for cid, text in contexts.items()}
    for path in folder.glob("ctx-*.txt"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        path = folder / name
        data = text.encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
