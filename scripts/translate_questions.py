"""English versions of Chinese training questions, written by the project's local LLM (for the span reader).

The training data has no English question about a Chinese passage, though that is a main use of the
product; this writes them: each Chinese question goes to Qwen2.5-Coder-1.5B-Instruct (the generative
reader's verified GGUF, greedy decoding) with an instruction to translate it. Answers stay the
Chinese passage's spans, so a translation only has to keep the question's meaning.

Translations are cached by question text in ``~/.cache/assistant/reader-train/questions-en-<prompt>.jsonl``
(one JSON object per line, appended as they are written), so a re-run translates nothing twice and
an interrupted run resumes. Used by ``scripts/train_reader.py --cross-lingual N``.

Usage: python scripts/train_reader.py --cross-lingual N --translate-only (translates what training needs, then stops)
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

SYSTEM = ("You translate Chinese questions into English. You never answer them. Reply with the English "
          "question only, on one line, ending with a question mark, keeping every name, number and date.")
ASK = "Translate this question into English; do not answer it.\n{}"
# Worked examples, written for this prompt (none is from the training data or the benchmark).
SHOTS = [("秦始皇在哪一年统一了六国？", "In which year did Qin Shi Huang unify the six states?"),
         ("《红楼梦》的作者是谁？", "Who is the author of Dream of the Red Chamber?"),
         ("长江全长大约多少公里？", "About how many kilometres long is the Yangtze River?"),
         ("为什么大熊猫主要吃竹子？", "Why do giant pandas mainly eat bamboo?")]
# The cache is named after the prompt: a changed prompt never reuses the old prompt's translations.
PROMPT_KEY = hashlib.sha256(json.dumps([SYSTEM, ASK, SHOTS], ensure_ascii=False).encode()).hexdigest()[:12]
CACHE = Path.home() / ".cache" / "assistant" / "reader-train" / f"questions-en-{PROMPT_KEY}.jsonl"


def _turn(role: str, text: str) -> str:  # Qwen2.5's ChatML
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


PREFIX = _turn("system", SYSTEM) + "".join(_turn("user", ASK.format(zh)) + _turn("assistant", en) for zh, en in SHOTS)


def prompt(question: str) -> str:
    return PREFIX + _turn("user", ASK.format(question)) + "<|im_start|>assistant\n"


def _clean(text: str) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return re.sub(r'^(english|translation)\s*:\s*', "", line, flags=re.I).strip(' "“”')


def usable(question: str, english: str) -> bool:
    """A translation worth training on: a question (it ends with "?": a small model asked to translate
    sometimes answers instead), in Latin script, not a copy of the Chinese, not runaway."""
    if not english.endswith("?") or len(english) > 4 * len(question) + 40:
        return False
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in english)
    return cjk <= 0.2 * len(english) and sum(ch.isascii() and ch.isalpha() for ch in english) >= 3


def load_cache(path: Path = CACHE) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text("utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by an interrupted run
                continue
            out[row["zh"]] = row["en"]
    return out


def translate(questions: list[str], path: Path = CACHE, progress: bool = True) -> dict[str, str]:
    """{Chinese question: English question} for every question, translating only those not cached."""
    from tqdm import tqdm

    from assistant.config import Settings
    from assistant.generative import LlamaModel, llm_model_path

    done = load_cache(path)
    todo = list(dict.fromkeys(q for q in questions if q not in done))
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        llm = LlamaModel(llm_model_path(Settings()), n_ctx=1024).load()
        # The instructions and examples are read once; every question starts from that saved state,
        # so each translation is the same as from a fresh start, without re-reading the prefix.
        llm.reset()
        llm.eval(llm.tokenize(PREFIX.encode(), add_bos=False, special=True))
        start = llm.save_state()
        with path.open("a", encoding="utf-8") as out, tqdm(todo, desc="translating questions", unit="q",
                                                           disable=not progress) as bar:
            for q in bar:
                llm.load_state(start)
                reply = llm.create_completion(prompt(q), max_tokens=64, temperature=0.0, top_k=1,
                                              stop=["<|im_end|>", "\n"])
                done[q] = _clean(reply["choices"][0]["text"])
                out.write(json.dumps({"zh": q, "en": done[q]}, ensure_ascii=False) + "\n")
                out.flush()
    return {q: done[q] for q in questions}
