"""Tests for coverage_sim.transformer: the causal transformer policy, sampling and SFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from coverage_sim.sequences import enumerate_sequences, tajwar_token_env
from coverage_sim.transformer import (CausalTransformer, TransformerConfig, sample,
                                      sample_reference, sequence_logp, sequence_logp_table,
                                      sft_to_reference, token_logp)

SMALL = dict(n_layer=2, n_head=2, n_embd=8)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _perturbed(cfg: TransformerConfig, seed: int = 0, scale: float = 0.7, **kw):
    """A model far from the near-uniform initialisation, so the checks are not trivially met."""
    model = CausalTransformer(cfg, seed=seed, **kw)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)
    return model


def test_gpt_nano_defaults_and_size():
    cfg = TransformerConfig(vocab=100, n_prompts=1, length=9)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout) == (3, 3, 48, 0.0)
    model = CausalTransformer(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 10_000 < n < 100_000
    assert model.dtype == torch.float64
    assert model.device == torch.device("cpu")


@pytest.mark.parametrize("vocab,length,n_prompts,sizes", [
    (2, 3, 1, SMALL), (3, 2, 2, SMALL), (4, 4, 3, {}), (5, 1, 2, SMALL)])
def test_normalised_over_all_sequences(vocab, length, n_prompts, sizes):
    model = _perturbed(TransformerConfig(vocab, n_prompts, length, **sizes), seed=vocab)
    tokens = enumerate_sequences(vocab, length)
    table = sequence_logp_table(model, tokens, chunk_size=7)
    assert table.shape == (n_prompts, vocab ** length)
    assert torch.allclose(table.exp().sum(dim=1), torch.ones(n_prompts, dtype=torch.float64),
                          rtol=0, atol=1e-12)
    # Not trivially uniform: the check above means something.
    assert float(table.detach().exp().max()) > 2.0 / vocab ** length
    # sequence_logp on arbitrary rows agrees with the table.
    for x in range(n_prompts):
        lp = sequence_logp(model, torch.full((len(tokens),), x), torch.as_tensor(tokens))
        assert torch.allclose(lp, table[x], rtol=0, atol=1e-12)


def test_token_logp_shape_and_rows_normalised():
    model = _perturbed(TransformerConfig(7, 2, 5, **SMALL))
    y = torch.randint(0, 7, (6, 5), generator=torch.Generator().manual_seed(1))
    lp = token_logp(model, torch.tensor([0, 1, 0, 1, 1, 0]), y)
    assert lp.shape == (6, 5, 7)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(6, 5, dtype=torch.float64), atol=1e-13)
    gathered = lp.gather(2, y[:, :, None])[:, :, 0].sum(1)
    assert torch.allclose(gathered, sequence_logp(model, torch.tensor([0, 1, 0, 1, 1, 0]), y),
                          atol=1e-13)


def test_causal_masking():
    L, V = 6, 5
    model = _perturbed(TransformerConfig(V, 2, L, n_layer=3, n_head=2, n_embd=8))
    gen = torch.Generator().manual_seed(3)
    y = torch.randint(0, V, (4, L), generator=gen)
    prompts = torch.tensor([0, 1, 1, 0])
    base = token_logp(model, prompts, y)
    for t in range(L - 1):
        y2 = y.clone()
        y2[:, t] = (y2[:, t] + 1 + torch.arange(4) % (V - 1)) % V
        out = token_logp(model, prompts, y2)
        # Output t+1 predicts y_{t+1} from y_<=t: it is the first position that may change.
        assert torch.allclose(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-14)
        assert (out[:, t + 1:] - base[:, t + 1:]).abs().max() > 1e-6
    # The prompt conditions every position.
    other = token_logp(model, 1 - prompts, y)
    assert (other - base).abs().amax(dim=(0, 2)).min() > 1e-6


def test_init_is_seeded_and_device_independent_of_global_rng():
    cfg = TransformerConfig(4, 1, 3, **SMALL)
    torch.manual_seed(123)
    a = CausalTransformer(cfg, seed=5)
    torch.manual_seed(999)
    b = CausalTransformer(cfg, seed=5)
    c = CausalTransformer(cfg, seed=torch.Generator().manual_seed(5))
    d = CausalTransformer(cfg, seed=6)
    for pa, pb, pc, pd in zip(a.parameters(), b.parameters(), c.parameters(), d.parameters()):
        assert torch.equal(pa, pb) and torch.equal(pa, pc)
    assert any(not torch.equal(pa, pd) for pa, pd in zip(a.parameters(), d.parameters()))
    f32 = CausalTransformer(cfg, seed=5, dtype=torch.float32)
    for pa, pf in zip(a.parameters(), f32.parameters()):
        assert pf.dtype == torch.float32
        assert torch.equal(pa, pf.double())          # float32 numbers in float64: the same model
    # neither the global generator nor torch's default dtype changes the model (a float64
    # default once left the float64 model's weights unrounded, and its runs differed)
    state = torch.get_rng_state()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        e = CausalTransformer(cfg, seed=5)
    finally:
        torch.set_default_dtype(old)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(pa, pe) for pa, pe in zip(a.parameters(), e.parameters()))


def test_float32_supported():
    model = _perturbed(TransformerConfig(3, 1, 3, **SMALL), dtype=torch.float32)
    with torch.no_grad():
        table = sequence_logp_table(model, enumerate_sequences(3, 3))
    assert table.dtype == torch.float32
    assert abs(float(table.double().exp().sum()) - 1.0) < 1e-5


def test_sample_matches_model_distribution():
    # Ancestral sampling with the key/value cache must draw from exp(sequence_logp):
    # chi-square goodness of fit on 9 outcomes x 2 prompts, 20k draws each.
    V, L = 3, 2
    model = _perturbed(TransformerConfig(V, 2, L, **SMALL), seed=2, scale=0.5)
    probs = sequence_logp_table(model, enumerate_sequences(V, L)).exp().detach().numpy()
    n = 20_000
    for x in range(2):
        y = sample(model, torch.full((n,), x), torch.Generator().manual_seed(10 + x))
        assert y.dtype == torch.long and y.shape == (n, L)
        idx = (y[:, 0] * V + y[:, 1]).numpy()
        counts = np.bincount(idx, minlength=V ** L)
        assert chisquare(counts, probs[x] * n).pvalue > 1e-4
        # a grossly wrong distribution is rejected by the same test
        assert chisquare(counts, np.full(V ** L, n / V ** L)).pvalue < 1e-6


def test_sample_reproducible_from_generator():
    model = CausalTransformer(TransformerConfig(10, 1, 4, **SMALL))
    p = torch.zeros(50, dtype=torch.long)
    a = sample(model, p, torch.Generator().manual_seed(0))
    b = sample(model, p, torch.Generator().manual_seed(0))
    c = sample(model, p, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_reference_matches_env_reference():
    env = tajwar_token_env(length=2, vocab=3)
    n = 20_000
    y = sample_reference(env, torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(0))
    counts = np.bincount((y[:, 0] * 3 + y[:, 1]).numpy(), minlength=9)
    assert chisquare(counts, env.bandit.ref[0] * n).pvalue > 1e-4


def test_sft_exact_reaches_reference():
    env = tajwar_token_env(length=2, vocab=3, n_prompts=2)
    model = CausalTransformer(TransformerConfig(3, 2, 2, **SMALL), seed=0)
    losses = sft_to_reference(model, env, steps=300, lr=3e-2)
    assert losses.shape == (301,)
    assert losses[0] > 0.05 and losses[-1] < 1e-4
    # the returned loss is the exact KL(pi_ref || pi)
    pi = sequence_logp_table(model, env.tokens).exp().detach().numpy()
    ref = env.bandit.ref
    kl = float(np.sum(env.prompt_weights[:, None] * ref * np.log(ref / pi)))
    assert abs(kl - losses[-1]) < 1e-4 * max(losses[-1], 1e-3) + 1e-6


def test_sft_sampled_reduces_kl():
    env = tajwar_token_env(length=3, vocab=4)
    model = CausalTransformer(TransformerConfig(4, 1, 3, **SMALL), seed=0)
    gen = torch.Generator().manual_seed(0)
    start = _exact_kl(model, env)
    losses = sft_to_reference(model, env, steps=150, lr=3e-2, batch_size=64, generator=gen)
    assert np.isfinite(losses).all()
    assert _exact_kl(model, env) < 0.05 * start


def _exact_kl(model, env):
    with torch.no_grad():
        pi = sequence_logp_table(model, env.tokens).exp().numpy()
    ref = env.bandit.ref
    return float(np.sum(env.prompt_weights[:, None] * ref * np.log(ref / pi)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(vocab=1, n_prompts=1, length=2), "vocab"),
    (dict(vocab=3, n_prompts=0, length=2), "n_prompts"),
    (dict(vocab=3, n_prompts=1, length=0), "length"),
    (dict(vocab=3, n_prompts=1, length=2, n_head=5, n_embd=48), "n_embd"),
    (dict(vocab=3, n_prompts=1, length=2, dropout=0.1), "dropout"),
    (dict(vocab=3.5, n_prompts=1, length=2), "vocab"),
])
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig(**kwargs)


def test_invalid_inputs():
    cfg = TransformerConfig(3, 2, 2, **SMALL)
    model = CausalTransformer(cfg)
    ok_p, ok_y = torch.tensor([0, 1]), torch.tensor([[0, 1], [2, 2]])
    with pytest.raises(ValueError, match="config"):
        CausalTransformer({"vocab": 3})
    with pytest.raises(ValueError, match="dtype"):
        CausalTransformer(cfg, dtype=torch.float16)
    with pytest.raises(ValueError, match="seed"):
        CausalTransformer(cfg, seed=-1)
    with pytest.raises(ValueError, match="prompts"):
        sequence_logp(model, torch.tensor([0, 2]), ok_y)
    with pytest.raises(ValueError, match="tokens"):
        sequence_logp(model, ok_p, torch.tensor([[0, 3], [0, 0]]))
    with pytest.raises(ValueError, match="tokens"):
        sequence_logp(model, ok_p, torch.tensor([[0, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="tokens"):
        sequence_logp(model, ok_p, ok_y.double())
    with pytest.raises(ValueError, match="prompts"):
        token_logp(model, ok_p[:, None], ok_y)
    with pytest.raises(ValueError, match="model"):
        sequence_logp(torch.nn.Linear(2, 2), ok_p, ok_y)
    with pytest.raises(ValueError, match="generator"):
        sample(model, ok_p, None)
    with pytest.raises(ValueError, match="generator"):
        sample(model, ok_p, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        sequence_logp_table(model, ok_y, chunk_size=0)
    env = tajwar_token_env(length=2, vocab=4)
    with pytest.raises(ValueError, match="does not match"):
        sft_to_reference(model, env)
    env = tajwar_token_env(length=2, vocab=3, n_prompts=2)
    with pytest.raises(ValueError, match="generator"):
        sft_to_reference(model, env, batch_size=8)
    with pytest.raises(ValueError, match="steps"):
        sft_to_reference(model, env, steps=-1)
    big = tajwar_token_env(length=9, vocab=100)
    with pytest.raises(ValueError, match="enumerable"):
        sft_to_reference(CausalTransformer(TransformerConfig(100, 1, 9, **SMALL)), big)


def test_docstring_examples():
    import doctest

    import coverage_sim.transformer as mod
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder(exclude_empty=True).find(mod, mod.__name__)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 5 and result.failed == 0
