import pytest
import torch

from lab.models import (MODEL_NAMES, ModelUnavailable, available_offline, load_model,
                        resolve_device, tiny_tokenizer)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="smollm2-135m"):
        load_model("gpt-5")


def test_unknown_device():
    with pytest.raises(ValueError, match="valid"):
        resolve_device("tpu")


def test_tiny_is_frozen_eval_and_seeded(tiny):
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())
    again = load_model("tiny-gpt2", "cpu")
    assert torch.equal(tiny.W_E, again.W_E)  # same seed, same weights
    assert 2 <= tiny.n_layers <= 4 and tiny.W_E.shape == (tiny.vocab_size, tiny.d_model)


def test_tiny_tokenizer_round_trips():
    tok = tiny_tokenizer()
    text = "The residual stream of a transformer, layer 4: 90 dims!"
    assert tok.decode(tok(text).input_ids) == text


def test_hub_model_fails_fast_when_unreachable(monkeypatch):
    """An uncached hub model with no network: a clear error in seconds, not ~23 s of retries."""
    import time
    import lab.models as m
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(m, "_HUB_PROBE_URL", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setitem(m.HUB_MODELS, "gpt2", "lab-tests/never-cached-model")
    t0 = time.time()
    with pytest.raises(ModelUnavailable, match="unreachable"):
        load_model("gpt2")
    assert time.time() - t0 < 10
    assert not available_offline("gpt2")


def test_smollm2_facts(smol):
    assert (smol.n_layers, smol.d_model, smol.d_mlp, smol.vocab_size) == (30, 576, 1536, 49152)
    assert smol.arch.family == "llama"


def test_smollm2_has_real_weights(smol):
    """Pretrained weights predict English; random ones would be near-uniform (ppl ~ vocab)."""
    text = ("The sun rises in the east and sets in the west. Water boils at one hundred "
            "degrees Celsius at sea level. Most people sleep at night and work during the day.")
    ids = smol.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = smol.model(ids, labels=ids).loss
    assert torch.exp(loss).item() < 60


def test_save_pretrained_folder_loads(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), "cpu")
    assert torch.equal(lm.W_E, tiny.W_E) and lm.n_layers == tiny.n_layers


def test_names_registry():
    assert {"gpt2", "gpt2-large", "smollm2-135m", "tiny-gpt2"} <= set(MODEL_NAMES)
