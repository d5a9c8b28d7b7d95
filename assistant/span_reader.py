"""The span reader: the trained reader model (span_model.py) reads the question with the top passages.

Answerability (``Answerability.decide``, shared with the generative reader) combines three signals,
as measured on the own eval set and CMRC 2018 (BENCHMARKS.md, "Reader model"):

1. A question naming a term that no document contains (reader.named_terms) is not covered. An English
   question's upper-case name that no document contains (language.acronyms: "What BLEU score…") is weaker
   evidence (Chinese documents may write in Chinese what it names in Latin letters), so the model confirms
   it where its margin is calibrated, for a question that asks for one short fact (language.asks_for_fact):
   the question is not covered when none of the top passages reaches ``TERM_MARGIN``, unless the nearest
   passage is code (the model, trained on prose, scores code low either way). A Chinese short-fact question
   is checked the same way, name or not: on held-out Chinese articles that margin refused none of the right
   paragraphs ("训练一个700亿参数的模型需要多少显存？": its top passages explain compute, at -6.9 to -11.9).
2. Retrieval evidence at or above the calibrated cosine threshold (0.45) answers, as before: the
   seed corpus's explanation and list questions ("有什么办法？") have no short span, so the model
   gives them low margins whether or not the passage covers them; its margin cannot refuse them.
3. Below that, down to a floor (0.35), the model decides: a passage whose margin (best span score
   minus the "no answer" score) reaches the trained threshold answers. English questions against
   Chinese passages score about 0.1 lower in cosine; this is what rescues them. A Chinese short-fact
   question against a Chinese passage has its own floor and threshold (``ZH_FLOOR``, ``ZH_THRESHOLD``:
   lower and higher), calibrated on held-out Chinese pairs for this combined decision.

Then the passages are quoted as the passage reader quotes them (only the model's passage, when the
model chose it), and when the model is confident of a short span in its passage (probability >= ``span_prob``, margin >= the threshold, at
most ``span_chars`` characters) the answer leads with that exact span, cited and highlighted. A question that
asks for one short fact (language.asks_for_fact: who, when, how many...) has its span shown from a lower
probability, ``fact_span_prob``: a short span is what it asks for, and the passage still follows it; and when
the top passage holds no such span, the next passages are read too, and the first of them by margin whose
span shows is quoted with it (the number of training steps is in the code, the top passage explains it).
Reranking the retrieved passages by the model's margin is off by default: on the own eval it
changed no cited document (see BENCHMARKS.md); ``rerank=True`` turns it on.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from .chunking import spans
from .citations import cite
from .config import READER_RUNTIMES, native_bf16
from .embedding import Embedder
from .errors import ModelError
from .language import asks_for_fact, is_chinese
from .reader import DEFAULT_MIN_EVIDENCE, ExtractiveReader, Passages, Reading, Response, cite_passage
from .models import sha256_file
from .onnx_reader import OnnxSpanModel, TorchTable, export, export_folder
from .onnx_reader import available as onnx_available
from .onnx_reader import ready as onnx_ready
from .span_model import SpanReaderModel, SpanScore, score_windows

log = logging.getLogger(__name__)

DEFAULT_MODEL_FLOOR = 0.35  # below this cosine evidence nothing answers, whatever the model says
# With a name that no document contains, the margin below which the passages do not answer: far under the trained
# threshold, at the margin that on held-out training articles refused 0.000 / 0.026 of the right paragraphs (zh /
# en) and 0.86 / 0.87 of the wrong ones (bench/span_gate.py, 2026-12-04).
TERM_MARGIN = -4.0
# A Chinese short-fact question (language.asks_for_fact) against a Chinese top passage: the floor and margin threshold
# of the model's decision (the span is shown from the trained threshold still), with the best balanced accuracy on
# held-out training articles' pairs (bench/gate_pairs.py, "zh": each question with its own paragraph and a BM25 hard
# negative; never CMRC dev): 0.93, from 0.89 at (0.35, 1.06); flat over floors 0.10-0.25 and margins 4-5.
# Explanation questions keep the floor and the trained threshold: their answers have no short span, so their margins
# are low (the own eval's "…会带来什么影响？" at 1.29). Calibrated for the committed weights.
ZH_FLOOR, ZH_THRESHOLD = 0.20, 4.0
FACT_SPAN_PROB = 0.05  # the span probability from which a short-fact question's span is shown (bench/span_gate.py)


def load_reader_model(embedder: Embedder, weights: Path, bf16: bool = False, runtime: str = "torch",
                      home: Path | None = None) -> tuple[SpanReaderModel | OnnxSpanModel, object, float]:
    """(model, tokenizer, threshold) from the reader weights, sharing the embedder's token embeddings.

    ``runtime``: "torch"; "onnx" (ONNX Runtime, float32: the export in ``home`` is made first if missing,
    about a minute); "auto" (ONNX Runtime where it is installed and the export exists, else torch).
    ``bf16`` (torch only): run in bf16 with a bf16 embedder on a CPU that computes bf16 natively (1.9x faster,
    but the same span for only 98.8% of 500 CMRC dev questions, below the 99% asked of a default:
    BENCHMARKS.md); else float32."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "numpy") as f:  # the header only: no tensor is read, no torch needed
            meta = f.metadata() or {}
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
    threshold = float(meta["threshold"])
    folder = None
    if runtime not in READER_RUNTIMES:
        raise ModelError(f"ASSISTANT_READER_RUNTIME must be {', '.join(READER_RUNTIMES)}, not {runtime!r}")
    if runtime == "onnx" or (runtime == "auto" and not bf16 and onnx_available()):
        if bf16:
            raise ModelError("the bf16 reader runs in torch only: set ASSISTANT_READER_RUNTIME=torch")
        if home is None:
            raise ValueError("the ONNX runtime needs the model cache folder (home)")
        folder = export_folder(home, sha256_file(weights), getattr(embedder, "weights_sha256", "")
                               or str(getattr(embedder, "location", "")))
        if onnx_ready(folder):
            light = embedder.onnx_encoder() if hasattr(embedder, "onnx_encoder") else None
            if light is not None:  # the ONNX embedding model's tokenizer and table: torch is never loaded
                return OnnxSpanModel(light.table, folder), light.tokenizer, threshold
            return OnnxSpanModel(TorchTable(transformer()), folder), embedder._load().tokenizer, threshold
        if runtime == "auto":
            log.info("no ONNX export of the reader model yet (`assistant models fetch` makes it): using torch")
            folder = None
    import torch
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read the reader weights {weights}: {str(exc).splitlines()[0]}") from exc
    base = transformer()
    tokenizer = embedder._load().tokenizer
    # In float32 (with a float32 copy of the shared layers when the embedder is in bf16), or in bf16 sharing them.
    shared = base.embed_tokens.weight.dtype
    dtype = torch.bfloat16 if bf16 and shared == torch.bfloat16 and native_bf16() else torch.float32
    lora = int(meta.get("lora_rank", "0"))  # bottom layers adapted: own float32 copies, updates merged in
    model = SpanReaderModel(base, int(meta["frozen"]), int(meta["layers"]), own_bottom=shared != dtype,
                            lora_rank=lora, lora_alpha=float(meta.get("lora_alpha", "0"))).to(dtype)
    if shared != dtype or lora:
        _exact_bottom(model, getattr(embedder, "location", ""))
    model.load_state_dict({k: v.to(torch.float32 if k.startswith("lora.") else dtype) for k, v in state.items()})
    model.merge()
    model.train(False)
    for p in model.trainable():
        p.requires_grad_(False)
    if folder is not None:  # runtime "onnx" without an export: make it from this model, then serve it
        if not onnx_available():
            raise ModelError("ASSISTANT_READER_RUNTIME=onnx needs onnxruntime (a dependency: run `make install`)")
        export(model, tokenizer, folder)
        return OnnxSpanModel(TorchTable(base), folder), tokenizer, threshold
    return model, tokenizer, threshold


def _exact_bottom(model: SpanReaderModel, location: str) -> None:
    """Give the reader's own copies of the bottom layers the model file's float32 values.

    The copies are made from the loaded embedder, which may run in bf16: copied from it, they would carry
    its rounding (margins off by about 0.02) into the reader, and into the ONNX export made from it. The
    reader was trained on the float32 layers."""
    import torch
    from safetensors import safe_open

    path = Path(location) / "model.safetensors"
    if not path.is_file():
        return
    with safe_open(str(path), "pt") as f, torch.no_grad():
        names = set(f.keys())
        for i, layer in enumerate(model.low):
            for name, param in layer.named_parameters():
                key = f"layers.{i}.{name.replace('.base.', '.')}"
                if key in names:
                    param.copy_(f.get_tensor(key).to(param.dtype))


def prepare_runtime(embedder: Embedder, weights: Path, home: Path) -> Path | None:
    """Make the ONNX export of the reader model if it is missing (``assistant models fetch``); its folder,
    or None where onnxruntime is not installed."""
    if not onnx_available():
        return None
    model = load_reader_model(embedder, weights, runtime="onnx", home=home)[0]
    return model.folder


@dataclass(frozen=True)
class Decision:
    """Whether the passages answer the question, and what the reader model found in them."""

    answerable: bool
    scores: tuple[SpanScore, ...] = ()  # the model's best span per passage read (none: not needed to decide)
    best: int = 0  # the passage to cite (an index into the hits)
    missing: tuple[str, ...] = ()  # the names it was refused for (Passages.unknown_terms the model confirmed)

    def passages(self, passages: Passages) -> Passages:
        """``passages`` with the margins of those the model read, and naming the names it was refused for."""
        passages = passages.with_margins(self.scores)
        return replace(passages, missing_terms=self.missing) if self.missing else passages


class Answerability:
    """The trained "not in the documents" decision (module docstring), with the model loaded once."""

    def __init__(self, embedder: Embedder, weights: Path, min_evidence: float = DEFAULT_MIN_EVIDENCE,
                 floor: float = DEFAULT_MODEL_FLOOR, candidates: int = 3, threshold: float | None = None,
                 rerank: bool = False, runtime: str = "torch", home: Path | None = None,
                 term_margin: float = TERM_MARGIN, zh_floor: float = ZH_FLOOR,
                 zh_threshold: float = ZH_THRESHOLD) -> None:
        if candidates <= 0 or max(floor, zh_floor) > min_evidence:
            raise ValueError("candidates must be positive and the floors at most min_evidence")
        self.embedder = embedder
        self.weights = weights
        self.min_evidence = min_evidence
        self.floor = floor
        self.candidates = candidates
        self.threshold = threshold
        self.rerank = rerank
        self.term_margin = term_margin
        self.zh_floor = zh_floor
        self.zh_threshold = zh_threshold
        self.runtime = runtime
        self.home = home
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def model(self):
        """(model, tokenizer, threshold), loaded on first use."""
        with self._lock:
            if self._loaded is None:
                model, tokenizer, threshold = load_reader_model(self.embedder, self.weights, runtime=self.runtime,
                                                                home=self.home)
                self._loaded = (model, tokenizer, threshold if self.threshold is None else self.threshold)
                log.info("loaded reader model %s (threshold %.2f, %s)", self.weights.name, self._loaded[2],
                         "onnxruntime" if isinstance(model, OnnxSpanModel) else "torch")
            return self._loaded

    def score(self, passages: Passages, count: int, first: int = 0) -> list[SpanScore]:
        """The best span and answerability margin of each of the top ``count`` passages (from ``first`` on)."""
        model, tokenizer, _ = self.model()
        hits = passages.hits[first:count]
        return score_windows(model, tokenizer, passages.question, [h.chunk.text for h in hits])

    def decide(self, passages: Passages) -> Decision:
        """The decision, reading passages with the model only where it decides (or reranks): strong
        evidence answers without it, so the generative reader pays nothing for the model there."""
        zh = bool(passages.hits) and zh_fact(passages.question, passages.hits[0].chunk.text)
        if passages.missing_terms or not passages.hits or passages.evidence < (self.zh_floor if zh else self.floor):
            return Decision(False)
        checked = margin_checked(passages.question, passages.unknown_terms)
        if self.ranked(passages):
            if not checked:
                return Decision(True)
            scores = self.score(passages, 1)  # the top passage first: when it reaches the margin, that settles it
            if scores[0].margin < self.term_margin:
                scores += self.score(passages, self.candidates, first=1)
            if self._refutes(passages, scores):
                return Decision(False, tuple(scores), missing=passages.unknown_terms)
            return Decision(True, tuple(scores))  # read for the check only: the top passage stays first
        scores = self.score(passages, self.candidates)
        if checked and self._refutes(passages, scores):
            return Decision(False, tuple(scores), missing=passages.unknown_terms)
        best = max(range(len(scores)), key=lambda k: scores[k].margin)
        confident = scores[best].margin >= (self.zh_threshold if zh else self.model()[2])
        return Decision(passages.evidence >= self.min_evidence or confident, tuple(scores), best if confident else 0)

    def ranked(self, passages: Passages) -> bool:
        """Whether the retrieval order stands (strong evidence, no reranking): the top passage is cited first."""
        return passages.evidence >= self.min_evidence and not self.rerank

    def _refutes(self, passages: Passages, scores: list[SpanScore]) -> bool:
        """Whether the passages read (``scores``) show that they do not answer a ``margin_checked`` question: none
        reaches ``term_margin``. The model was trained on prose: on code its margins are low whether or not the code
        answers (the image classifier's Conv2D code, at -6.5, for "What CNN architecture…?"), so a nearest passage
        of code is kept."""
        return max(s.margin for s in scores) < self.term_margin and not _mostly_code(passages.hits[0].chunk.text)


class SpanReader:
    """Exact answer spans and trained answerability on top of the passage answer."""

    name = "span"

    def __init__(self, embedder: Embedder, weights: Path, candidates: int = 3, threshold: float | None = None,
                 span_prob: float = 0.2, span_chars: int = 60, min_evidence: float = DEFAULT_MIN_EVIDENCE,
                 floor: float = DEFAULT_MODEL_FLOOR, rerank: bool = False, runtime: str = "torch",
                 home: Path | None = None, fact_span_prob: float | None = FACT_SPAN_PROB) -> None:
        fact_span_prob = span_prob if fact_span_prob is None else fact_span_prob
        if span_chars <= 0 or not 0 <= span_prob <= 1 or not 0 <= fact_span_prob <= 1:
            raise ValueError("span_chars must be positive and span_prob and fact_span_prob in [0, 1]")
        self.gate = Answerability(embedder, weights, min_evidence, floor, candidates, threshold, rerank, runtime,
                                  home)
        self.span_prob = span_prob
        self.fact_span_prob = fact_span_prob
        self.span_chars = span_chars
        # The passage answer, as the default reader quotes it (each quoted passage passes the cosine threshold).
        self.answer = ExtractiveReader(embedder, min_evidence=min_evidence)
        self.passage = ExtractiveReader(embedder, min_evidence=-1.0, candidates=1)  # one passage's answer part

    @property
    def loaded(self) -> bool:
        return self.gate.loaded

    def load(self) -> None:
        self.gate.model()

    def abstain(self, passages: Passages) -> Reading:
        return self.passage.abstain(passages)

    def _shown(self, hit, found: SpanScore, fact: bool) -> tuple[int, int] | None:
        """The bounds of ``found`` (the model's best span of ``hit``) without light punctuation, when it is confident
        and short enough to lead the answer; else None."""
        start, end = _strip(hit.chunk.text, found.start, found.end)
        if (found.prob >= (self.fact_span_prob if fact else self.span_prob)
                and found.margin >= self.gate.model()[2] and 0 < end - start <= self.span_chars):
            return start, end
        return None

    def stream(self, passages: Passages) -> Response[Reading]:
        return Response.whole(lambda: self.read(passages))

    def read(self, passages: Passages) -> Reading:
        decision = self.gate.decide(passages)
        # The model's best span of each passage it read (the top one alone, unless it decided); their margins
        # explain the citations of those passages (Citation.why).
        scores = decision.scores or (tuple(self.gate.score(passages, 1)) if decision.answerable else ())
        best = decision.best
        fact = asks_for_fact(passages.question)
        if decision.answerable and fact and self.gate.ranked(passages) and self._shown(passages.hits[0], scores[0], fact) is None:
            # A short-fact question whose top passage holds no confident span: the next passages may (the
            # number of steps is in the code, the top passage explains it). The one with a span that shows, if any.
            if len(scores) == 1:
                scores = (*scores, *self.gate.score(passages, self.gate.candidates, first=1))
            best = next((k for k in sorted(range(1, len(scores)), key=lambda k: -scores[k].margin)
                         if self._shown(passages.hits[k], scores[k], fact) is not None), 0)
        passages = replace(decision, scores=scores).passages(passages)
        if not decision.answerable:
            return self.abstain(passages)
        hit, found = passages.hits[best], scores[best]
        # The model chose the passage (reranked, or below the cosine threshold): quote that one alone;
        # else the passages as the default reader quotes them.
        chosen = best != 0 or passages.evidence < self.gate.min_evidence
        reading = (self.passage if chosen else self.answer).read(
            replace(passages, hits=[hit] if chosen else passages.hits, evidence=1.0, missing_terms=()))
        if reading.abstained or not reading.citations:
            return self.abstain(passages)
        bounds = self._shown(hit, found, fact)
        if bounds is None:
            return Reading(reading.text, False, reading.citations, (), passages.evidence)
        start, end = bounds
        # The span leads; the citation of its passage is widened to hold it (or added first).
        line, pages = passages.lines[hit.chunk_id], passages.pages.get(hit.chunk.source)
        chunk = hit.chunk
        citations = list(reading.citations)
        k = next((i for i, c in enumerate(citations)
                  if c.source == chunk.source and chunk.start <= c.start and c.end <= chunk.end), None)
        if k is None:
            own = self.passage.read(replace(passages, hits=[hit], evidence=1.0, missing_terms=()))
            citations = [*own.citations[:1], *citations][:self.answer.max_citations]
            k = 0
        first = citations[k]
        lo = min(first.start - chunk.start, start)
        hi = max(first.end - chunk.start, end)
        citations[k] = cite_passage(k + 1, hit, passages, lo, hi, first.score)
        citations = [c if c.n == i + 1 else replace(c, n=i + 1) for i, c in enumerate(citations)]
        span = cite(k + 1, chunk, line, start, end, found.prob, pages)
        text = "\n\n".join([f"**{span.quote}** [{k + 1}]", *(f"{c.quote} [{c.n}]" for c in citations)])
        return Reading(text, False, tuple(citations), (), passages.evidence, span)


def margin_checked(question: str, unknown_terms) -> bool:
    """Whether the model's margin may refuse ``question`` whatever the retrieval evidence: it asks for one short
    fact (the margin is calibrated on those) and is Chinese, or names an upper-case name no document contains
    (``unknown_terms``, see Passages)."""
    return asks_for_fact(question) and (bool(unknown_terms) or is_chinese(question))


def zh_fact(question: str, passage: str) -> bool:
    """Whether ZH_FLOOR and ZH_THRESHOLD decide: a Chinese short-fact question against a Chinese top passage."""
    return asks_for_fact(question) and is_chinese(question) and is_chinese(passage)


def _mostly_code(text: str) -> bool:
    """Whether at least half of a passage's units (by characters) are code."""
    units = spans(text)
    code = sum(u.end - u.start for u in units if u.kind == "code")
    return code >= 0.5 * sum(u.end - u.start for u in units) > 0


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without surrounding spaces and light punctuation."""
    junk = " \t\n\r，。、；：,.;:!?！？*#"
    while start < end and text[start] in junk:
        start += 1
    while end > start and text[end - 1] in junk:
        end -= 1
    return start, end
