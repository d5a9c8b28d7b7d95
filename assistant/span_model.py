"""The reader model: a span-extraction head on the first layers of EmbeddingGemma.

Architecture (chosen by measurement, see docs/reader-model.md): the question and one passage go
through the first ``layers`` transformer layers of the embedding model as one sequence
``<bos> question <eos> passage <eos>``. The bottom ``frozen`` layers are the embedding model's own,
unchanged (shared with the loaded embedder, so they cost no memory); the layers above them were
fine-tuned for reading and ship in ``assistant/weights/reader.safetensors`` with a final norm and
a linear head giving a start and an end score per token. The scores of the ``<bos>`` token stand
for "no answer here" (SQuAD 2.0 style): a passage is answerable when its best span outscores it.

Everything here is pure tensor code; loading and verifying files is in ``models.py``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np

MAX_LEN = 256  # tokens per window: question + passage + 3 special tokens
MAX_QUESTION = 48  # question tokens kept (the rest is cut)
STRIDE = 96  # passage tokens shared by neighbouring windows of one long passage
MAX_ANSWER = 48  # longest span considered, in tokens


@dataclass(frozen=True)
class Window:
    """One model input: token ids, and each passage token's character span in the passage."""

    ids: list[int]
    context_start: int  # index of the first passage token in ``ids``
    offsets: list[tuple[int, int]]  # character (start, end) in the passage of each passage token


@dataclass(frozen=True)
class SpanScore:
    """The best span of one passage, in passage characters, and how answerable the passage is."""

    start: int
    end: int
    score: float  # start + end score of the span
    null: float  # start + end score of <bos> ("no answer")
    prob: float = 0.0  # the model's probability of exactly this span (start and end), among all spans and "none"

    @property
    def margin(self) -> float:
        """> 0: the span beats "no answer"; the answerability score."""
        return self.score - self.null


def tokenize_passage(tokenizer, passage: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(passage, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def windows(tokenizer, question: str, passage: str, max_len: int = MAX_LEN, stride: int = STRIDE) -> list[Window]:
    """The question with each window of the passage (one window when it fits)."""
    q = tokenizer(question, add_special_tokens=False)["input_ids"][:MAX_QUESTION]
    ids, offsets = tokenize_passage(tokenizer, passage)
    room = max_len - len(q) - 3
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out: list[Window] = []
    start = 0
    while True:
        piece = ids[start:start + room]
        out.append(Window([bos, *q, eos, *piece, eos], len(q) + 2, offsets[start:start + room]))
        if start + room >= len(ids):
            return out
        start += room - stride


def run_layers(base, layers, hidden, attention_mask, layer_types):
    """Run ``layers`` of a Gemma3TextModel ``base`` on ``hidden`` (no final norm), as its forward does."""
    import torch
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    from transformers.models.gemma3.modeling_gemma3 import _bidirectional_window_overlay

    config = base.config
    position_ids = torch.arange(hidden.shape[1]).unsqueeze(0)
    kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask, "past_key_values": None,
              "position_ids": position_ids}
    sliding = dict(kwargs)
    if config.use_bidirectional_attention:
        kwargs["or_mask_function"] = lambda *args: torch.tensor(True, dtype=torch.bool)
        sliding["or_mask_function"] = _bidirectional_window_overlay(config.sliding_window)
    masks = {"full_attention": create_causal_mask(**kwargs),
             "sliding_attention": create_sliding_window_causal_mask(**sliding)}
    rope = {t: base.rotary_emb(hidden, position_ids, t) for t in set(layer_types)}
    for layer, kind in zip(layers, layer_types, strict=True):
        hidden = layer(hidden, attention_mask=masks[kind], position_embeddings=rope[kind], position_ids=position_ids)
    return hidden


LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _lora_linear(linear, rank: int, alpha: float):
    """``linear`` plus a trainable low-rank update ``scale * B @ A`` (B starts at zero: no change at first)."""
    import torch

    class LoRALinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = linear
            self.a = torch.nn.Parameter(torch.empty(rank, linear.in_features, dtype=linear.weight.dtype))
            self.b = torch.nn.Parameter(torch.zeros(linear.out_features, rank, dtype=linear.weight.dtype))
            torch.nn.init.kaiming_uniform_(self.a, a=5 ** 0.5)
            self.scale = alpha / rank

        def forward(self, x):
            return self.base(x) + (x @ self.a.t() @ self.b.t()) * self.scale

        def merged(self):
            with torch.no_grad():
                self.base.weight += (self.b @ self.a * self.scale).to(self.base.weight.dtype)
            return self.base

    return LoRALinear()


def scaled_embedding(base, input_ids):
    """The token embeddings of ``input_ids`` as the encoder's first layer reads them: looked up in ``base``'s
    (shared) table, as float32, times sqrt(hidden size) (Gemma 3 scales its embeddings)."""
    import torch

    with torch.no_grad():
        return torch.nn.functional.embedding(input_ids, base.embed_tokens.weight).float() * base.config.hidden_size ** 0.5


class SpanReaderModel:
    """Bottom layers + fine-tuned top layers + norm + start/end head.

    ``base`` is the embedding model's Gemma3TextModel; its embedding table is used as it is. The
    first ``frozen`` layers are its own, shared (no memory), or, with ``lora_rank``, copies adapted
    by low-rank updates (stored small, merged into the copies for reading). ``top`` holds fine-tuned
    copies of layers ``frozen .. layers-1``.
    """

    def __init__(self, base, frozen: int, layers: int, own_bottom: bool = False, lora_rank: int = 0,
                 lora_alpha: float = 0.0) -> None:
        import torch

        if not 0 < frozen < layers <= base.config.num_hidden_layers:
            raise ValueError(f"need 0 < frozen ({frozen}) < layers ({layers}) <= {base.config.num_hidden_layers}")
        if lora_rank < 0:
            raise ValueError("lora_rank must be >= 0")
        self.base = base
        self.frozen = frozen
        self.layers = layers
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha or 2.0 * lora_rank
        self.types = list(base.config.layer_types[:layers])
        self.top = torch.nn.ModuleList([copy.deepcopy(base.layers[i]) for i in range(frozen, layers)])
        # A float32 copy of the bottom layers when the shared model runs in another precision (bf16
        # is emulated, and slow, on CPUs without AVX-512 BF16) or when they are adapted (LoRA); the
        # embedding table stays shared.
        own_bottom = own_bottom or lora_rank > 0
        self.low = (torch.nn.ModuleList([copy.deepcopy(base.layers[i]).float() for i in range(frozen)])
                    if own_bottom else base.layers[:frozen])
        self.lora: dict[str, object] = {}
        for i, layer in enumerate(self.low if lora_rank else []):
            for target in LORA_TARGETS:
                parent_name, attr = target.split(".")
                parent = getattr(layer, parent_name)
                wrapped = _lora_linear(getattr(parent, attr), lora_rank, self.lora_alpha)
                setattr(parent, attr, wrapped)
                self.lora[f"{i}.{target}"] = wrapped
        self.norm = copy.deepcopy(base.norm)
        self.head = torch.nn.Linear(base.config.hidden_size, 2)
        torch.nn.init.normal_(self.head.weight, std=0.02)
        torch.nn.init.zeros_(self.head.bias)

    # -- weights -----------------------------------------------------------------------------------
    def trainable(self) -> list:
        lora = [p for m in self.lora.values() for p in (m.a, m.b)]
        return [*lora, *self.top.parameters(), *self.norm.parameters(), *self.head.parameters()]

    def state_dict(self) -> dict:
        out = {f"lora.{k}.{n}": getattr(m, n) for k, m in self.lora.items() for n in ("a", "b")}
        out.update({f"top.{k}": v for k, v in self.top.state_dict().items()})
        out.update({f"norm.{k}": v for k, v in self.norm.state_dict().items()})
        out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        import torch

        groups = {"top": self.top, "norm": self.norm, "head": self.head}
        for name, module in groups.items():
            part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            module.load_state_dict(part, strict=True)
        lora = {k[len("lora."):]: v for k, v in state.items() if k.startswith("lora.")}
        wanted = {f"{k}.{n}" for k in self.lora for n in ("a", "b")}
        if set(lora) != wanted:
            raise ValueError(f"the reader weights' low-rank tensors do not fit this model "
                             f"({len(lora)} given, {len(wanted)} expected)")
        with torch.no_grad():
            for key, value in lora.items():
                name, part = key.rsplit(".", 1)
                getattr(self.lora[name], part).copy_(value)
        unknown = [k for k in state if k.split(".", 1)[0] not in (*groups, "lora")]
        if unknown:
            raise ValueError(f"unexpected tensors in reader weights: {unknown[:3]}")

    def merge(self) -> SpanReaderModel:
        """Fold the low-rank updates into the bottom copies (for reading: as fast as plain layers)."""
        for key, module in self.lora.items():
            i, target = key.split(".", 1)
            parent_name, attr = target.split(".")
            setattr(getattr(self.low[int(i)], parent_name), attr, module.merged())
        self.lora = {}
        return self

    def to(self, dtype) -> SpanReaderModel:
        """The trained part in ``dtype`` (the frozen layers keep theirs)."""
        for m in (self.top, self.norm, self.head):
            m.to(dtype)
        return self

    def train(self, mode: bool = True) -> None:
        for m in (self.top, self.norm, self.head, *([self.low] if self.lora else [])):
            m.train(mode)

    # -- forward -----------------------------------------------------------------------------------
    def bottom(self, input_ids, attention_mask):
        """Hidden states after the bottom layers (with a gradient only for low-rank updates in training)."""
        import contextlib

        import torch

        hidden = self.embed(input_ids)
        with torch.no_grad() if not (self.lora and torch.is_grad_enabled()) else contextlib.nullcontext():
            dtype = next(self.low.parameters()).dtype  # float32, or bfloat16 where the CPU computes it natively
            return run_layers(self.base, self.low, hidden.to(dtype), attention_mask, self.types[:self.frozen])

    def embed(self, input_ids):
        """The scaled token embeddings the first layer reads (float32), from the shared table."""
        return scaled_embedding(self.base, input_ids)

    def graph(self):
        """All the layers, the norm and the head as one ``torch.nn.Module`` ``(embedded, mask) -> logits``, for
        exporting (onnx_reader.py): its attention masks are plain padding masks, which is what
        ``run_layers`` computes too for inputs shorter than the sliding window (MAX_LEN <= 512)."""
        import torch

        if self.lora:
            raise ValueError("merge the low-rank updates before exporting")
        if MAX_LEN >= self.base.config.sliding_window:
            raise ValueError("windows as long as the sliding window need its mask in the graph")
        owner = self

        class ReaderGraph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.low, self.top, self.norm, self.head = owner.low, owner.top, owner.norm, owner.head
                self.rotary = owner.base.rotary_emb

            def forward(self, hidden, mask):
                positions = torch.arange(hidden.shape[1]).unsqueeze(0)
                allowed = (mask[:, None, None, :] > 0).expand(-1, 1, hidden.shape[1], -1)
                rope = {t: self.rotary(hidden, positions, t) for t in sorted(set(owner.types))}
                for layer, kind in zip([*self.low, *self.top], owner.types, strict=True):
                    hidden = layer(hidden.to(layer.input_layernorm.weight.dtype), attention_mask=allowed,
                                   position_embeddings=rope[kind], position_ids=positions)
                return self.head(self.norm(hidden.to(self.head.weight.dtype)))

        return ReaderGraph().eval()

    def upper(self, hidden, attention_mask):
        """Start and end scores (batch, tokens, 2) from the frozen layers' hidden states."""
        hidden = run_layers(self.base, self.top, hidden.to(self.head.weight.dtype), attention_mask,
                            self.types[self.frozen:])
        return self.head(self.norm(hidden))

    def logits(self, input_ids, attention_mask):
        return self.upper(self.bottom(input_ids, attention_mask), attention_mask)


def pad_batch(batch: list[list[int]], pad_id: int):
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def best_span(start: np.ndarray, end: np.ndarray, first: int, count: int, max_answer: int = MAX_ANSWER
              ) -> tuple[int, int, float]:
    """Best (i, j) with first <= i <= j < first + count, j - i < max_answer, by start[i] + end[j]."""
    s = start[first:first + count]
    e = end[first:first + count]
    total = s[:, None] + e[None, :]
    i, j = np.indices(total.shape)
    total = np.where((j >= i) & (j - i < max_answer), total, -np.inf)
    k = int(np.argmax(total))
    bi, bj = divmod(k, total.shape[1])
    return bi, bj, float(total[bi, bj])


def _batches(items: list[tuple[int, Window]], size: int, waste: float = 0.1) -> list[list[tuple[int, Window]]]:
    """Windows sorted by length, in batches of at most ``size`` whose padding is at most ``waste`` of the
    batch: a long passage's last window is short, and padding it to a full window cost a fifth of a read."""
    out: list[list[tuple[int, Window]]] = []
    for item in items:
        group = out[-1] if out else None
        if group is not None and len(group) < size:
            longest, total = len(item[1].ids), sum(len(w.ids) for _, w in group) + len(item[1].ids)
            if longest * (len(group) + 1) - total <= waste * longest * (len(group) + 1):
                group.append(item)
                continue
        out.append([item])
    return out


def score_windows(model: SpanReaderModel, tokenizer, question: str, passages: list[str], batch_size: int = 8,
                  max_len: int = MAX_LEN) -> list[SpanScore]:
    """The best span of each passage (over its windows of ``max_len`` tokens), with its no-answer score.

    ``model``: a torch ``SpanReaderModel``, or one whose ``numpy`` attribute is true (``OnnxSpanModel``):
    it is given numpy ids and masks, and torch is not imported."""
    from .tokens import pad_ids

    numpy_model = getattr(model, "numpy", False)
    items: list[tuple[int, Window]] = []
    for p, passage in enumerate(passages):
        items += [(p, w) for w in windows(tokenizer, question, passage, max_len)]
    best: list[SpanScore | None] = [None] * len(passages)
    order = sorted(range(len(items)), key=lambda k: len(items[k][1].ids))
    for group in _batches([items[k] for k in order], batch_size):
        rows = [w.ids for _, w in group]
        if numpy_model:
            scores = model.logits(*pad_ids(rows, tokenizer.pad_token_id or 0))
        else:
            import torch

            ids, mask = pad_batch(rows, tokenizer.pad_token_id or 0)
            with torch.inference_mode():
                scores = model.logits(ids, mask).float().numpy()
        for (p, w), row in zip(group, scores, strict=True):
            if not w.offsets:
                continue
            i, j, score = best_span(row[:, 0], row[:, 1], w.context_start, len(w.offsets))
            null = float(row[0, 0] + row[0, 1])
            allowed = np.r_[row[:1], row[w.context_start:w.context_start + len(w.offsets)]]
            norm = sum(float(np.logaddexp.reduce(allowed[:, c])) for c in (0, 1))
            found = SpanScore(w.offsets[i][0], w.offsets[j][1], score, null, float(np.exp(score - norm)))
            current = best[p]
            if current is None or found.margin > current.margin:
                best[p] = found
    return [b if b is not None else SpanScore(0, 0, float("-inf"), 0.0) for b in best]


def metadata(frozen: int, layers: int, base_sha256: str, lora_rank: int = 0, lora_alpha: float = 0.0,
             **extra) -> dict[str, str]:
    """The safetensors header metadata of the reader weights (strings only)."""
    info = {"format": "assistant-span-reader/1", "frozen": str(frozen), "layers": str(layers),
            "base_sha256": base_sha256, "max_len": str(MAX_LEN)}
    if lora_rank:
        info.update({"lora_rank": str(lora_rank), "lora_alpha": str(lora_alpha)})
    info.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in extra.items()})
    return info
