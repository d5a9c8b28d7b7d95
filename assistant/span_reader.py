"""The span reader: the trained reader model (span_model.py) reads the question with each top passage.

For the top ``candidates`` passages it finds the best answer span and an answerability margin
(best span score minus the "no answer" score). Then:

1. Not covered: a question naming a term no document contains (reader.named_terms), or no
   passage whose margin reaches the calibrated threshold, gets the "not in the documents" answer
   with the closest passages as related reading.
2. The passage with the best margin is cited (the model reranks the retrieved passages), with its
   answer part chosen as the passage reader does (sentences or list items around the best match).
3. When the model is confident of a short span (probability >= ``span_prob``, at most
   ``span_chars`` characters), the answer leads with that exact span, cited and highlighted. List
   and explanation questions rarely have one; they get the passage answer alone.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from .citations import cite
from .embedding import Embedder
from .errors import ModelError
from .reader import ExtractiveReader, Passages, Reading
from .span_model import SpanReaderModel, SpanScore, score_windows

log = logging.getLogger(__name__)


def load_reader_model(embedder: Embedder, weights: Path) -> tuple[SpanReaderModel, object, float]:
    """(model, tokenizer, threshold) from the reader weights, sharing the embedder's bottom layers."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read the reader weights {weights}: {str(exc).splitlines()[0]}") from exc
    if meta.get("format") != "assistant-span-reader/1":
        raise ModelError(f"{weights} is not a reader model of this version (format {meta.get('format')!r})")
    if meta.get("base_sha256") and getattr(embedder, "weights_sha256", "") not in ("", meta["base_sha256"]):
        raise ModelError("the reader model was trained on EmbeddingGemma-300M, but another embedding model is "
                         "configured: unset ASSISTANT_EMBED_MODEL or use ASSISTANT_READER=extractive")
    transformer = getattr(embedder, "transformer", None)
    if transformer is None:
        raise ModelError("the reader model needs the sentence-transformers embedder (its bottom layers are shared)")
    base = transformer()
    own = base.embed_tokens.weight.dtype != torch.float32
    model = SpanReaderModel(base, int(meta["frozen"]), int(meta["layers"]), own_bottom=own).to(torch.float32)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.train(False)
    for p in model.trainable():
        p.requires_grad_(False)
    return model, embedder._load().tokenizer, float(meta["threshold"])


class SpanReader:
    """Exact answer spans and trained answerability on top of the passage answer."""

    name = "span"

    def __init__(self, embedder: Embedder, weights: Path, candidates: int = 3, threshold: float | None = None,
                 span_prob: float = 0.5, span_chars: int = 60, min_evidence: float = 0.0) -> None:
        if candidates <= 0 or span_chars <= 0 or not 0 <= span_prob <= 1:
            raise ValueError("candidates and span_chars must be positive and span_prob in [0, 1]")
        self.embedder = embedder
        self.weights = weights
        self.candidates = candidates
        self.threshold = threshold
        self.span_prob = span_prob
        self.span_chars = span_chars
        self.min_evidence = min_evidence  # a cosine floor under the model's decision (0: none)
        self.passage = ExtractiveReader(embedder, min_evidence=-1.0, candidates=1)
        self._loaded = None
        self._lock = threading.Lock()

    def _model(self):
        with self._lock:
            if self._loaded is None:
                model, tokenizer, threshold = load_reader_model(self.embedder, self.weights)
                self._loaded = (model, tokenizer, threshold if self.threshold is None else self.threshold)
                log.info("loaded reader model %s (threshold %.2f)", self.weights.name, self._loaded[2])
            return self._loaded

    def score(self, passages: Passages) -> list[SpanScore]:
        """The best span and answerability margin of each of the top passages."""
        model, tokenizer, _ = self._model()
        hits = passages.hits[:self.candidates]
        return score_windows(model, tokenizer, passages.question, [h.chunk.text for h in hits])

    def answerable(self, passages: Passages) -> tuple[bool, list[SpanScore]]:
        """Whether any top passage answers the question (the trained decision), and the scores."""
        if passages.missing_terms or not passages.hits or passages.evidence < self.min_evidence:
            return False, []
        scores = self.score(passages)
        return max(s.margin for s in scores) >= self._model()[2], scores

    def abstain(self, passages: Passages) -> Reading:
        weak = replace(passages, evidence=-2.0)
        reading = self.passage.read(weak)
        return Reading(reading.text, True, (), reading.related, passages.evidence)

    def read(self, passages: Passages) -> Reading:
        ok, scores = self.answerable(passages)
        if not ok:
            return self.abstain(passages)
        best = max(range(len(scores)), key=lambda k: scores[k].margin)
        hit, found = passages.hits[best], scores[best]
        reading = self.passage.read(replace(passages, hits=[hit], evidence=1.0, missing_terms=()))
        if reading.abstained or not reading.citations:
            return self.abstain(passages)
        line, pages = passages.lines[hit.chunk_id], passages.pages.get(hit.chunk.source)
        citations = list(reading.citations)
        text = reading.text
        span = None
        start, end = _strip(hit.chunk.text, found.start, found.end)
        if found.prob >= self.span_prob and 0 < end - start <= self.span_chars:
            span = cite(1, hit.chunk, line, start, end, found.prob, pages)
            first = citations[0]
            if not (first.start <= span.start and span.end <= first.end):  # widen the passage to hold the span
                lo = min(first.start, span.start) - hit.chunk.start
                hi = max(first.end, span.end) - hit.chunk.start
                citations[0] = cite(1, hit.chunk, line, lo, hi, first.score, pages)
                text = "\n\n".join(f"{c.quote} [{c.n}]" for c in citations)
            text = f"**{span.quote}** [1]\n\n{text}"
        return Reading(text, False, tuple(citations), (), passages.evidence, span)


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without surrounding spaces and light punctuation."""
    junk = " \t\n\r，。、；：,.;:!?！？*#"
    while start < end and text[start] in junk:
        start += 1
    while end > start and text[end - 1] in junk:
        end -= 1
    return start, end
