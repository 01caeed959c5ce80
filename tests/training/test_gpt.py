"""The decoder's KV cache and padding mask give the same logits as a plain forward pass."""
import pytest
import torch

from omniforge_training.models.gpt import GPT, GPTConfig


@pytest.fixture(params=[True, False], ids=["rope", "learned-positions"])
def model(request):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16, rope=request.param)).eval()


def test_cached_decoding_matches_a_full_forward(model):
    ids = torch.randint(0, 50, (2, 12))
    full, _, _ = model(ids)
    # prefill 8 tokens, then feed the other 4 one at a time
    pos = torch.arange(8).repeat(2, 1)
    logits, _, cache = model(ids[:, :8], position_ids=pos, attention_mask=torch.ones(2, 8, dtype=torch.long))
    steps = [logits]
    for t in range(8, 12):
        logits, _, cache = model(ids[:, t:t + 1], position_ids=torch.full((2, 1), t), past_key_values=cache,
                                 attention_mask=torch.ones(2, t + 1, dtype=torch.long))
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_left_padding_does_not_change_a_sequence(model):
    ids = torch.randint(0, 50, (1, 6))
    alone, _, _ = model(ids)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    pos = torch.clamp(mask.cumsum(1) - 1, min=0)
    logits, _, _ = model(padded, position_ids=pos, attention_mask=mask)
    torch.testing.assert_close(logits[:, 3:], alone, atol=1e-5, rtol=1e-4)


def test_weights_are_tied_and_decay_skips_vectors():
    m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    assert m.lm_head.weight is m.transformer.wte.weight
    decay, no_decay = m.configure_optimizer(lr=1e-3, weight_decay=0.1).param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="multiple of 8"):
        GPTConfig(n_embd=24, n_head=2)          # head size 12: trains, but could not be served
