"""Tests for coverage_sim.transformer_stack: a stack of independent transformers equals the models
trained one by one (log-probs, exact training, SFT), and the seeds do not mix."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import coverage_sim as cs  # noqa: E402
from coverage_sim.sequences import SequenceEnv  # noqa: E402
from coverage_sim.torch_backend import train_exact  # noqa: E402
from coverage_sim.transformer import (CausalTransformer, TransformerConfig,  # noqa: E402
                                      sequence_logp_table, sft_to_reference)
from coverage_sim.transformer_stack import (TransformerStack, sft_stack_to_reference,  # noqa: E402
                                            stack_logp_table, train_exact_stack)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CFG = TransformerConfig(vocab=3, n_prompts=2, length=3, n_layer=2, n_head=2, n_embd=8)


def _models(n, cfg=CFG, scale=0.4):
    """Models far from the near-uniform initialisation (so the comparisons mean something)."""
    out = []
    for s in range(n):
        m = CausalTransformer(cfg, seed=s)
        gen = torch.Generator().manual_seed(100 + s)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        out.append(m)
    return out


def _env(seed=0):
    rng = np.random.default_rng(seed)
    return SequenceEnv(3, 3, 2, "stack-test", reward=rng.normal(size=(2, 27)),
                       ref=rng.dirichlet(np.ones(3), size=(2, 3, 1))[:, :, 0])


def test_logp_table_equals_each_model():
    models = _models(4)
    stack = TransformerStack(models)
    tokens = torch.tensor(_env().tokens)
    lp = stack_logp_table(stack, tokens)
    assert lp.shape == (4, 2, 27)
    for s, m in enumerate(models):
        assert torch.allclose(lp[s], sequence_logp_table(m, tokens), rtol=0, atol=1e-12)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(4, 2, dtype=torch.float64), atol=1e-12)
    # gradients of one seed's loss touch only that seed's parameters
    lp[1].sum().backward()
    for grad in (p.grad for p in stack.params.values()):
        assert torch.count_nonzero(grad[[0, 2, 3]]) == 0 and torch.count_nonzero(grad[1]) > 0


def test_exact_training_equals_train_exact_per_seed():
    """Each model of the stack follows train_exact on its own objective and data (rounding)."""
    env = _env()
    bandit = env.bandit
    models = _models(3)
    datas = [cs.offline_pairs(bandit, bandit.ref, n=50, seed=np.random.default_rng(s))
             for s in range(3)]
    objs = [cs.objective("ipo", beta=0.1), cs.objective("sigmoid", beta=0.5),
            cs.objective("ipo", beta=0.3)]
    stack = TransformerStack(models)
    hist = train_exact_stack(env, objs, datas, stack=stack, steps=8, lr=1e-2, record=[0, 4, 8])
    for s in range(3):
        ref = train_exact(env, objs[s], datas[s], model=copy.deepcopy(models[s]), steps=8,
                          lr=1e-2, record=[0, 4, 8]).history
        for col in ("loss", "reward", "kl", "win_rate"):
            assert np.allclose(hist[s][col], ref[col], rtol=1e-9, atol=1e-12), col
        assert ref["kl"].iloc[-1] != ref["kl"].iloc[0]          # it trained


def test_online_objective_and_one_objective_for_all():
    env = _env(1)
    models = _models(2)
    obj = cs.objective("online_ipo", beta=0.2)
    hist = train_exact_stack(env, obj, None, stack=TransformerStack(models), steps=5, lr=1e-2,
                             record=[5])
    for s in range(2):
        ref = train_exact(env, obj, model=copy.deepcopy(models[s]), steps=5, lr=1e-2,
                          record=[5]).history
        assert np.allclose(hist[s]["win_rate"], ref["win_rate"], rtol=1e-9)


def test_sft_equals_sft_to_reference():
    env = _env()
    cfg = TransformerConfig(vocab=3, n_prompts=2, length=3, n_layer=1, n_head=1, n_embd=4)
    stack = TransformerStack([CausalTransformer(cfg, seed=s) for s in range(3)])
    kl = sft_stack_to_reference(stack, env, steps=20, lr=1e-2)
    assert kl.shape == (21, 3) and np.all(kl[-1] < kl[0])
    for s in range(3):
        ref = sft_to_reference(CausalTransformer(cfg, seed=s), env, steps=20, lr=1e-2)
        assert np.allclose(kl[:, s], ref, rtol=1e-9, atol=1e-13)


def test_copy_and_model_are_independent():
    stack = TransformerStack(_models(2))
    other = stack.copy()
    with torch.no_grad():
        other.params["head.weight"].add_(1.0)
    assert not torch.equal(other.params["head.weight"], stack.params["head.weight"])
    m = stack.model(1)
    tokens = torch.tensor(_env().tokens)
    assert torch.allclose(sequence_logp_table(m, tokens), stack_logp_table(stack, tokens)[1],
                          atol=1e-12)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="models"):
        TransformerStack([])
    with pytest.raises(ValueError, match="models"):
        TransformerStack([CausalTransformer(CFG), CausalTransformer(CFG, dtype=torch.float32)])
    stack = TransformerStack(_models(2))
    with pytest.raises(ValueError, match="tokens"):
        stack_logp_table(stack, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="objectives"):
        train_exact_stack(_env(), [cs.objective("rlhf")] * 3, stack=stack, steps=1, lr=0.1)
