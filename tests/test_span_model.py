"""The reader model's tensor code on a tiny random Gemma3 (fast): low-rank updates of the bottom
layers train, round-trip through the weights' tensors, and merge into the layers without changing a score."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from transformers import Gemma3TextConfig, Gemma3TextModel  # noqa: E402

from assistant import span_model as sm  # noqa: E402


def _tiny_base(seed: int = 0, sliding_window: int = 8):
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                              sliding_window=sliding_window, use_bidirectional_attention=True)
    base = Gemma3TextModel(config).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    return base


def _batch():
    torch.manual_seed(1)
    return torch.randint(3, 64, (2, 12)), torch.ones((2, 12), dtype=torch.long)


def test_lora_starts_as_the_plain_model_and_its_updates_train():
    base = _tiny_base()
    plain = sm.SpanReaderModel(base, 2, 4)
    adapted = sm.SpanReaderModel(base, 2, 4, lora_rank=4)
    adapted.load_state_dict({**plain.state_dict(), **{k: v for k, v in adapted.state_dict().items()
                                                       if k.startswith("lora.")}})
    ids, mask = _batch()
    with torch.no_grad():
        assert torch.allclose(plain.logits(ids, mask), adapted.logits(ids, mask), atol=1e-5)  # B = 0 at first
    assert len(adapted.lora) == 2 * len(sm.LORA_TARGETS)
    params = adapted.trainable()
    for p in params:
        p.requires_grad_(True)
    adapted.train(True)
    adapted.logits(ids, mask).sum().backward()
    lora_b = [m.b for m in adapted.lora.values()]
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in lora_b)
    # The shared embedding model itself is never touched.
    assert all(p.grad is None for p in base.parameters())


def test_lora_weights_round_trip_and_merge_without_changing_a_score():
    base = _tiny_base()
    trained = sm.SpanReaderModel(base, 2, 4, lora_rank=4)
    with torch.no_grad():
        for m in trained.lora.values():
            m.b.normal_(std=0.05)
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    assert any(k.startswith("lora.0.self_attn.q_proj.") for k in state)
    loaded = sm.SpanReaderModel(base, 2, 4, lora_rank=4)
    loaded.load_state_dict(state)
    ids, mask = _batch()
    with torch.no_grad():
        before = loaded.logits(ids, mask)
        assert torch.allclose(before, trained.logits(ids, mask), atol=1e-6)
        loaded.merge()
        assert not loaded.lora
        assert all(type(layer.self_attn.q_proj) is torch.nn.Linear for layer in loaded.low)
        assert torch.allclose(before, loaded.logits(ids, mask), atol=1e-4)
        # ... and it now differs from the unadapted layers (the updates did something).
        assert not torch.allclose(before, sm.SpanReaderModel(base, 2, 4).logits(ids, mask), atol=1e-3)


def test_weights_without_or_with_the_wrong_low_rank_tensors_are_refused():
    base = _tiny_base()
    state = sm.SpanReaderModel(base, 2, 4).state_dict()
    with pytest.raises(ValueError, match="low-rank"):
        sm.SpanReaderModel(base, 2, 4, lora_rank=4).load_state_dict(state)
    adapted = sm.SpanReaderModel(base, 2, 4, lora_rank=4).state_dict()
    with pytest.raises(ValueError, match="low-rank"):
        sm.SpanReaderModel(base, 2, 4).load_state_dict(adapted)
    meta = sm.metadata(2, 4, "abc", lora_rank=4, lora_alpha=8.0)
    assert meta["lora_rank"] == "4" and meta["lora_alpha"] == "8.0"
    assert "lora_rank" not in sm.metadata(2, 4, "abc")


class TorchTableStandIn:
    def __init__(self, base) -> None:
        self.base = base

    def lookup(self, ids):
        return sm.scaled_embedding(self.base, torch.from_numpy(ids)).numpy()


def test_the_exported_graph_run_by_another_engine_gives_the_model_s_scores(tmp_path):
    """What an engine (ONNX Runtime, OpenVINO) runs is ``graph()`` on ``embed()``'s output: fed the same way
    through OnnxSpanModel (here with torch as the engine), it scores every token as the model does."""
    from assistant.onnx_reader import OnnxSpanModel, TorchTable

    base = _tiny_base(sliding_window=1024)  # graph() exports plain padding masks: windows within the slide
    model = sm.SpanReaderModel(base, 2, 4)
    graph = model.graph()
    ids, mask = _batch()
    mask[1, 9:] = 0  # padding
    with torch.no_grad():
        expected = model.logits(ids, mask)
        engine = OnnxSpanModel(TorchTable(base), tmp_path, run=lambda h, m: graph(torch.from_numpy(h), torch.from_numpy(m)).numpy())
        got = engine.logits(ids.numpy(), mask.numpy())  # numpy in, numpy out: score_windows calls it so
    real = mask.bool().numpy()
    assert engine.numpy and got.dtype == np.float32 and got.shape == tuple(expected.shape)
    assert np.allclose(got[real], expected.float().numpy()[real], atol=1e-5)
    by_rows = OnnxSpanModel(TorchTableStandIn(base), tmp_path, run=lambda h, m: np.zeros((*m.shape, 2), np.float32))
    assert by_rows.logits(ids.numpy(), mask.numpy()).shape == (*mask.shape, 2)  # any object with lookup() is a table


def test_the_reader_s_own_bottom_copies_get_the_file_s_float32_values_not_a_bf16_embedder_s(tmp_path):
    """A bf16 embedder's layers are rounded; the reader (trained on the float32 ones) and its ONNX export
    take the bottom layers from the model file instead (span_reader._exact_bottom)."""
    from safetensors.torch import save_file

    from assistant.span_reader import _exact_bottom

    base = _tiny_base()
    exact = {k: v.clone().contiguous() for k, v in base.state_dict().items()}
    save_file(exact, str(tmp_path / "model.safetensors"))
    base.to(torch.bfloat16)
    model = sm.SpanReaderModel(base, 2, 4, own_bottom=True)
    name = "layers.1.mlp.up_proj.weight"
    rounded = model.low[1].mlp.up_proj.weight
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact[name])  # copied from bf16: rounded
    _exact_bottom(model, str(tmp_path))
    for i in range(2):
        for key, value in model.low[i].state_dict().items():
            assert torch.equal(value, exact[f"layers.{i}.{key}"]), key
    _exact_bottom(model, str(tmp_path / "missing"))  # no model file (a hub id): the copies stay as they are


def test_windows_are_batched_without_padding_a_short_window_to_a_long_one():
    from assistant.span_model import Window, _batches

    items = [(k, Window([1] * n, 2, [])) for k, n in enumerate([100, 105, 250, 256, 256])]
    groups = _batches(items, size=2)
    assert [[len(w.ids) for _, w in g] for g in groups] == [[100, 105], [250, 256], [256]]
    assert [k for g in _batches(items, size=8) for k, _ in g] == [0, 1, 2, 3, 4]
