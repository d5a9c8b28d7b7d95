"""Reader protocol and the extractive reader: the question-answering step.

The extractive reader answers with sentences copied verbatim from the retrieved passages. It scores
every sentence / list item / code block of the top passages against the question with the
embedding model, picks the passage holding the best one, and returns that passage's answer part:
its body without headings and without lines that only restate a question, trimmed to a window
around the best sentence when the body is long.

A reader gives its answer whole (``read``) or as a :class:`Response` (``stream``), which is
iterated for the text as it is written and then read whole with ``answer()``; a reader that does
not write text gives none before the whole.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np

from .chunking import Span, spans
from .citations import cite
from .embedding import Embedder
from .language import asks_for_fact, is_chinese, named_terms, not_covered  # noqa: F401  (is_chinese, named_terms: re-exported)
from .types import Citation, Hit

if TYPE_CHECKING:
    from .span_model import SpanScore

# Calibrated on tests/data/eval.jsonl: the best passage's cosine similarity to the question, below
# which the documents are taken not to cover it (see README, "Abstention").
DEFAULT_MIN_EVIDENCE = 0.45
_QUESTION_LABEL = re.compile(r"^[\s*#>\-\d.、]*(?:问题|面试题|题目描述|题目|question)\s*[:：*]", re.I)
_QUESTION_END = re.compile(r"[？?][\s*]*$")
_LABEL_ONLY = re.compile(r"^[\s*#>\-\d.、]*[^\s*:：]{0,8}[:：][\s*]*$")
T = TypeVar("T")


@dataclass(frozen=True)
class Reading:
    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    related: tuple[Citation, ...]
    evidence: float
    span: Citation | None = None  # the exact answer, when the reader model found a confident short one


@dataclass(frozen=True)
class Passages:
    """What a reader gets: the question, its vector, the hits, and where each chunk sits in its document."""

    question: str
    query_vector: np.ndarray
    hits: list[Hit]
    evidence: float  # cosine similarity of the nearest chunk to the question
    lines: list[int]  # chunk id -> 1-based line of its start
    pages: dict[str, list[tuple[int, int]]]
    units: UnitLookup | None = None  # unit vectors computed at build time, if the index has them
    missing_terms: tuple[str, ...] = ()  # names in the question that no document contains (see named_terms)
    # upper-case names in a non-Chinese question that no document contains (language.acronyms): the reader model
    # confirms that the passages do not answer before they count (span_reader.Answerability)
    unknown_terms: tuple[str, ...] = ()
    # chunk id -> the reader model's answerability margin, for the passages it read (see span_reader)
    answerability: dict[int, float] = field(default_factory=dict)

    def with_margins(self, scores: Sequence[SpanScore]) -> Passages:
        """These passages with the reader model's margins of the first ``len(scores)`` hits (they explain citations)."""
        return replace(self, answerability={h.chunk_id: s.margin for h, s in zip(self.hits, scores)})


class UnitLookup(Protocol):
    def get(self, chunk_id: int) -> dict[tuple[int, int], np.ndarray]: ...


class Response(Generic[T]):
    """An answer as it is written: iterate it for the text as it comes, then ``answer()`` for the whole.

    Made from a generator that yields text deltas and returns the result. Nothing runs until the
    response is iterated or ``answer()`` is called, and it runs once: ``answer()`` first reads what
    is left of the text, and iterating again gives the same text back. A reader that does not stream
    gives no text, only the whole (``Response.whole``).
    """

    def __init__(self, run: Generator[str, None, T]) -> None:
        self._run = run
        self._text: list[str] = []
        self._done = False
        self._result: T | None = None

    @classmethod
    def whole(cls, make: Callable[[], T]) -> Response[T]:
        """A response without text before the whole: ``make()`` is called when it is read."""
        def run() -> Generator[str, None, T]:
            yield from ()
            return make()

        return cls(run())

    def __iter__(self) -> Iterator[str]:
        if self._done:
            yield from self._text
            return
        while True:
            try:
                delta = next(self._run)
            except StopIteration as end:
                self._result, self._done = end.value, True
                return
            self._text.append(delta)
            yield delta

    def answer(self) -> T:
        """The whole result (a reader's ``Reading``, the assistant's ``Answer``), once the text is written."""
        for _ in self:
            pass
        return self._result


class Reader(Protocol):
    """The question-answering step: ``read`` the passages into a Reading, or ``stream`` it as it is written."""

    name: str

    @property
    def loaded(self) -> bool:
        """Whether the reader's model is loaded (``load()`` has nothing left to do)."""
        ...

    def load(self) -> None:
        """Load the reader's model now, rather than on the first question."""
        ...

    def read(self, passages: Passages) -> Reading: ...

    def stream(self, passages: Passages) -> Response[Reading]: ...


def cite_passage(n: int, hit: Hit, passages: Passages, start: int, end: int, score: float) -> Citation:
    """A citation of ``hit.chunk.text[start:end]`` that says why the passage was chosen (``Citation.why``)."""
    return replace(cite(n, hit.chunk, passages.lines[hit.chunk_id], start, end, score,
                        passages.pages.get(hit.chunk.source)), why=hit.why(passages.answerability.get(hit.chunk_id)))


def is_question_like(text: str) -> bool:
    """A line that poses a question, or a bare label such as ``**答案：**``: never an answer by itself."""
    return bool(_QUESTION_LABEL.match(text) or _QUESTION_END.search(text) or _LABEL_ONLY.match(text))


class ExtractiveReader:
    """Verbatim answers with ``[n]`` markers; abstains when the best passage is too far from the question."""

    name = "extractive"

    def __init__(self, embedder: Embedder, min_evidence: float = DEFAULT_MIN_EVIDENCE, candidates: int = 3,
                 max_chars: int = 450, code_chars: int = 1200, second_margin: float = 0.05, max_citations: int = 2,
                 unit_weight: float = 0.15, fact_second_margin: float | None = 0.02) -> None:
        if candidates <= 0 or max_chars <= 0:
            raise ValueError("candidates and max_chars must be positive")
        self.embedder = embedder
        self.min_evidence = min_evidence
        self.candidates = candidates
        self.max_chars = max_chars
        self.code_chars = code_chars
        # A second passage is quoted when its best part scores within ``second_margin`` of the best one: an
        # explanation or a list is often spread over two passages (own eval: key recall 0.919 at 0.02, 0.956 at
        # 0.05). A question that asks for one short fact (language.asks_for_fact) keeps the tighter
        # ``fact_second_margin``: one passage holds its answer, and more text only dilutes it.
        self.second_margin = second_margin
        self.fact_second_margin = second_margin if fact_second_margin is None else fact_second_margin
        self.max_citations = max_citations
        self.unit_weight = unit_weight

    loaded = True  # no model of its own: the embedder's, which loads on the first question

    def load(self) -> None:
        pass

    def stream(self, passages: Passages) -> Response[Reading]:
        return Response.whole(lambda: self.read(passages))

    def read(self, passages: Passages) -> Reading:
        hits = passages.hits
        evidence = passages.evidence
        if evidence < self.min_evidence or passages.missing_terms:
            return self.abstain(passages)
        scored = self._score_units(passages)
        if not scored:
            return self.abstain(passages)
        citations: list[Citation] = []
        used: set[int] = set()
        best_score = scored[0][0]
        margin = self.fact_second_margin if asks_for_fact(passages.question) else self.second_margin
        for score, hit_rank, _ in scored:
            if hit_rank in used or len(citations) == self.max_citations:
                continue
            if citations and score < best_score - margin:
                break
            hit = hits[hit_rank]
            window = self._window(hit, [s for s in scored if s[1] == hit_rank])
            if window is None:
                continue
            start, end = window
            citations.append(cite_passage(len(citations) + 1, hit, passages, start, end, score))
            used.add(hit_rank)
        text = "\n\n".join(f"{c.quote} [{c.n}]" for c in citations)
        return Reading(text, False, tuple(citations), (), evidence)

    def _score_units(self, passages: Passages) -> list[tuple[float, int, Span]]:
        """(score, hit rank, span) for each answer-like unit of the top passages, best first."""
        units: list[tuple[int, Span]] = []
        for rank, hit in enumerate(passages.hits[:self.candidates]):
            if hit.dense_score >= self.min_evidence:  # each cited passage passes the decision itself
                units += [(rank, s) for s in _body(hit.chunk.text)]
        if not units:
            return []
        hits = passages.hits
        similarity = self._unit_vectors(passages, units) @ passages.query_vector
        # The unit's own match, backed by how well its whole passage matched.
        w = self.unit_weight
        scored = [(w * float(sim) + (1 - w) * hits[r].dense_score, r, s) for (r, s), sim in zip(units, similarity)]
        return sorted(scored, key=lambda t: -t[0])

    def _unit_vectors(self, passages: Passages, units: list[tuple[int, Span]]) -> np.ndarray:
        """Vectors of the units: from the index when it has them (no model call), else embedded now."""
        hits = passages.hits
        stored: dict[int, dict] = {}
        if passages.units is not None:
            stored = {r: passages.units.get(hits[r].chunk_id) for r in {r for r, _ in units}}
        found = [stored.get(r, {}).get((s.start, s.end)) for r, s in units]
        missing = [k for k, v in enumerate(found) if v is None]
        if missing:
            fresh = self.embedder.embed_documents([hits[units[k][0]].chunk.text[units[k][1].start:units[k][1].end]
                                                   for k in missing], [hits[units[k][0]].chunk.heading for k in missing])
            for k, v in zip(missing, fresh, strict=True):
                found[k] = v
        return np.vstack(found).astype(np.float32)

    def _window(self, hit: Hit, scored: list[tuple[float, int, Span]]) -> tuple[int, int] | None:
        """The chunk's answer part: all body units if short enough, else a window around the best unit."""
        body = sorted({s for _, _, s in scored}, key=lambda s: s.start)
        if not body:
            return None
        limit = self.code_chars if any(s.kind == "code" for s in body) else self.max_chars
        if body[-1].end - body[0].start <= limit:
            return body[0].start, body[-1].end
        score = {s: v for v, _, s in scored}
        i = j = body.index(scored[0][2])
        while True:  # grow towards the better neighbour, preferring what follows
            nxt = body[j + 1] if j + 1 < len(body) and body[j + 1].end - body[i].start <= limit else None
            prv = body[i - 1] if i > 0 and body[j].end - body[i - 1].start <= limit else None
            if nxt is None and prv is None:
                break
            if nxt is not None and (prv is None or score[nxt] >= score[prv] - 0.05):
                j += 1
            else:
                i -= 1
        return body[i].start, body[j].end

    def abstain(self, passages: Passages) -> Reading:
        """The documents do not cover the question: say so (naming its missing terms), with the related passages."""
        return Reading(not_covered(passages.question, passages.missing_terms), True, (), self.related(passages),
                       passages.evidence)

    def related(self, passages: Passages, count: int = 3, chars: int = 160) -> tuple[Citation, ...]:
        """The opening lines (up to ``chars``) of the first ``count`` passages: the reading shown on abstaining."""
        related = []
        for hit in passages.hits[:count]:
            body = _body(hit.chunk.text) or spans(hit.chunk.text)
            if not body:
                continue
            end = body[0].end
            for s in body[1:]:
                if s.end - body[0].start > chars:
                    break
                end = s.end
            related.append(cite_passage(len(related) + 1, hit, passages, body[0].start, end, hit.dense_score))
        return tuple(related)


def _body(text: str) -> list[Span]:
    """The units of a passage that can answer: no headings, no lines that only pose a question.

    A passage of headings alone (an outline) answers with its headings: they are its content."""
    units = spans(text)
    body = [s for s in units if s.kind != "heading" and not is_question_like(text[s.start:s.end])]
    return body or [s for s in units if s.kind == "heading"]
