"""Token-sequence environments, the tabular autoregressive policy and the generic training path.

The policy's exact backprop is checked against torch autograd through an independent construction of
``log pi(y|x)`` (a gather over the ``(N, L)`` prefix-node array instead of the depth-by-depth
accumulation) and against finite differences.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import coverage_sim as cs
import coverage_sim.sequences as seq
from coverage_sim import _engine
from coverage_sim.losses import population_loss

pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def _rel_err(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


class _MarkovRef:
    """An autoregressive reference: next-token probabilities depend on the prompt, the position and
    the previous token (uniform-ish random tables), as log-probs."""

    def __init__(self, n_prompts, length, vocab, seed):
        rng = np.random.default_rng(seed)
        self.table = np.log(rng.dirichlet(np.ones(vocab), size=(n_prompts, length, vocab + 1)))

    def __call__(self, prompts, prefixes):
        t = prefixes.shape[1]
        prev = prefixes[:, -1] + 1 if t else np.zeros(prompts.size, dtype=np.int64)
        return self.table[prompts, t, prev]


def _random_env(n_prompts=2, vocab=3, length=2, seed=0, markov=True):
    rng = np.random.default_rng(seed)
    n = vocab ** length
    ref = (_MarkovRef(n_prompts, length, vocab, seed + 1) if markov
           else rng.dirichlet(np.ones(vocab), size=(n_prompts, length)))
    return seq.SequenceEnv(vocab, length, n_prompts, f"random-{seed}",
                           reward=rng.uniform(-2, 2, size=(n_prompts, n)), ref=ref,
                           prompt_weights=rng.dirichlet(np.ones(n_prompts)) * 0.8
                           + 0.2 / n_prompts)


# ---------------------------------------------------------------- enumeration and the prefix tree


def test_enumerate_sequences_is_lexicographic_base_vocab():
    toks = seq.enumerate_sequences(3, 4)
    assert toks.shape == (81, 4) and toks.dtype == np.int64
    for i in (0, 1, 5, 40, 80):
        assert int("".join(map(str, toks[i])), 3) == i
    assert [tuple(r) for r in toks] == sorted(tuple(r) for r in toks)
    assert seq.enumerate_sequences(2, 16).shape == (seq.MAX_ENUMERABLE, 16)


def test_prefix_nodes_share_exactly_common_prefixes():
    vocab, length = 3, 3
    toks, nodes = seq.enumerate_sequences(vocab, length), seq.prefix_nodes(vocab, length)
    assert seq.n_prefix_nodes(vocab, length) == 1 + 3 + 9
    assert np.array_equal(np.unique(nodes), np.arange(13))
    for t in range(length):
        for i in range(0, 27, 4):
            same = (toks[:, :t] == toks[i, :t]).all(axis=1)
            assert np.array_equal(nodes[:, t] == nodes[i, t], same)


# ---------------------------------------------------------------- validation


def _env_args(**over):
    args = dict(vocab=3, length=2, n_prompts=1, name="x", reward=np.zeros(9),
                ref=np.full(3, 1 / 3))
    args.update(over)
    return args


@pytest.mark.parametrize("over,match", [
    (dict(vocab=1), "vocab"),
    (dict(vocab=2.5), "vocab"),
    (dict(length=0), "length"),
    (dict(n_prompts=0), "n_prompts"),
    (dict(name=3), "name"),
    (dict(prompt_weights=[0.5, 0.5]), "prompt_weights"),
    (dict(n_prompts=2, prompt_weights=[0.7, 0.7]), "prompt_weights"),
    (dict(ref=np.full(4, 0.25)), "ref"),
    (dict(ref=np.array([0.5, 0.6, -0.1])), "ref"),
    (dict(ref=np.full(3, 0.3)), "ref"),
    (dict(reward=np.zeros(8)), "reward"),
    (dict(reward=np.array([np.nan] + [0.0] * 8)), "reward"),
    (dict(vocab=2, length=17, reward=np.zeros(4), ref=np.full(2, 0.5)), "reward"),
])
def test_sequence_env_rejects_bad_construction(over, match):
    with pytest.raises(ValueError, match=match):
        seq.SequenceEnv(**_env_args(**over))


def _bad_ref(prompts, prefixes):
    return np.zeros((prompts.size, 3))     # not normalised


@pytest.mark.parametrize("call,match", [
    (lambda e: e.reward_of(np.array([1]), np.array([[0, 0]])), "prompts"),
    (lambda e: e.reward_of(np.array([0]), np.array([[0, 3]])), "tokens"),
    (lambda e: e.reward_of(np.array([0]), np.array([[0, -1]])), "tokens"),
    (lambda e: e.reward_of(np.array([0]), np.array([[0.0, 1.0]])), "tokens"),
    (lambda e: e.reward_of(np.array([0]), np.array([[0, 1, 2]])), "tokens"),
    (lambda e: e.reward_of(np.array([0, 0]), np.array([[0, 1]])), "tokens"),
    (lambda e: e.reward_of(np.array([[0]]), np.array([[0, 1]])), "prompts"),
    (lambda e: e.ref_next_logp(np.array([0]), np.array([[0, 1]])), "prefixes"),
    (lambda e: e.ref_logp(np.array([0]), np.array([[0, 5]])), "tokens"),
    (lambda e: seq.SequenceEnv(**_env_args(ref=_bad_ref)).ref_next_logp(
        np.array([0]), np.zeros((1, 0), dtype=int)), "normalised"),
    (lambda e: seq.SequenceEnv(**_env_args(reward=lambda x, y: np.zeros(2))).reward_of(
        np.array([0]), np.array([[0, 0]])), "shape"),
    (lambda e: seq.enumerate_sequences(2, 17), "MAX_ENUMERABLE"),
    (lambda e: seq.tajwar_token_env(length=4, vocab=100).bandit, "MAX_ENUMERABLE"),
    (lambda e: seq.tajwar_token_env(width=0.0), "width"),
    (lambda e: seq.tajwar_token_env(peak=np.inf), "peak"),
    (lambda e: seq.combination_lock(vocab=3, length=2, secret=[0, 3]), "secret"),
    (lambda e: seq.combination_lock(vocab=3, length=2, secret=[0, 1, 2]), "secret"),
    (lambda e: seq.combination_lock(seed=-1), "seed"),
])
def test_sequence_env_queries_reject_bad_input(call, match):
    env = seq.SequenceEnv(**_env_args())
    with pytest.raises(ValueError, match=match):
        call(env)


# ---------------------------------------------------------------- environments


def test_bandit_ref_is_the_product_of_per_token_refs():
    rng = np.random.default_rng(0)
    table = rng.dirichlet(np.ones(3), size=(2, 3))              # (prompts, positions, vocab)
    env = seq.SequenceEnv(3, 3, 2, "iid", reward=lambda x, y: 1.0 * y[:, 0], ref=table,
                          prompt_weights=[0.3, 0.7])
    bandit, toks = env.bandit, env.tokens
    np.testing.assert_allclose(bandit.ref.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    for x in range(2):
        prod = table[x, 0, toks[:, 0]] * table[x, 1, toks[:, 1]] * table[x, 2, toks[:, 2]]
        np.testing.assert_allclose(bandit.ref[x], prod, rtol=1e-13)
    np.testing.assert_array_equal(bandit.context_weights, [0.3, 0.7])
    np.testing.assert_array_equal(bandit.reward[1], toks[:, 0])
    assert env.bandit is bandit                                  # cached


def test_autoregressive_reference_agrees_across_queries():
    env = _random_env(n_prompts=2, vocab=3, length=3, seed=4)
    ref_fn = env.ref
    prompts = np.repeat([0, 1], 27)
    toks = np.tile(env.tokens, (2, 1))
    by_hand = sum(ref_fn(prompts, toks[:, :t])[np.arange(54), toks[:, t]] for t in range(3))
    np.testing.assert_allclose(env.ref_logp(prompts, toks), by_hand, rtol=1e-14)
    np.testing.assert_allclose(np.log(env.bandit.ref).ravel(), by_hand, rtol=1e-12)
    np.testing.assert_allclose(env.bandit.ref.sum(axis=1), 1.0, atol=1e-14)


def test_table_ref_next_logp_and_ref_logp_are_consistent():
    env = seq.tajwar_token_env(length=3, vocab=5, n_prompts=2)
    prompts, toks = np.array([0, 1, 1]), np.array([[0, 4, 2], [3, 3, 3], [1, 0, 4]])
    nxt = [env.ref_next_logp(prompts, toks[:, :t]) for t in range(3)]
    assert all(n.shape == (3, 5) for n in nxt)
    np.testing.assert_allclose(np.exp(nxt[0]).sum(axis=1), 1.0, atol=1e-14)
    expected = sum(nxt[t][np.arange(3), toks[:, t]] for t in range(3))
    np.testing.assert_allclose(env.ref_logp(prompts, toks), expected, rtol=1e-14)


@pytest.mark.parametrize("peak", [70.0, 20.0])
def test_tajwar_token_env_with_one_token_is_the_tajwar_bandit(peak):
    env = seq.tajwar_token_env(length=1, vocab=100, peak=peak)
    core = cs.tajwar_bandit(peak=peak)
    np.testing.assert_allclose(env.bandit.reward[0], core.reward, rtol=1e-15)
    np.testing.assert_allclose(env.bandit.ref[0], core.ref, rtol=1e-13)


def test_tajwar_token_env_reward_is_the_mean_bump_on_the_scaled_vocabulary():
    env = seq.tajwar_token_env(length=3, vocab=10, peak=70, width=10)   # centre 7, width 1
    r = env.reward_of(np.array([0, 0]), np.array([[7, 7, 7], [7, 2, 7]]))
    np.testing.assert_allclose(r, [1.0, (2 + np.exp(-25.0)) / 3], rtol=1e-15)
    np.testing.assert_allclose(np.exp(env.ref_next_logp(np.array([0]), np.array([[1, 2]])))[0],
                               cs.tajwar_reference(10), rtol=1e-15)
    assert env.name == "tajwar-token-peak70-V10-L3"


def test_combination_lock_secret_is_seeded_and_rewarded():
    a, b = seq.combination_lock(vocab=4, length=6, seed=3), seq.combination_lock(4, 6, seed=3)
    np.testing.assert_array_equal(a.secret, b.secret)
    np.testing.assert_array_equal(a.secret, np.random.default_rng(3).integers(0, 4, size=6))
    assert not np.array_equal(seq.combination_lock(4, 6, seed=4).secret, a.secret)
    bandit = a.bandit
    idx = int(a.secret @ 4 ** np.arange(5, -1, -1))
    assert bandit.reward.sum() == 1.0 and bandit.reward[0, idx] == 1.0
    np.testing.assert_allclose(bandit.ref, 4.0 ** -6, rtol=1e-14)
    lock = seq.combination_lock(vocab=3, length=2, secret=[2, 1])
    assert lock.secret.tolist() == [2, 1] and lock.bandit.reward[0].tolist().index(1.0) == 7
    with pytest.raises(ValueError):
        lock.secret[0] = 0                                        # read-only


# ---------------------------------------------------------------- the autoregressive policy


def _torch_logp(env, theta_t):
    """log pi (X, N) by gathering each position's log-softmax through the (N, L) node array."""
    nodes = torch.from_numpy(seq.prefix_nodes(env.vocab, env.length))
    toks = torch.from_numpy(np.array(env.tokens))       # a writable copy
    lsm = torch.log_softmax(theta_t.reshape(env.n_prompts, -1, env.vocab), dim=-1)
    return lsm[:, nodes, toks].sum(dim=-1)


def test_policy_starts_at_ref_and_logp_is_normalised():
    env = _random_env(n_prompts=2, vocab=3, length=3, seed=1)
    rng = np.random.default_rng(0)
    ref_pol = seq.AutoregressiveTabular(env)
    np.testing.assert_allclose(ref_pol.probs(env.bandit, ref_pol.init_params(env.bandit, rng)),
                               env.bandit.ref, rtol=1e-12)
    uni = seq.AutoregressiveTabular(env, init="uniform")
    np.testing.assert_allclose(uni.probs(env, uni.init_params(env, rng)), 1 / 27, rtol=1e-13)
    pol = seq.AutoregressiveTabular(env, init="random", init_scale=2.0)
    theta = pol.init_params(env.bandit, np.random.default_rng(7))
    assert theta.shape == (pol.n_params,) == (2 * 13 * 3,)
    np.testing.assert_array_equal(theta, pol.init_params(env.bandit, np.random.default_rng(7)))
    lp = pol.logp(env.bandit, theta)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(lp, _torch_logp(env, torch.tensor(theta)).numpy(), rtol=1e-13)
    node = pol.node_logp(theta)
    np.testing.assert_allclose(np.exp(node).sum(axis=-1), 1.0, atol=1e-14)


@pytest.mark.parametrize("n_prompts,vocab,length", [(2, 3, 2), (1, 2, 4)])
def test_policy_represents_every_full_support_distribution(n_prompts, vocab, length):
    """Chain rule: the conditionals of any sequence distribution reproduce it exactly."""
    env = _random_env(n_prompts=n_prompts, vocab=vocab, length=length, seed=2)
    target = np.random.default_rng(3).dirichlet(np.ones(vocab ** length), size=n_prompts)
    opt = cs.optimal_policy(env.bandit, beta=0.3)
    for probs in (target, opt):
        pol = seq.AutoregressiveTabular(env, init=probs)
        lp = pol.logp(env.bandit, pol.init_params(env.bandit, np.random.default_rng(0)))
        np.testing.assert_allclose(lp, np.log(probs), rtol=0, atol=1e-12)


def test_policy_rejects_bad_input():
    env = _random_env(vocab=3, length=2)
    pol = seq.AutoregressiveTabular(env)
    theta = pol.init_params(env, np.random.default_rng(0))
    with pytest.raises(ValueError, match="env"):
        pol.logp(cs.Bandit(reward=np.zeros(9), ref=np.full(9, 1 / 9)), theta)
    with pytest.raises(ValueError, match="env"):
        pol.logp(_random_env(vocab=2, length=3), theta)
    with pytest.raises(ValueError, match="params"):
        pol.logp(env, theta[:-1])
    with pytest.raises(ValueError, match="params"):
        pol.logp(env, np.where(np.arange(theta.size) == 3, np.nan, theta))
    with pytest.raises(ValueError, match="grad_logp"):
        pol.grad(env, theta, np.zeros((2, 8)))
    with pytest.raises(ValueError, match="init"):
        seq.AutoregressiveTabular(env, init=np.full((2, 9), 0.2))
    with pytest.raises(ValueError, match="init"):
        seq.AutoregressiveTabular(env, init="zeros")
    with pytest.raises(ValueError, match="enumerable"):
        seq.AutoregressiveTabular(seq.tajwar_token_env())


def _objectives(env):
    data = cs.offline_pairs(env.bandit, env.bandit.ref, labels="bradley_terry")
    return [(cs.objective("rlhf", beta=0.7), None), (cs.objective("sigmoid", beta=0.7), data),
            (cs.objective("online_dpo", beta=0.7), None), (cs.objective("ipo", beta=0.7), data)]


@pytest.mark.parametrize("n_prompts,vocab,length", [(2, 3, 2), (1, 2, 3)])
def test_backprop_matches_torch_autograd(n_prompts, vocab, length):
    env = _random_env(n_prompts=n_prompts, vocab=vocab, length=length, seed=5)
    pol = seq.AutoregressiveTabular(env, init="random")
    theta = pol.init_params(env.bandit, np.random.default_rng(1))
    lp = pol.logp(env.bandit, theta)
    for obj, data in _objectives(env):
        _, g = obj.loss_and_grad(env.bandit, lp, data)
        ours = pol.grad(env.bandit, theta, g)
        theta_t = torch.tensor(theta, requires_grad=True)
        (torch.from_numpy(np.asarray(g)) * _torch_logp(env, theta_t)).sum().backward()
        assert _rel_err(ours, theta_t.grad.numpy()) <= 1e-10, obj.name


def test_population_losses_match_torch_end_to_end():
    """Loss value and gradient of RLHF and offline DPO, all in torch from theta."""
    env = _random_env(n_prompts=2, vocab=3, length=2, seed=6)
    bandit = env.bandit
    pol = seq.AutoregressiveTabular(env, init="random")
    theta = pol.init_params(bandit, np.random.default_rng(2))
    lp = pol.logp(bandit, theta)
    rlp, reward = torch.tensor(bandit.ref_logp2d), torch.tensor(bandit.reward2d)
    rho = torch.tensor(bandit.context_weights)[:, None]
    for obj, data in _objectives(env)[:2]:
        loss, g = obj.loss_and_grad(bandit, lp, data)
        theta_t = torch.tensor(theta, requires_grad=True)
        lp_t = _torch_logp(env, theta_t)
        if obj.name == "rlhf":
            pi = lp_t.exp()
            loss_t = (rho * pi * (0.7 * (lp_t - rlp) - reward)).sum()
        else:
            loss_t = population_loss("sigmoid", lp_t, rlp, data.weights, beta=0.7)
        loss_t.backward()
        assert loss == pytest.approx(loss_t.item(), rel=1e-12)
        assert _rel_err(pol.grad(bandit, theta, g), theta_t.grad.numpy()) <= 1e-10, obj.name


def test_backprop_matches_finite_differences():
    env = _random_env(n_prompts=2, vocab=3, length=2, seed=8)
    bandit = env.bandit
    pol = seq.AutoregressiveTabular(env, init="random")
    theta = pol.init_params(bandit, np.random.default_rng(3))
    lp0 = pol.logp(bandit, theta)
    h = 1e-5
    for obj, data in _objectives(env):
        _, g = obj.loss_and_grad(bandit, lp0, data)
        if obj.online:      # semi-gradient: differentiate the sampler-frozen surrogate sum g log pi
            def f(th, g=g):
                return float((g * pol.logp(bandit, th)).sum())
        else:
            def f(th, obj=obj, data=data):
                return obj.loss_and_grad(bandit, pol.logp(bandit, th), data)[0]
        fd = np.empty_like(theta)
        for i in range(theta.size):
            e = np.zeros_like(theta)
            e[i] = h
            fd[i] = (-f(theta + 2 * e) + 8 * f(theta + e) - 8 * f(theta - e)
                     + f(theta - 2 * e)) / (12 * h)
        assert _rel_err(pol.grad(bandit, theta, g), fd) <= 1e-7, obj.name


def test_reference_zeros_stay_zero_and_are_handled_exactly():
    """A token the reference excludes has logit -inf: never reached, gradients stay finite."""
    env = seq.SequenceEnv(3, 2, 1, "partial", reward=np.arange(9.0), ref=np.array([0.5, 0.5, 0.0]))
    pol = seq.AutoregressiveTabular(env)
    theta = pol.init_params(env, np.random.default_rng(0))
    assert np.isneginf(theta).sum() == 4                          # token 2 at each of 4 nodes
    obj = cs.objective("rlhf", beta=0.5)
    _, g = obj.loss_and_grad(env.bandit, pol.logp(env.bandit, theta))
    grad = pol.grad(env.bandit, theta, g)
    assert np.isfinite(grad).all()
    # finite, and right: 0 on the excluded tokens, central differences on the others
    finite = np.isfinite(theta)
    assert (grad[~finite] == 0).all()
    theta = theta + np.where(finite, np.random.default_rng(1).normal(size=theta.shape), 0.0)
    _, g = obj.loss_and_grad(env.bandit, pol.logp(env.bandit, theta))
    grad = pol.grad(env.bandit, theta, g)
    h = 1e-6
    for i in np.flatnonzero(finite):
        e = np.zeros_like(theta)
        e[i] = h
        fd = (obj.loss_and_grad(env.bandit, pol.logp(env.bandit, theta + e))[0]
              - obj.loss_and_grad(env.bandit, pol.logp(env.bandit, theta - e))[0]) / (2 * h)
        assert fd == pytest.approx(grad[i], rel=1e-6, abs=1e-9 * np.abs(grad).max())
    run = cs.train(env.bandit, cs.objective("rlhf", beta=0.5), steps=1500, lr=0.1, policy=pol)
    opt = cs.optimal_policy(env.bandit, 0.5)
    assert (run.policy[opt == 0] == 0).all()
    assert np.abs(run.policy - opt).sum() / 2 < 1e-6


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("optimizer,lr,steps", [("adam", 0.1, 1500), ("gd", 3.0, 3000)])
def test_rlhf_training_converges_to_the_optimal_policy(optimizer, lr, steps):
    env = seq.tajwar_token_env(length=2, vocab=3, n_prompts=2)
    pol = seq.AutoregressiveTabular(env)
    run = cs.train(env.bandit, cs.objective("rlhf", beta=0.5), steps=steps, lr=lr,
                   optimizer=optimizer, policy=pol)
    opt = cs.optimal_policy(env.bandit, 0.5)
    assert run.history["tv_to_opt"].iloc[0] > 0.1
    assert np.abs(run.policy - opt).sum(axis=1).max() / 2 < 1e-6
    assert run.history["tv_to_opt"].iloc[-1] < 1e-6
    np.testing.assert_allclose(run.policy, np.exp(pol.logp(env.bandit, run.params)), rtol=1e-15)


def test_offline_dpo_training_decreases_the_loss():
    env = seq.tajwar_token_env(length=3, vocab=3, peak=20)
    data = cs.offline_pairs(env.bandit, env.bandit.ref, labels="deterministic")
    run = cs.train(env.bandit, cs.objective("sigmoid", beta=0.5), data, steps=200, lr=0.05,
                   policy=seq.AutoregressiveTabular(env))
    loss = run.history["loss"].to_numpy()
    assert loss[-1] < loss[0] - 0.01
    assert run.history["reward"].iloc[-1] > run.history["reward"].iloc[0]
    assert run.snapshots.shape == (len(run.history), 1, 27)


def test_generic_path_refuses_npg_and_train_many():
    env = seq.combination_lock(vocab=2, length=2)
    pol = seq.AutoregressiveTabular(env)
    with pytest.raises(ValueError, match="npg"):
        cs.train(env.bandit, "rlhf", steps=2, lr=0.1, optimizer="npg", policy=pol)
    with pytest.raises(ValueError, match="train_many"):
        cs.train_many(env.bandit, "rlhf", steps=2, lr=0.1, policy=pol)


class _GenericTabular(cs.TabularSoftmax):
    """TabularSoftmax hidden from the engine: trained by the numpy loop with engine arithmetic."""

    kind = None

    def logp(self, env, params):
        return env.like_ref(_engine.policy_logp(_engine.TABULAR, np.asarray(params), np.zeros(
            (env.n_contexts, env.n_responses, 0)), np.zeros(env.ref2d.shape), env.n_contexts,
            env.n_responses))

    def grad(self, env, params, grad_logp):
        return _engine.policy_backprop(_engine.TABULAR, np.zeros((1, 1, 0)),
                                       env.as2d(self.logp(env, params), "lp"),
                                       env.as2d(grad_logp, "grad_logp"))


@pytest.mark.parametrize("name,optimizer,lr", [("rlhf", "adam", 0.05), ("online_dpo", "gd", 1.0),
                                               ("sigmoid", "adam", 0.05),
                                               ("iterative_dpo", "adam", 0.05)])
def test_generic_loop_reproduces_the_engine_loop(name, optimizer, lr):
    """Same updates, refreshes (iterative DPO: new pairs and a fresh Adam), records and losses."""
    env = cs.random_bandit(6, n_contexts=2, seed=1)
    data = cs.offline_pairs(env, env.ref)
    params = dict(beta=0.5) if name != "iterative_dpo" else dict(beta=0.5, n=3,
                                                                  steps_per_iteration=7)
    record = list(range(0, 28, 3)) + [7, 14, 21, 28]
    kw = dict(steps=28, lr=lr, optimizer=optimizer, record=record)
    obj = cs.objective(name, **params)
    data = data if obj.needs_data else None
    ref_run = cs.train(env, obj, data, policy=cs.TabularSoftmax(), **kw)
    run = cs.train(env, obj, data, policy=_GenericTabular(), **kw)
    np.testing.assert_allclose(run.params, ref_run.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run.snapshots, ref_run.snapshots, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(run.history["loss"], ref_run.history["loss"], rtol=1e-10)
    assert run.history.columns.tolist() == ref_run.history.columns.tolist()


def test_generic_loop_reports_divergence():
    class _Exploding(_GenericTabular):
        def grad(self, env, params, grad_logp):
            return np.full(np.asarray(params).shape, np.nan)

    env = cs.random_bandit(4, seed=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        cs.train(env, "rlhf", steps=5, lr=0.1, optimizer="gd", policy=_Exploding())


def test_module_docstring_examples_are_true():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(seq, "coverage_sim.sequences") if t.examples]
    assert sum(len(t.examples) for t in tests) >= 8
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
