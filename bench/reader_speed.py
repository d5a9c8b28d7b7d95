"""Warm answer latency of the span reader (the default) beside the passage reader, over an existing index.

Seeded CMRC 2018 dev questions (they match an index of CMRC contexts, such as bench/speed's 20k
tier), each asked once per reader after a warm-up question; p50 / p95 of the whole ``ask`` and of
its reader part. Run it on an idle machine.

Usage: python -m bench.reader_speed INDEX [--questions N] [--cmrc PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path

from bench.cmrc_data import DEFAULT_CMRC, load_cmrc
from bench.common import percentile

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index", type=Path, help="index folder, e.g. ~/.cache/assistant/bench/speed/index-20k")
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--cmrc", type=Path, default=None, help="CMRC 2018 dev json (default ../shared/bench/...)")
    args = ap.parse_args(argv)

    from assistant.config import Settings
    from assistant.pipeline import Assistant

    _, items = load_cmrc(args.cmrc or Path(os.environ.get("CMRC_PATH") or REPO / DEFAULT_CMRC))
    questions = [i.question for i in random.Random(7).sample(items, args.questions)]
    assistant = Assistant(Settings.from_env(index=args.index.expanduser()))
    out: dict = {"chunks": assistant.status().chunks, "questions": len(questions)}
    for name in ("extractive", "span"):
        reader = assistant.reader_named(name)
        assistant.ask(questions[0], reader=reader)  # warm: the index and the models
        total, read = [], []
        for question in questions:
            answer = assistant.ask(question, reader=reader)
            total.append(answer.timings_ms["total"])
            read.append(answer.timings_ms["read"])
        out[name] = {"p50_ms": round(statistics.median(total), 1), "p95_ms": round(percentile(total, 0.95), 1),
                     "read_p50_ms": round(statistics.median(read), 1)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
