"""The embedding model in ONNX Runtime (issue 17): torch-free pieces, the export's checks, and the real model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant import onnx_files
from assistant.errors import ModelError
from assistant.tokens import EmbeddingTable, pad_ids

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "offline"))
from offline_guard import offline_env  # noqa: E402


# -- the torch-free pieces -------------------------------------------------------------------------
def test_embedding_table_reads_rows_from_the_file_and_scales_them(tmp_path):
    from safetensors.numpy import save_file

    table = np.arange(24, dtype=np.float32).reshape(6, 4)
    save_file({"other": np.ones(3, np.float32), "embed_tokens.weight": table}, str(tmp_path / "m.safetensors"))
    rows = EmbeddingTable(tmp_path / "m.safetensors", "embed_tokens.weight", 2.0)
    assert rows.shape == (6, 4)
    got = rows.lookup(np.array([[5, 0], [2, 2]]))
    assert got.dtype == np.float32 and got.shape == (2, 2, 4)
    assert np.array_equal(got, table[[[5, 0], [2, 2]]] * 2)
    with pytest.raises(ValueError, match="outside"):
        rows.lookup(np.array([6]))


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 8 + b"{}", b"\x02\x00\x00\x00\x00\x00\x00\x00{}"])
def test_embedding_table_refuses_a_damaged_file_in_one_line(tmp_path, content):
    (tmp_path / "m.safetensors").write_bytes(content)
    with pytest.raises(ModelError, match="cannot read the token embeddings") as err:
        EmbeddingTable(tmp_path / "m.safetensors", "embed_tokens.weight", 1.0)
    assert "\n" not in str(err.value)


def test_pad_ids_pads_right_with_a_mask():
    ids, mask = pad_ids([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == np.int64


def _fake_export(folder: Path, fmt: str, graph: str) -> None:
    staging = onnx_files.staging_for(folder)
    (staging / graph).write_bytes(b"graph")
    (staging / f"{graph}.data").write_bytes(b"weights")
    onnx_files.publish(staging, folder, fmt)


def test_an_export_is_ready_only_while_its_files_are_as_stamped(tmp_path):
    from assistant import onnx_encoder

    folder = onnx_encoder.export_folder(tmp_path, "abc")
    assert folder.parent == tmp_path / "onnx" and folder.name.startswith("encoder-")
    assert onnx_encoder.export_folder(tmp_path, "abd") != folder  # keyed by the base weights
    assert not onnx_encoder.ready(folder)
    _fake_export(folder, onnx_encoder.FORMAT, onnx_encoder.GRAPH)
    assert onnx_encoder.ready(folder)
    assert not [p for p in tmp_path.joinpath("onnx").iterdir() if p.name.startswith(".")]  # no staging left
    stamp = json.loads((folder / onnx_files.STAMP).read_text())
    assert set(stamp["files"]) == {"encoder.onnx", "encoder.onnx.data"}
    (folder / "encoder.onnx.data").write_bytes(b"changed")  # another size
    assert not onnx_encoder.ready(folder)
    _fake_export(folder, "assistant-reader-onnx/1", onnx_encoder.GRAPH)  # another format's stamp
    assert not onnx_encoder.ready(folder)


def _embedder(tmp_path, runtime: str, dtype: str = "fp32"):
    from assistant.embedding import SentenceTransformerEmbedder
    from assistant.models import ResolvedModel

    model = ResolvedModel(str(tmp_path), "google/embeddinggemma-300m", "abc")
    return SentenceTransformerEmbedder(model, dtype, embed_runtime=runtime, home=tmp_path)


def test_embed_runtime_onnx_without_an_export_says_how_to_make_it(tmp_path):
    with pytest.raises(ModelError, match="assistant models fetch") as err:
        _embedder(tmp_path, "onnx").onnx_encoder()
    assert "\n" not in str(err.value)


def test_embed_runtime_auto_without_an_export_falls_back_to_torch(tmp_path):
    embedder = _embedder(tmp_path, "auto")
    assert embedder.onnx_encoder() is None
    assert embedder._model is None  # deciding loaded nothing


def test_embed_runtime_auto_keeps_a_bf16_embedder_in_torch(tmp_path):
    """ONNX Runtime computes in float32: it stands in for torch only where torch would compute in float32."""
    from assistant import onnx_encoder

    _fake_export(onnx_encoder.export_folder(tmp_path, "abc"), onnx_encoder.FORMAT, onnx_encoder.GRAPH)
    assert _embedder(tmp_path, "auto", "bf16").onnx_encoder() is None
    with pytest.raises(Exception):  # noqa: B017 - "onnx" is obeyed: it opens the (fake, unreadable) export
        _embedder(tmp_path, "onnx", "bf16").onnx_encoder()


def test_embed_runtime_is_validated():
    from assistant.config import Settings
    from assistant.errors import ConfigError

    assert Settings().embed_runtime == "auto"
    with pytest.raises(ConfigError, match="ASSISTANT_EMBED_RUNTIME"):
        Settings.from_env({"ASSISTANT_EMBED_RUNTIME": "tensorrt"})


# -- the real model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoders(real_settings):
    """(the ONNX encoder, sentence-transformers in float32)."""
    from sentence_transformers import SentenceTransformer

    from assistant.pipeline import make_embedder

    embedder = make_embedder(real_settings.with_(embed_runtime="onnx"))
    encoder = embedder.onnx_encoder()
    assert encoder is not None, "`make test` runs `assistant models fetch`, which exports the query encoder"
    return encoder, SentenceTransformer(embedder.location, device="cpu")


def _texts() -> list[str]:
    questions = [json.loads(line)["question"] for line in (ROOT / "tests" / "data" / "eval.jsonl").read_text("utf-8")
                 .splitlines() if line.strip()]
    passages = []
    for path in sorted((ROOT / "corpus").glob("*.txt")):
        text = path.read_text("utf-8")
        passages += [text, *(text[k:k + 360] for k in range(0, len(text), 360))]
    return questions + passages


@pytest.mark.e2e
def test_fast_tokenizer_gives_the_transformers_tokens_and_offsets(encoders):
    fast, slow = encoders[0].tokenizer, encoders[1].tokenizer
    assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (slow.bos_token_id, slow.eos_token_id,
                                                                         slow.pad_token_id)
    texts = _texts()
    assert len(texts) > 150
    for text in texts:
        assert fast(text)["input_ids"] == slow(text)["input_ids"]
        a = fast(text, add_special_tokens=False, return_offsets_mapping=True)
        b = slow(text, add_special_tokens=False, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and [tuple(o) for o in a["offset_mapping"]] == \
            [tuple(o) for o in b["offset_mapping"]]


@pytest.mark.e2e
def test_onnx_query_vectors_equal_sentence_transformers_float32(encoders):
    """The ONNX encoder gives torch's float32 vectors, and cuts a question over the model's 2,048 tokens
    as transformers does."""
    encoder, model = encoders
    prompt = encoder.prompts["query"]
    long = prompt + "初创公司" * 700
    assert encoder.token_ids([long])[0] == model.tokenizer(long, truncation=True, max_length=2048)["input_ids"]
    questions = _texts()[:79]  # (texts over the 512-token window: the export's own probe has 928 tokens)
    want = model.encode([prompt + q for q in questions], normalize_embeddings=True, convert_to_numpy=True)
    got = np.vstack([encoder.encode([prompt + q]) for q in questions])
    assert np.sum(want * got, axis=1).min() >= 0.9999


@pytest.mark.e2e
def test_onnx_passage_and_unit_vectors_equal_torch_float32(real_settings):
    """Builds in ONNX Runtime: chunk vectors and late-chunking unit vectors as torch float32 computes them,
    for chunks of the corpus, with their headings as titles."""
    from assistant.chunking import chunk_document, spans
    from assistant.pipeline import make_embedder
    from assistant.types import Document

    onnx = make_embedder(real_settings.with_(embed_runtime="onnx", embed_dtype="fp32"))
    torch_ = make_embedder(real_settings.with_(embed_runtime="torch", embed_dtype="fp32"))
    assert onnx.onnx_encoder() is not None and torch_.onnx_encoder() is None
    text = sorted((ROOT / "corpus").glob("*.txt"))[1].read_text("utf-8")
    chunks = chunk_document(Document("a.txt", text, "x"), 360)[:12]
    texts = [c.text for c in chunks]  # (torch float32 takes a minute on one text of 700+ tokens here: none longer)
    titles = [c.heading or "" for c in chunks]
    units = [[(u.start, u.end) for u in spans(t)] for t in texts]
    want_chunks, want_units = torch_.embed_passages(texts, titles, units)
    got_chunks, got_units = onnx.embed_passages(texts, titles, units)
    assert np.sum(want_chunks * got_chunks, axis=1).min() >= 0.9999
    for want, got in zip(want_units, got_units, strict=True):
        assert got.shape == want.shape and np.isfinite(got).all()
        assert np.sum(want * got, axis=1).min() >= 0.9999


@pytest.mark.e2e
def test_asking_loads_neither_torch_nor_transformers(real_index):
    """The CLI's ask path with the default runtimes and a float32 embedder (the default where the CPU has no
    native bf16): a cited answer, and no torch in the process."""
    script = ("import sys, json; from assistant.cli import main; code = main(['ask', '--json', "
              "'GAN 的损失函数是什么？']); heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') "
              "if m in sys.modules); print('HEAVY', json.dumps(heavy)); sys.exit(code)")
    env = offline_env({**os.environ, "ASSISTANT_INDEX": str(real_index), "ASSISTANT_CORPUS": str(ROOT / "corpus"),
                       "ASSISTANT_EMBED_DTYPE": "fp32"})
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    answer = json.loads(run.stdout[:run.stdout.rindex("HEAVY")])
    assert answer["citations"] and not answer["abstained"]
    assert run.stdout.rsplit("HEAVY", 1)[1].strip() == "[]"


def test_embed_dtype_auto_is_float32_where_the_onnx_export_exists(tmp_path):
    from assistant import onnx_encoder
    from assistant.config import Settings, resolve_dtype
    from assistant.pipeline import embed_dtype

    settings = Settings(home=tmp_path)
    assert embed_dtype(settings, "abc") == resolve_dtype("auto")  # no export: bf16 where native, else fp32
    _fake_export(onnx_encoder.export_folder(tmp_path, "abc"), onnx_encoder.FORMAT, onnx_encoder.GRAPH)
    assert embed_dtype(settings, "abc") == "fp32"
    assert embed_dtype(settings, "") == resolve_dtype("auto")  # a hub model: no export of it
    assert embed_dtype(settings.with_(embed_runtime="torch"), "abc") == resolve_dtype("auto")
    assert embed_dtype(settings.with_(embed_dtype="bf16"), "abc") == "bf16"  # what the user set


def test_sessions_do_not_spin_after_a_run(monkeypatch):
    """Spinning pool threads held the 2 cores FAISS and the next session need (BENCHMARKS.md): off."""
    ort = pytest.importorskip("onnxruntime")
    made = []
    monkeypatch.setattr(ort, "InferenceSession", lambda path, options, providers: made.append((options, providers)))
    onnx_files.session(Path("graph.onnx"), threads=2)
    (options, providers), = made
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2 and providers == ["CPUExecutionProvider"]
