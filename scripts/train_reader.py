"""Train the span reader (``make train-reader``): reproduces assistant/weights/reader.safetensors.

Data (``../shared/train``, never the CMRC dev benchmark): DRCD dev+test (OpenCC t2s), CMRC 2018
trial, the SQuAD 2.0 train sample (with its unanswerable questions) and the SQuAD 1.1 train sample.
Each question is paired with its own paragraph (answer = its span) and, for a share of them, with
another paragraph of the same article that holds none of its answers (answer = "none"). Whole
articles are held out to calibrate the answerability threshold and to report held-out scores.
``--cross-lingual N`` adds English copies of the first N Chinese questions (same passage, same
answer), translated by the local LLM (scripts/translate_questions.py), and reports held-out scores
for English questions about Chinese passages (``held_*_xl``), which the threshold does not see.

How it fits a 2-core CPU: the bottom (frozen) layers never change, so they run once per window and
their outputs are cached on disk (``~/.cache/assistant/reader-train/``, bf16 memmap, keyed by the
data and model); training then runs only the top layers. A re-run with a warm cache skips that.

Usage: python scripts/train_reader.py [--train DIR] [--epochs N] [--lr X] [--out PATH] ...
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from assistant import span_model as sm  # noqa: E402
from assistant.evaluation import answer_scores  # noqa: E402

SEED = 20261201


# -- data ------------------------------------------------------------------------------------------
def _articles(path: Path, convert=None) -> list[dict]:
    data = json.loads(path.read_text("utf-8"))["data"]
    out = []
    for a, article in enumerate(data):
        paragraphs = []
        for p in article["paragraphs"]:
            context = p["context"]
            fixed = convert(context) if convert else context
            qas = []
            for qa in p["qas"]:
                question = convert(qa["question"]) if convert else qa["question"]
                impossible = bool(qa.get("is_impossible"))
                answers = []
                for ans in qa.get("answers", []):
                    text = convert(ans["text"]) if convert else ans["text"]
                    start = ans["answer_start"]
                    if fixed[start:start + len(text)] != text:  # t2s may move an offset: take the nearest copy
                        hits = [i for i in range(len(fixed)) if fixed.startswith(text, i)]
                        if not hits:
                            continue
                        start = min(hits, key=lambda i: abs(i - start))
                    answers.append((start, text))
                if answers or impossible:
                    qas.append({"question": question, "answers": answers, "impossible": impossible,
                                "golds": [t for _, t in answers] or [a["text"] for a in qa.get("plausible_answers", [])]})
            paragraphs.append({"context": fixed, "qas": qas})
        out.append({"title": f"{path.stem}:{a}:{article.get('title', '')}", "paragraphs": paragraphs})
    return out


def load_sources(train: Path) -> dict[str, list[dict]]:
    import opencc

    t2s = opencc.OpenCC("t2s").convert
    return {
        "drcd": _articles(train / "DRCD_dev.json", t2s) + _articles(train / "DRCD_test.json", t2s),
        "cmrc_trial": _articles(train / "cmrc2018_trial.json"),
        "squad2": _articles(train / "squad2_train_first10.json"),
        "squad11": _articles(train / "squad11_train_sample_reconstructed.json"),
    }


def _held_out(title: str) -> bool:
    return int(hashlib.sha256(title.encode()).hexdigest(), 16) % 12 == 0


def make_pairs(sources: dict[str, list[dict]], rng: random.Random, negative_share: float
               ) -> tuple[list[dict], list[dict]]:
    """(train, held-out) pairs: question, context, answer (start, text) or None, lang, source."""
    train, held = [], []
    pooled = {name: [p["context"] for a in arts for p in a["paragraphs"]] for name, arts in sources.items()}
    for name, articles in sources.items():
        lang = "en" if name.startswith("squad") else "zh"
        for article in articles:
            bucket = held if _held_out(article["title"]) else train
            contexts = [p["context"] for p in article["paragraphs"]]
            for p, paragraph in enumerate(article["paragraphs"]):
                for qa in paragraph["qas"]:
                    answer = None if qa["impossible"] else qa["answers"][0]
                    bucket.append({"question": qa["question"], "context": paragraph["context"], "answer": answer,
                                   "lang": lang, "source": name, "golds": qa["golds"]})
                    if qa["impossible"] or rng.random() >= negative_share:
                        continue
                    golds = [t for t in qa["golds"] if t]
                    others = [c for i, c in enumerate(contexts) if i != p and not any(g in c for g in golds)]
                    kind = "hard"
                    if not others:
                        others = [c for c in rng.sample(pooled[name], 3) if not any(g in c for g in golds)]
                        kind = "other"
                    if others:
                        bucket.append({"question": qa["question"], "context": rng.choice(others), "answer": None,
                                       "lang": lang, "source": f"{name}-{kind}", "golds": golds})
    return train, held


def choose_pairs(sources: dict[str, list[dict]], rng: random.Random, negative_share: float, zh_limit: int,
                 en_limit: int) -> tuple[list[dict], list[dict]]:
    """(training pairs kept, held-out pairs): the shuffled training pairs, at most so many per language."""
    train_pairs, held_pairs = make_pairs(sources, rng, negative_share)
    rng.shuffle(train_pairs)
    limits = {"zh": zh_limit, "en": en_limit}
    kept, seen = [], {"zh": 0, "en": 0}
    for pair in train_pairs:
        if seen[pair["lang"]] < limits[pair["lang"]]:
            kept.append(pair)
            seen[pair["lang"]] += 1
    return kept, held_pairs


def cross_lingual_sources(kept: list[dict], held: list[dict], n: int, n_held: int) -> tuple[list[dict], list[dict]]:
    """The Chinese pairs whose questions get English copies: the first ``n`` kept ones (answerable
    and negatives alike), and ``n_held`` held-out ones drawn by their own seed (scored, never trained)."""
    chosen = [p for p in kept if p["lang"] == "zh"][:n]
    held_zh = [p for p in held if p["lang"] == "zh"]
    return chosen, random.Random(SEED + 1).sample(held_zh, min(n_held, len(held_zh)))


def english_copies(pairs: list[dict], english: dict[str, str]) -> list[dict]:
    """Copies of Chinese pairs with the question in English (same passage, same answer); the source
    is marked ``-en`` after its name ("drcd-en-hard"); questions whose translation is unusable are dropped."""
    from scripts.translate_questions import usable

    out = []
    for pair in pairs:
        en = english.get(pair["question"], "")
        if usable(pair["question"], en):
            name, _, kind = pair["source"].partition("-")
            out.append({**pair, "question": en, "lang": "en", "source": f"{name}-en" + (f"-{kind}" if kind else "")})
    return out


def encode(tokenizer, pair: dict, rng: random.Random) -> tuple[list[int], int, int] | None:
    """(ids, start token, end token) of one training window; (0, 0) = no answer."""
    wins = sm.windows(tokenizer, pair["question"], pair["context"])
    if pair["answer"] is None:
        w = rng.choice(wins)
        return w.ids, 0, 0
    a_start, text = pair["answer"]
    a_end = a_start + len(text)
    for w in wins:
        inside = [k for k, (s, e) in enumerate(w.offsets) if e > a_start and s < a_end]
        if inside and w.offsets[0][0] <= a_start and w.offsets[-1][1] >= a_end:
            return w.ids, w.context_start + inside[0], w.context_start + inside[-1]
    return None


# -- the bottom cache ------------------------------------------------------------------------------
def build_cache(model, examples: list[tuple[list[int], int, int]], folder: Path, batch: int = 16) -> np.memmap:
    """Hidden states after the frozen layers, for every example, in one bf16 (uint16) memmap."""
    import torch
    from tqdm import tqdm

    lengths = np.array([len(x[0]) for x in examples])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    dim = model.base.config.hidden_size
    done = folder / "done.json"
    path = folder / "hidden.u16"
    if done.is_file() and json.loads(done.read_text())["tokens"] == int(offsets[-1]):
        return np.memmap(path, dtype=np.uint16, mode="r", shape=(int(offsets[-1]), dim)), offsets
    folder.mkdir(parents=True, exist_ok=True)
    store = np.memmap(path, dtype=np.uint16, mode="w+", shape=(int(offsets[-1]), dim))
    order = np.argsort(lengths)
    with tqdm(total=int(offsets[-1]), unit="tok", desc="frozen layers (once)", smoothing=0.05) as bar:
        for b in range(0, len(order), batch):
            group = order[b:b + batch]
            ids, mask = sm.pad_batch([examples[k][0] for k in group], 0)
            hidden = model.bottom(ids, mask).to(torch.bfloat16)
            for row, k in enumerate(group):
                store[offsets[k]:offsets[k + 1]] = hidden[row, :lengths[k]].view(torch.int16).numpy().view(np.uint16)
            bar.update(int(lengths[group].sum()))
    store.flush()
    done.write_text(json.dumps({"tokens": int(offsets[-1]), "examples": len(examples)}))
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(int(offsets[-1]), dim)), offsets


def cached_batch(store, offsets, group, dim):
    import torch

    width = max(int(offsets[k + 1] - offsets[k]) for k in group)
    hidden = torch.zeros((len(group), width, dim), dtype=torch.bfloat16)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for row, k in enumerate(group):
        n = int(offsets[k + 1] - offsets[k])
        hidden[row, :n] = torch.from_numpy(np.ascontiguousarray(store[offsets[k]:offsets[k + 1]]).view(np.int16)
                                           ).view(torch.bfloat16)
        mask[row, :n] = 1
    return hidden, mask


def batches(lengths: np.ndarray, tokens_per_batch: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of about ``tokens_per_batch`` padded tokens, in random order."""
    order = sorted(range(len(lengths)), key=lambda k: (lengths[k], rng.random()))
    out, group, width = [], [], 0
    for k in order:
        width_new = max(width, int(lengths[k]))
        if group and width_new * (len(group) + 1) > tokens_per_batch:
            out.append(group)
            group, width_new = [], int(lengths[k])
        group.append(k)
        width = width_new
    if group:
        out.append(group)
    rng.shuffle(out)
    return out


# -- training --------------------------------------------------------------------------------------
def span_loss(logits, starts, ends, context_mask):
    import torch

    allowed = context_mask.clone()
    allowed[:, 0] = True
    scores = logits.float().masked_fill(~allowed.unsqueeze(-1), -1e4)
    ce = torch.nn.functional.cross_entropy
    return (ce(scores[..., 0], starts) + ce(scores[..., 1], ends)) / 2


def context_masks(examples, group, width):
    import torch

    m = torch.zeros((len(group), width), dtype=torch.bool)
    for row, k in enumerate(group):
        ids, cs = examples[k][0], examples[k][3]
        m[row, cs:len(ids) - 1] = True
    return m


def train(args) -> None:
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    from assistant.config import Settings
    from assistant.models import EMBEDDING_GEMMA, check_ready

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(SEED)
    sources = load_sources(Path(args.train))
    kept, held_pairs = choose_pairs(sources, rng, args.negatives, args.zh_limit, args.en_limit)
    held_xl = []
    if args.cross_lingual:
        from scripts.translate_questions import translate

        chosen, held_xl = cross_lingual_sources(kept, held_pairs, args.cross_lingual, args.held_xl)
        english = translate([p["question"] for p in chosen + held_xl])
        copies = english_copies(chosen, english)
        kept += copies
        held_xl = english_copies(held_xl, english)
        if args.translate_only:
            print(f"translated: {len(chosen)} training and {len(held_xl)} held-out Chinese questions; "
                  f"{len(copies)} training copies usable", flush=True)
            return
    t0 = time.time()
    folder = Path(args.base) if args.base else check_ready(EMBEDDING_GEMMA, Settings().home)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    base = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    model = sm.SpanReaderModel(base, args.frozen, args.layers, lora_rank=args.lora_rank)
    model.to(torch.float32)

    examples = []
    for pair in kept:
        enc = encode(tokenizer, pair, rng)
        if enc is not None:
            ids, s, e = enc
            examples.append((ids, s, e, ids.index(tokenizer.eos_token_id) + 1))
    summary = {}
    for pair in kept:
        key = f"{pair['source']}{'' if pair['answer'] or pair['source'].endswith(('hard', 'other')) else '-impossible'}"
        summary[key] = summary.get(key, 0) + 1
    lengths = np.array([len(x[0]) for x in examples])
    print(f"data: {len(examples)} training windows ({int(lengths.sum()):,} tokens, median {int(np.median(lengths))}), "
          f"{len(held_pairs)} held-out pairs; by source: {json.dumps(summary, ensure_ascii=False)}", flush=True)
    bottom = (f"adapted by rank-{args.lora_rank} low-rank updates" if args.lora_rank
              else "frozen (embedding model's own)")
    print(f"model: layers 0-{args.frozen - 1} {bottom}, {args.frozen}-{args.layers - 1} "
          f"trained, lr {args.lr}, {args.epochs} epochs, seed {SEED}", flush=True)

    dim = base.config.hidden_size
    if not args.lora_rank:  # the bottom never changes: run it once, train the top from the cache
        key = hashlib.sha256(json.dumps([args.frozen, [x[0] for x in examples]]).encode()).hexdigest()[:16]
        store, offsets = build_cache(model, examples, Path(args.cache) / key)

    params = model.trainable()
    for p in params:  # copied from the frozen base: switch their gradients back on
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    plan = [batches(lengths, args.batch_tokens, rng) for _ in range(args.epochs)]
    total = sum(len(p) for p in plan)
    warmup = max(1, int(0.06 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    model.train(True)
    step, running = 0, None
    with tqdm(total=total, desc="training", unit="step") as bar:
        for epoch, epoch_batches in enumerate(plan):
            for group in epoch_batches:
                starts = torch.tensor([examples[k][1] for k in group])
                ends = torch.tensor([examples[k][2] for k in group])
                if args.lora_rank:
                    ids, mask = sm.pad_batch([examples[k][0] for k in group], 0)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                        logits = model.logits(ids, mask)
                else:
                    hidden, mask = cached_batch(store, offsets, group, dim)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                        logits = model.upper(hidden, mask)
                loss = span_loss(logits, starts, ends, context_masks(examples, group, mask.shape[1]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                step += 1
                running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.3f}")
                bar.update()
                if args.max_steps and step >= args.max_steps:
                    break
            if args.max_steps and step >= args.max_steps:
                break
    model.train(False)
    train_s = time.time() - t0

    report = evaluate_held(model, tokenizer, held_pairs, args.held_limit, rng)
    if held_xl:  # English questions about Chinese passages: reported, never used for the threshold
        xl = evaluate_held(model, tokenizer, held_xl, len(held_xl), random.Random(SEED))
        report.update({f"held_{k}_xl": xl[f"held_{k}"] for k in ("pairs", "em", "f1", "auc")})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    info = sm.metadata(args.frozen, args.layers, EMBEDDING_GEMMA.files[EMBEDDING_GEMMA.weights_file][1],
                       lora_rank=args.lora_rank, lora_alpha=model.lora_alpha if args.lora_rank else 0.0,
                       bf16_autocast=args.bf16, threshold=report["threshold"], seed=SEED, lr=args.lr, epochs=args.epochs,
                       windows=len(examples), train_seconds=round(train_s))
    save_file(state, str(out), metadata=info)
    report.update({"train_seconds": round(train_s), "windows": len(examples), "tokens": int(lengths.sum()),
                   "sources": summary, "args": vars(args)})
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "args"}, ensure_ascii=False), flush=True)
    from assistant.models import READER_WEIGHTS, sha256_file

    digest = sha256_file(out)
    if out.resolve() == READER_WEIGHTS:  # the committed weights: record their hash where loading checks it
        code = REPO / "assistant" / "models.py"
        text = code.read_text("utf-8")
        code.write_text(re.sub(r'READER_SHA256 = "[^"]*"', f'READER_SHA256 = "{digest}"', text, count=1), "utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {digest}) after {train_s / 60:.1f} min",
          flush=True)


def evaluate_held(model, tokenizer, pairs: list[dict], limit: int, rng: random.Random) -> dict:
    """Held-out EM/F1 on answerable pairs, and the answerability threshold from all held-out pairs."""
    from tqdm import tqdm

    from assistant.evaluation import roc_auc

    sample = rng.sample(pairs, min(limit, len(pairs)))
    margins, labels, ems, f1s, langs = [], [], [], [], []
    for pair in tqdm(sample, desc="held-out", unit="pair"):
        (found,) = sm.score_windows(model, tokenizer, pair["question"], [pair["context"]])
        margins.append(found.margin)
        labels.append(pair["answer"] is not None)
        langs.append(pair["lang"])
        if pair["answer"] is not None:
            em, f1 = answer_scores(pair["context"][found.start:found.end], pair["golds"])
            ems.append(em)
            f1s.append(f1)
    margins_a, labels_a = np.array(margins), np.array(labels)
    threshold = pick_threshold(margins_a, labels_a)
    report = {"held_pairs": len(sample), "held_em": float(np.mean(ems)), "held_f1": float(np.mean(f1s)),
              "held_auc": roc_auc(margins_a, labels_a), "threshold": threshold}
    for lang in ("zh", "en"):
        sel = np.array(langs) == lang
        if labels_a[sel].any() and (~labels_a[sel]).any():
            report[f"held_auc_{lang}"] = roc_auc(margins_a[sel], labels_a[sel])
    refuse = margins_a < threshold
    report["held_abstention_precision"] = float((~labels_a & refuse).sum() / max(1, refuse.sum()))
    report["held_abstention_recall"] = float((~labels_a & refuse).sum() / max(1, (~labels_a).sum()))
    return report


def pick_threshold(margins: np.ndarray, answerable: np.ndarray) -> float:
    """The margin below which to abstain: the best balanced accuracy on held-out pairs."""
    best, best_t = -1.0, 0.0
    for t in np.unique(np.round(margins, 2)):
        refuse = margins < t
        tpr = (refuse & ~answerable).sum() / max(1, (~answerable).sum())
        tnr = (~refuse & answerable).sum() / max(1, answerable.sum())
        if (tpr + tnr) / 2 > best:
            best, best_t = (tpr + tnr) / 2, float(t)
    return best_t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=os.environ.get("ASSISTANT_TRAIN_DATA", str(REPO.parent / "shared" / "train")),
                    help="folder with DRCD_*.json, cmrc2018_trial.json and the SQuAD samples")
    ap.add_argument("--base", default="", help="embedding model folder (default: the verified built-in copy)")
    ap.add_argument("--out", default=str(REPO / "assistant" / "weights" / "reader.safetensors"))
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "assistant" / "reader-train"))
    ap.add_argument("--layers", type=int, default=12, help="transformer layers used (the first N)")
    ap.add_argument("--frozen", type=int, default=8, help="of those, the bottom ones left as they are")
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per step")
    ap.add_argument("--negatives", type=float, default=0.3, help="share of questions also paired with a paragraph "
                    "that does not answer them")
    ap.add_argument("--zh-limit", type=int, default=3400, help="at most this many Chinese training pairs")
    ap.add_argument("--en-limit", type=int, default=900, help="at most this many English training pairs")
    ap.add_argument("--held-limit", type=int, default=240, help="held-out pairs scored for the threshold")
    ap.add_argument("--lora-rank", type=int, default=0, help="adapt the bottom layers too, by low-rank updates "
                    "of this rank (0: keep them frozen and cache their outputs)")
    ap.add_argument("--bf16", action="store_true", help="train under bf16 autocast (fast where the CPU has "
                    "AVX-512 BF16)")
    ap.add_argument("--cross-lingual", type=int, default=0, help="also train on English copies of the first N "
                    "Chinese training questions, translated by the local LLM (scripts/translate_questions.py; needs "
                    "make install-llm models-llm)")
    ap.add_argument("--held-xl", type=int, default=100, help="with --cross-lingual: held-out Chinese pairs whose "
                    "English copies are scored (reported only)")
    ap.add_argument("--translate-only", action="store_true", help="with --cross-lingual: translate the questions "
                    "it needs (cached), then stop")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all; for timing)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if not (math.isfinite(args.lr) and args.lr > 0):
        ap.error("--lr must be positive")
    if args.translate_only and not args.cross_lingual:
        ap.error("--translate-only needs --cross-lingual N")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
