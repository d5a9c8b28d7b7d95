"""The generative reader: a small local LLM writes the answer; every sentence is checked against the passages.

It implements the same ``Reader`` protocol as the extractive reader. Steps:

1. Abstain before generating when the passages do not cover the question: the span reader's
   decision (span_reader.Answerability: cosine evidence, and the reader model below the cosine
   threshold) where the reader model fits, else the calibrated cosine threshold alone; the closest
   passages are given as related reading.
2. Prompt the model (its own chat template) with the top passages, numbered and capped in length,
   the question, and an instruction to answer only from them, in the question's language, citing [n].
3. Grounding check: split the answer into sentences and tie each one to a passage: its own valid
   ``[n]`` when that passage supports it, else the passage whose best unit (sentence / list item)
   is most similar to it under the embedding model. A sentence whose support is below
   ``min_support`` is marked ``[?]`` and never cited. If no sentence is supported, the reader abstains.
4. Each cited passage becomes one Citation of the exact span (``quote == document.text[start:end]``)
   covering the units that supported the answer's sentences.

llama-cpp-python is imported only when the model loads; the model loads once and one generation
runs at a time.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .chunking import Span, spans
from .config import Settings
from .embedding import Embedder
from .errors import ConfigError, ModelError
from .models import QWEN_CODER_1_5B, check_ready
from .language import is_chinese
from .reader import DEFAULT_MIN_EVIDENCE, ExtractiveReader, Passages, Reading, Response, cite_passage
from .types import Citation

log = logging.getLogger(__name__)

# Calibrated on tests/data/eval.jsonl (see BENCHMARKS.md, "Generative reader"): cosine similarity
# between an answer sentence and a passage unit below which the unit does not support it. Sentence and
# unit in different scripts (an English sentence, a Chinese passage) score lower for the same content,
# so they get their own threshold; both let about 5% of sentences pass against unrelated documents.
DEFAULT_MIN_SUPPORT = 0.68
DEFAULT_MIN_SUPPORT_CROSS = 0.58
UNSUPPORTED = "[?]"  # shown after a sentence that failed the grounding check; never a citation
INSTALL_HINT = ("the LLM reader needs llama-cpp-python: run `make install-llm` "
                "(or CMAKE_ARGS=-DGGML_NATIVE=OFF pip install --no-cache-dir '.[llm]')")

SYSTEM = ("You answer questions using only the numbered passages from the user's documents. "
          "After each statement, cite the passage it comes from as [1], [2] or [3]. "
          "If the passages do not answer the question, say only that the documents do not cover it. "
          "Be brief: at most five sentences. Do not add facts that are not in the passages.")
_LANGUAGE = {True: "请用中文回答。", False: "Answer in English (the passages may be in Chinese: translate what you use)."}

# [1] [1, 2] [1][2] 【1】 [^1] [passage 1]: the numbers a sentence cites.
_MARKER = re.compile(r"\s*(?:\[\s*(?:\^|passage\s*|source\s*)?(\d+(?:\s*[,，、]\s*\d+)*)\s*\]|【\s*(\d+)\s*】|\[\?\])",
                     re.I)
_END = re.compile(r"((?:[。！？!?]+|\.(?=\s|$))(?:\s*\[[^\]\n]{1,20}\]|\s*【[^】\n]{1,8}】)*)")
_WORD = re.compile(r"[A-Za-z0-9\u3400-\u9fff]")
_DECOR = re.compile(r"^[\s>*#\-+\d.、)）]*|[*_`]+")


class ChatModel(Protocol):
    """Streams the assistant's reply to chat ``messages`` as text deltas."""

    def chat(self, messages: list[dict], max_tokens: int) -> Iterator[str]: ...


# -- the model ----------------------------------------------------------------------------------------
def llama_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaModel:
    """A GGUF file run by llama-cpp-python: loaded once on first use, one generation at a time, greedy."""

    def __init__(self, path: Path, n_threads: int = 0, n_ctx: int = 4096) -> None:
        if not path.is_file():
            raise ModelError(f"LLM model file {path} does not exist (set ASSISTANT_LLM_MODEL to a .gguf file, "
                             "or unset it and run `make models-llm`)")
        self.path = path
        self.n_threads = n_threads or len(os.sched_getaffinity(0))
        self.n_ctx = n_ctx
        self._llm = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self):
        with self._load_lock:
            if self._llm is not None:
                return self._llm
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ModelError(f"{INSTALL_HINT} ({exc})") from None
            t0 = time.monotonic()
            try:
                self._llm = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                  n_threads_batch=self.n_threads, seed=0, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise ModelError(f"could not load LLM {self.path}: {str(exc).splitlines()[0]}") from exc
            log.info("loaded LLM %s in %.1fs (%d threads)", self.path.name, time.monotonic() - t0, self.n_threads)
            return self._llm

    def chat(self, messages: list[dict], max_tokens: int) -> Iterator[str]:
        llm = self.load()
        with self._lock:
            llm.reset()  # no prompt-prefix reuse from the previous question: the same prompt gives the same answer
            for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                    top_k=1, stream=True):
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta


def llm_model_path(settings: Settings) -> Path:
    """``ASSISTANT_LLM_MODEL`` (a .gguf file) or the built-in model, which must be fetched and verified."""
    if settings.llm_model:
        path = Path(settings.llm_model).expanduser()
        if not path.is_file() or path.suffix.lower() != ".gguf":
            raise ConfigError(f"ASSISTANT_LLM_MODEL={settings.llm_model!r} is not a .gguf file")
        return path
    try:
        return check_ready(QWEN_CODER_1_5B, settings.home) / QWEN_CODER_1_5B.weights_file
    except ModelError as exc:
        raise ModelError(f"{exc} (or `make models-llm`)") from None


def make_generative_reader(settings: Settings, embedder: Embedder, gate=None) -> GenerativeReader:
    """The LLM reader from settings; a clear ModelError when llama-cpp-python or the model is missing.

    ``gate`` (span_reader.Answerability) decides "not in the documents" with the reader model;
    without it, the cosine threshold alone decides."""
    if not llama_available():
        raise ModelError(INSTALL_HINT)
    llm = LlamaModel(llm_model_path(settings), settings.llm_threads)
    return GenerativeReader(embedder, llm, settings.min_evidence or DEFAULT_MIN_EVIDENCE,
                            max_tokens=settings.llm_max_tokens, gate=gate)


# -- sentences and markers --------------------------------------------------------------------------
@dataclass(frozen=True)
class Sentence:
    text: str  # as generated, without citation markers
    markers: tuple[int, ...]  # the [n] numbers the model wrote after it
    lead: str  # what separated it from the sentence before ("", " " or "\n")


def parse_markers(text: str) -> tuple[str, tuple[int, ...]]:
    """The text without its citation markers, and the numbers they held (in order, once each)."""
    numbers: list[int] = []
    for m in _MARKER.finditer(text):
        for n in re.split(r"\s*[,，、]\s*", m.group(1) or m.group(2) or ""):
            if n.isdigit() and int(n) not in numbers:
                numbers.append(int(n))
    return _MARKER.sub("", text).strip(), tuple(numbers)


def split_sentences(answer: str) -> list[Sentence]:
    """Sentences and list items of a generated answer; markers stay with the sentence they follow."""
    out: list[Sentence] = []
    breaks = 0  # line breaks since the last sentence
    for line in answer.split("\n"):
        pieces = _END.split(line)
        carry = ""
        for k in range(0, len(pieces), 2):
            raw = carry + pieces[k] + (pieces[k + 1] if k + 1 < len(pieces) else "")
            text, markers = parse_markers(raw)
            if not _WORD.search(_DECOR.sub("", text)):
                if markers and out and not carry:  # "… . [2]": the markers belong to the sentence before
                    last = out[-1]
                    extra = tuple(m for m in markers if m not in last.markers)
                    out[-1] = Sentence(last.text, last.markers + extra, last.lead)
                else:
                    carry = raw  # a list number such as "1." belongs to what follows
                continue
            lead = "\n" * min(breaks, 2) if breaks and out else " " if out and raw[:1].isspace() else ""
            out.append(Sentence(text, markers, lead))
            carry, breaks = "", 0
        breaks += 1
    return out


def claim_text(sentence: Sentence) -> str:
    """What is compared with the passages: the sentence without list numbers and markdown emphasis."""
    return _DECOR.sub("", sentence.text).strip() or sentence.text


# -- the grounding check ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checked:
    """One answer sentence after the check: the passage (rank among the prompt's passages) and unit it rests on."""

    sentence: Sentence
    passage: int | None  # None: unsupported
    unit: Span | None
    score: float  # cosine similarity to the best unit of the chosen passage (or of any passage, if unsupported)

    @property
    def supported(self) -> bool:
        return self.passage is not None


def passage_units(text: str) -> list[Span]:
    units = [s for s in spans(text) if s.kind != "heading"]
    return units or [Span(0, len(text), "text", 0)]


def check_sentences(sentences: list[Sentence], passages: Passages, shown: int, embedder: Embedder,
                    min_support: float, min_support_cross: float | None = None) -> list[Checked]:
    """Tie each sentence to the passage that supports it best (its own valid [n] first), with the score.

    A unit supports a sentence when their similarity reaches ``min_support`` (``min_support_cross``
    when one is Chinese and the other not); the best unit is the one furthest above its threshold."""
    hits = passages.hits[:shown]
    if not sentences or not hits:
        return [Checked(s, None, None, 0.0) for s in sentences]
    units = [(rank, u) for rank, hit in enumerate(hits) for u in passage_units(hit.chunk.text)]
    vectors = embedder.embed_documents([hits[r].chunk.text[u.start:u.end] for r, u in units],
                                       [hits[r].chunk.heading for r, u in units])
    claims = embedder.embed_documents([claim_text(s) for s in sentences])
    similarity = claims @ vectors.T  # sentences x units
    cross = min_support if min_support_cross is None else min_support_cross
    sentence_zh = np.array([is_chinese(claim_text(s)) for s in sentences])
    unit_zh = np.array([is_chinese(hits[r].chunk.text[u.start:u.end]) for r, u in units])
    margin = similarity - np.where(sentence_zh[:, None] != unit_zh[None, :], cross, min_support)
    ranks = np.array([r for r, _ in units])
    checked = []
    for i, sentence in enumerate(sentences):
        best = {}  # passage rank -> (margin, unit index) of its best unit
        for rank in range(len(hits)):
            idx = np.flatnonzero(ranks == rank)
            j = int(idx[np.argmax(margin[i, idx])])
            best[rank] = (float(margin[i, j]), j)
        own = [n - 1 for n in sentence.markers if 1 <= n <= len(hits) and best[n - 1][0] >= 0]
        rank = max(own, key=lambda r: best[r][0]) if own else max(best, key=lambda r: best[r][0])
        j = best[rank][1]
        score = float(similarity[i, j])
        if best[rank][0] >= 0:
            checked.append(Checked(sentence, rank, units[j][1], score))
        else:
            checked.append(Checked(sentence, None, None, score))
    return checked


def assemble(checked: list[Checked], passages: Passages) -> tuple[str, tuple[Citation, ...]]:
    """The shown answer (each sentence followed by [n] or [?]) and one verified citation per cited passage."""
    numbers: dict[int, int] = {}
    for c in checked:
        if c.supported and c.passage not in numbers:
            numbers[c.passage] = len(numbers) + 1
    citations = []
    for rank, n in numbers.items():
        mine = [c for c in checked if c.passage == rank]
        hit = passages.hits[rank]
        start, end = min(c.unit.start for c in mine), max(c.unit.end for c in mine)
        citations.append(cite_passage(n, hit, passages, start, end, max(c.score for c in mine)))
    text = "".join(f"{c.sentence.lead}{c.sentence.text} {f'[{numbers[c.passage]}]' if c.supported else UNSUPPORTED}"
                   for c in checked)
    return text.strip(), tuple(citations)


# -- the reader ---------------------------------------------------------------------------------------
class GenerativeReader:
    """Answers written by a local LLM from the top passages; only sentences that pass the check are cited."""

    name = "llm"

    def __init__(self, embedder: Embedder, llm: ChatModel, min_evidence: float = DEFAULT_MIN_EVIDENCE,
                 min_support: float = DEFAULT_MIN_SUPPORT, min_support_cross: float | None = None,
                 passages: int = 3, passage_chars: int = 350, max_tokens: int = 160, gate=None) -> None:
        if passages <= 0 or passage_chars <= 0 or max_tokens <= 0:
            raise ValueError("passages, passage_chars and max_tokens must be positive")
        self.embedder = embedder
        self.llm = llm
        self.min_evidence = min_evidence
        self.min_support = min_support
        # Unless given, the cross-script threshold keeps its calibrated distance below the main one.
        self.min_support_cross = (min_support - (DEFAULT_MIN_SUPPORT - DEFAULT_MIN_SUPPORT_CROSS)
                                  if min_support_cross is None else min_support_cross)
        self.passages = passages
        self.passage_chars = passage_chars
        self.max_tokens = max_tokens
        self.gate = gate  # the reader model's answerability decision, when there is one
        self._extractive = ExtractiveReader(embedder, min_evidence)  # for abstaining: same text, same related

    @property
    def loaded(self) -> bool:
        return getattr(self.llm, "loaded", True)

    def load(self) -> None:
        load = getattr(self.llm, "load", None)
        if load is not None:
            load()

    def read(self, passages: Passages) -> Reading:
        return self.stream(passages).answer()

    def stream(self, passages: Passages) -> Response[Reading]:
        """Text deltas as the model writes them; ``answer()``: the checked Reading."""
        return Response(self._write(passages))

    def _write(self, passages: Passages) -> Generator[str, None, Reading]:
        passages, answerable = self.decide(passages)
        if not answerable:
            return self._extractive.abstain(passages)
        draft = []
        for delta in self.llm.chat(self.messages(passages), self.max_tokens):
            draft.append(delta)
            yield delta
        return self.check("".join(draft), passages)

    def answerable(self, passages: Passages) -> bool:
        """The decision before generating: the reader model's (see span_reader), else the cosine threshold."""
        return self.decide(passages)[1]

    def decide(self, passages: Passages) -> tuple[Passages, bool]:
        """The passages (with the reader model's margins of those it read, see ``Passages.with_margins``) and
        the decision before generating."""
        if self.gate is None:
            covered = passages.evidence >= self.min_evidence and bool(passages.hits) and not passages.missing_terms
            return passages, covered
        decision = self.gate.decide(passages)
        return decision.passages(passages), decision.answerable

    def check(self, draft: str, passages: Passages) -> Reading:
        """The grounding check of a finished draft, as a Reading."""
        checked = check_sentences(split_sentences(draft), passages, self.passages, self.embedder, self.min_support,
                                  self.min_support_cross)
        if not any(c.supported for c in checked):
            return self._extractive.abstain(passages)
        text, citations = assemble(checked, passages)
        return Reading(text, False, citations, (), passages.evidence)

    def messages(self, passages: Passages) -> list[dict]:
        """The chat: system instruction, then the numbered passages and the question in one user turn."""
        blocks = []
        for n, hit in enumerate(passages.hits[:self.passages], 1):
            blocks.append(f"[{n}] ({hit.chunk.source}) {self._clip(hit.chunk.text)}")
        question = passages.question
        user = ("Passages:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\n{_LANGUAGE[is_chinese(question)]}")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def _clip(self, text: str) -> str:
        """The passage cut at a unit end within ``passage_chars`` (hard cut if the first unit is longer)."""
        if len(text) <= self.passage_chars:
            return text.strip()
        end = max((s.end for s in spans(text) if s.end <= self.passage_chars), default=self.passage_chars)
        return text[:end].strip() + " …"
