"""Tests for coverage_sim.torch_backend: devices, exact mode, sampled mode and their agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coverage_sim as cs
from coverage_sim.losses import population_loss
from coverage_sim.sequences import tajwar_token_env
from coverage_sim.torch_backend import (BestOfNLoss, PairwiseLoss, ReinforceLoss, SampledLoss,
                                        SequenceBatch, TorchRun, default_device, draw_batch,
                                        exact_backward, sampled_backward, sampled_loss, train_exact,
                                        train_sampled)
from coverage_sim.transformer import (CausalTransformer, TransformerConfig, sample,
                                      sequence_logp_table)

SMALL = dict(n_layer=1, n_head=2, n_embd=8)
BETA = 0.5


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def env():
    """Two prompts, 3 tokens, length 2: 9 responses per prompt, Tajwar's reference and reward."""
    return tajwar_token_env(length=2, vocab=3, n_prompts=2)


@pytest.fixture(scope="module")
def data(env):
    return cs.offline_pairs(env.bandit, env.bandit.ref, labels="bradley_terry")


def _model(env, seed=0, scale=0.5, **sizes):
    """A small model pushed away from its near-uniform initialisation (and from pi_ref)."""
    model = CausalTransformer(TransformerConfig(env.vocab, env.n_prompts, env.length,
                                                **(sizes or SMALL)), seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    return model


def _flat_grad(model) -> np.ndarray:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy()


# ------------------------------------------------------------------------------------------------
# devices

def test_default_device_cpu_and_override():
    assert default_device() == torch.device("cpu")      # no CUDA on the test machine
    assert default_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        default_device("not-a-device")
    # asking for CUDA where there is none is refused by name, not left to torch's assertion
    with pytest.raises(ValueError, match=r"device.*CUDA"):
        default_device(torch.device("cuda:1"))


def test_default_device_passes_cuda_through_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device(torch.device("cuda:1")) == torch.device("cuda:1")
    assert default_device("cuda") == torch.device("cuda")


def test_default_device_picks_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")


def test_everything_lives_on_default_device(env):
    dev = default_device()
    run = train_sampled(env, "sigmoid", model=_model(env), steps=2, lr=1e-3, batch_size=4,
                        record=[0, 2])
    assert all(p.device == dev for p in run.model.parameters())
    assert run.config["device"] == str(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    batch = draw_batch(run.model, env, sampled_loss(cs.objective("online_dpo")), 4, gen)
    for t in (batch.prompts, batch.tokens, batch.reward, batch.ref_logp):
        assert t.device == dev
    assert sample(run.model, torch.zeros(3, dtype=torch.long), gen).device == dev
    assert sequence_logp_table(run.model, env.tokens).device == dev


# ------------------------------------------------------------------------------------------------
# exact mode

def _autograd_grad(model, env, loss_fn):
    model.zero_grad()
    logp = sequence_logp_table(model, env.tokens)
    rlp = torch.from_numpy(env.bandit.ref_logp2d.copy())
    loss = loss_fn(logp, rlp)
    loss.backward()
    return float(loss.detach()), _flat_grad(model)


def _rlhf_torch(env, beta):
    rho = torch.from_numpy(env.prompt_weights.copy())[:, None]
    r = torch.from_numpy(env.bandit.reward2d.copy())
    return lambda lp, rlp: -(rho * lp.exp() * (r - beta * (lp - rlp))).sum()


def _online_torch(env, model, beta):
    with torch.no_grad():
        pi = sequence_logp_table(model, env.tokens).exp().numpy()
    W = cs.policy_pairs(env.bandit, pi, labels="bradley_terry").weights
    return lambda lp, rlp: population_loss("sigmoid", lp, rlp, W, beta=beta)


@pytest.mark.parametrize("case", ["sigmoid", "ipo", "rlhf", "online_dpo", "hypo"])
def test_exact_gradient_equals_autograd(env, data, case):
    model = _model(env)
    if case == "rlhf":
        obj, d, fn = cs.objective("rlhf", beta=BETA), None, _rlhf_torch(env, BETA)
    elif case == "online_dpo":
        obj, d, fn = cs.objective("online_dpo", beta=BETA), None, _online_torch(env, model, BETA)
    elif case == "hypo":
        lam = 0.3
        rho = torch.from_numpy(env.prompt_weights.copy())[:, None]
        obj, d = cs.objective("hypo", beta=BETA, lam=lam), data

        def fn(lp, rlp):
            kl = (rho * lp.exp() * (lp - rlp)).sum()
            return population_loss("sigmoid", lp, rlp, data.weights, beta=BETA) + lam * kl
    else:
        obj, d = cs.objective(case, beta=BETA), data

        def fn(lp, rlp):
            return population_loss(case, lp, rlp, data.weights, beta=BETA)
    ref_loss, ref_grad = _autograd_grad(model, env, fn)
    model.zero_grad()
    loss = exact_backward(model, env, obj, d)
    grad = _flat_grad(model)
    assert abs(loss - ref_loss) <= 1e-12 * max(1.0, abs(ref_loss))
    assert np.abs(grad - ref_grad).max() <= 1e-10 * np.abs(ref_grad).max()
    assert np.abs(ref_grad).max() > 1e-3                     # a real gradient, not zeros
    # the chunked pull-back (two passes) gives the same gradient
    model.zero_grad()
    exact_backward(model, env, obj, d, chunk_size=4)
    assert np.abs(_flat_grad(model) - grad).max() <= 1e-13 * np.abs(grad).max()


def test_exact_rlhf_converges_to_optimum(env):
    # A transformer can represent any policy over 2 positions; exact RLHF must reach pi*_beta.
    model = CausalTransformer(TransformerConfig(3, 2, 2, n_layer=1, n_head=2, n_embd=16), seed=0)
    run = train_exact(env, cs.objective("rlhf", beta=BETA), model=model, steps=400, lr=1e-2,
                      record=8)
    assert isinstance(run, TorchRun)
    h = run.history
    assert h["tv_to_opt"].iloc[0] > 0.05
    assert h["tv_to_opt"].iloc[-1] < 1e-3                  # stated tolerance
    opt = cs.optimal_policy(env.bandit, BETA)
    assert 0.5 * np.abs(run.policy - opt).sum(axis=1).max() < 1e-3
    assert h["step"].tolist()[-1] == 400
    for col in ("step", "loss", "reward", "kl", "kl_ref", "win_rate", "entropy", "kl_to_opt"):
        assert col in h.columns
    assert run.config["mode"] == "exact" and run.config["seed"] == 0
    assert {"torch", "numpy", "python"} <= set(run.config["versions"])


def test_large_n_metrics_match_policy_metrics(env, monkeypatch):
    # Above _PAIRWISE_MAX_K responses the metrics avoid (X, N, N) arrays (win rate summed over
    # distinct rewards); force that path on the small env and compare with policy_metrics.
    import coverage_sim.torch_backend as tb

    with torch.no_grad():
        lp = sequence_logp_table(_model(env), env.tokens).numpy()
    direct = tb._exact_metrics(env, lp, BETA, None, None, None)
    monkeypatch.setattr(tb, "_PAIRWISE_MAX_K", 4)
    grouped = tb._exact_metrics(env, lp, BETA, None, None, None)
    assert set(grouped) == set(direct)
    for key in direct:
        assert grouped[key] == pytest.approx(direct[key], rel=1e-12, abs=1e-14)
    monkeypatch.setattr(tb, "_MAX_REWARD_VALUES", 5)    # 6 distinct rewards: too many
    assert np.isnan(tb._exact_metrics(env, lp, BETA, None, None, None)["win_rate"])


def test_exact_sgd_decreases_loss_and_is_deterministic(env, data):
    runs = [train_exact(env, "sigmoid", data, model=_model(env), steps=20, lr=0.5,
                        optimizer="sgd", record=[0, 20]) for _ in range(2)]
    h = runs[0].history
    assert h["loss"].iloc[1] < h["loss"].iloc[0]
    assert h.equals(runs[1].history)


# ------------------------------------------------------------------------------------------------
# sampled mode: unbiasedness against exact mode

M_ESTIMATES, BATCH, Z = 200, 64, 5.0


def _sampled_grads(model, env, loss, seed=0, behavior=None):
    gen = torch.Generator().manual_seed(seed)
    out = np.empty((M_ESTIMATES, sum(p.numel() for p in model.parameters())))
    for m in range(M_ESTIMATES):
        batch = draw_batch(model, env, loss, BATCH, gen, behavior=behavior)
        model.zero_grad()
        sampled_backward(model, loss, batch)
        out[m] = _flat_grad(model)
    return out


def _max_z(samples: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """Largest |z| over coordinates and over 16 random projections of the mean gradient.

    Some coordinates (attention key biases) have an exactly-zero gradient in exact arithmetic;
    their rounding noise is absorbed by an absolute floor of 1e-12 max|exact|.
    """
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    floor = 1e-12 * np.abs(exact).max()
    z_coord = np.max(np.maximum(np.abs(mean - exact) - floor, 0.0) / np.maximum(se, floor))
    dirs = np.random.default_rng(0).standard_normal((16, exact.size))
    proj = samples @ dirs.T
    z_proj = np.max(np.abs(proj.mean(axis=0) - dirs @ exact)
                    / (proj.std(axis=0, ddof=1) / np.sqrt(len(samples))))
    return float(z_coord), float(z_proj)


UNBIASED_CASES = {
    # name: (objective, needs data, sampled loss)
    "offline_dpo": (cs.objective("sigmoid", beta=BETA), True,
                    sampled_loss(cs.objective("sigmoid", beta=BETA))),
    "online_dpo": (cs.objective("online_dpo", beta=BETA), False,
                   sampled_loss(cs.objective("online_dpo", beta=BETA))),
    "rlhf": (cs.objective("rlhf", beta=BETA), False,
             sampled_loss(cs.objective("rlhf", beta=BETA))),
    "best_of_n": (cs.objective("best_of_n", n=4), True, BestOfNLoss(4)),
}


@pytest.mark.parametrize("name", list(UNBIASED_CASES))
def test_sampled_gradient_is_unbiased(env, data, name):
    # M = 200 independent minibatch gradients (64 groups each) at fixed parameters (the online
    # sampler is the model itself, held fixed); every coordinate of their mean must lie within
    # Z = 5 standard errors of the exact-mode gradient (family-wise false alarm < 1e-3 over ~1000
    # coordinates under normality), and 16 random projections within 5 as well.
    obj, needs_data, loss = UNBIASED_CASES[name]
    model = _model(env)
    model.zero_grad()
    exact_backward(model, env, obj, data if needs_data else None)
    exact = _flat_grad(model)
    z_coord, z_proj = _max_z(_sampled_grads(model, env, loss), exact)
    assert z_coord < Z and z_proj < Z


@pytest.mark.parametrize("name,wrong", [
    ("online_dpo", PairwiseLoss("sigmoid", dict(beta=BETA))),      # pairs from pi_ref, not pi_t
    ("rlhf", ReinforceLoss(BETA / 2)),                               # wrong KL strength
])
def test_unbiasedness_check_has_power(env, data, name, wrong):
    # The same statistic rejects a biased estimator: the test above can fail.
    obj = UNBIASED_CASES[name][0]
    model = _model(env)
    model.zero_grad()
    exact_backward(model, env, obj)
    z_coord, z_proj = _max_z(_sampled_grads(model, env, wrong), _flat_grad(model))
    assert z_coord > 3 * Z and z_proj > 3 * Z


# ------------------------------------------------------------------------------------------------
# sampled losses on hand-made batches

def _hand_batch():
    reward = torch.tensor([[0.2, 0.9, 0.5], [0.4, 0.4, 0.1]], dtype=torch.float64)
    return SequenceBatch(prompts=torch.tensor([0, 1]),
                         tokens=torch.zeros(2, 3, 2, dtype=torch.long), reward=reward,
                         ref_logp=torch.full((2, 3), -2.0, dtype=torch.float64))


def test_best_of_n_loss_formula():
    batch = _hand_batch()
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]], dtype=torch.float64)
    assert float(BestOfNLoss(3)(logp, batch)) == pytest.approx((2.0 + 0.5) / 2)
    # best: index 1 and (first of the tie) 0; worst: 0 and 2
    pushed = BestOfNLoss(3, push_down=0.5)(logp, batch)
    assert float(pushed) == pytest.approx((2.0 - 0.5 + 0.5 - 1.25) / 2)


def test_reinforce_loss_value_and_gradient():
    batch = _hand_batch()
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]], dtype=torch.float64,
                        requires_grad=True)
    loss = ReinforceLoss(0.5, group_size=3)
    out = loss(logp, batch)
    a = batch.reward - 0.5 * (logp.detach() - batch.ref_logp)
    assert float(out.detach()) == pytest.approx(-float(a.mean()))
    out.backward()
    adv = a - (a.sum(1, keepdim=True) - a) / 2
    assert torch.allclose(logp.grad, -adv / 6, atol=1e-15)


def test_pairwise_labels(env):
    model = _model(env)
    gen = torch.Generator().manual_seed(0)
    det = PairwiseLoss("sigmoid", labels="deterministic")
    batch = draw_batch(model, env, det, 500, gen)
    assert (batch.reward[:, 0] >= batch.reward[:, 1]).all()
    assert (batch.reward[:, 0] > batch.reward[:, 1]).any()
    # Bradley-Terry: the fraction of higher-reward winners matches E sigma(|dr|) (4.5 SE).
    bt = draw_batch(model, env, PairwiseLoss("sigmoid"), 4000, gen)
    diff = (bt.reward[:, 0] - bt.reward[:, 1]).numpy()
    keep = diff != 0
    frac = np.mean(diff[keep] > 0)
    expected = np.mean(1 / (1 + np.exp(-np.abs(diff[keep]))))
    assert abs(frac - expected) < 4.5 * np.sqrt(0.25 / keep.sum())
    # A behaviour callable replaces pi_ref as the offline sampler.
    fixed = draw_batch(model, env, det, 5, gen,
                       behavior=lambda p, g: torch.ones(len(p), 2, dtype=torch.long))
    assert (fixed.tokens == 1).all()


# ------------------------------------------------------------------------------------------------
# sampled training

def test_train_sampled_rlhf_approaches_optimum(env):
    model = CausalTransformer(TransformerConfig(3, 2, 2, n_layer=1, n_head=2, n_embd=16), seed=0)
    run = train_sampled(env, cs.objective("rlhf", beta=BETA), model=model, steps=150, lr=1e-2,
                        batch_size=32, record=[0, 150])
    tv = run.history["tv_to_opt"].to_numpy()
    assert tv[-1] < 0.3 * tv[0]
    assert run.history["samples"].tolist() == [0, 150 * 32 * 2]
    assert run.policy.shape == (2, 9)


def test_train_sampled_deterministic_and_seeded(env):
    def go(seed):
        return train_sampled(env, "online_dpo", model=_model(env), steps=6, lr=1e-2,
                             batch_size=8, seed=seed, record=3).history
    a, b, c = go(0), go(0), go(1)
    assert a.equals(b)
    assert not a.equals(c)


def test_train_sampled_fixed_offline_dataset_and_reuse(env):
    run = train_sampled(env, "ipo", model=_model(env), steps=4, lr=1e-2, batch_size=8,
                        n_data=16, record=[0, 4])
    assert run.history["samples"].tolist() == [32, 32]
    assert run.config["n_data"] == 16
    run = train_sampled(env, "sigmoid", model=_model(env), steps=5, lr=1e-2, batch_size=8,
                        reuse=2, record=list(range(6)))
    # draws at steps 0, 2, 4
    assert run.history["samples"].tolist() == [0, 16, 16, 32, 32, 48]


def test_monte_carlo_metrics_agree_with_exact(env):
    """The same (perturbed) model at step 0: Monte-Carlo estimates vs exact values.

    Tolerances come from the exact sampling distribution, not from the estimates' own error bars:
    the reward and KL estimates are means of n = 4000 i.i.d. draws (x, y) ~ rho x pi, so their
    standard deviations are sqrt(Var(r) / n) and sqrt(Var(log pi/pi_ref) / n), computed exactly
    from pi. The reported standard errors are then checked against the same formula.
    """
    n = 4000
    exact_run = train_sampled(env, "rlhf", model=_model(env), steps=0, lr=1e-3,
                              exact_metrics=True)
    exact = exact_run.history.iloc[0]
    mc = train_sampled(env, "rlhf", model=_model(env), steps=0, lr=1e-3, exact_metrics=False,
                       n_eval=n).history.iloc[0]
    bandit = env.bandit
    joint = bandit.context_weights[:, None] * np.asarray(exact_run.policy).reshape(
        bandit.n_contexts, bandit.n_responses)
    assert joint.sum() == pytest.approx(1.0, abs=1e-12)
    log_ratio = np.log(joint / bandit.context_weights[:, None]) - bandit.ref_logp2d

    def sd_of_mean(values):
        mean = (joint * values).sum()
        return np.sqrt((joint * (values - mean) ** 2).sum() / n)

    sd_reward, sd_kl = sd_of_mean(bandit.reward2d), sd_of_mean(log_ratio)
    assert (joint * bandit.reward2d).sum() == pytest.approx(exact["reward"], rel=1e-9)
    assert abs(mc["reward"] - exact["reward"]) < 4.5 * sd_reward
    assert abs(mc["kl"] - exact["kl"]) < 4.5 * sd_kl
    assert abs(mc["win_rate"] - exact["win_rate"]) < 4.5 * 0.5 / np.sqrt(n)
    # the reported standard errors estimate those standard deviations (relative error of a sample
    # standard deviation from n = 4000 draws: about 1/sqrt(2n) ~ 1%, times the kurtosis; 15% is
    # generous yet fails a standard error off by a factor)
    assert mc["reward_se"] == pytest.approx(sd_reward, rel=0.15)
    assert mc["kl_se"] == pytest.approx(sd_kl, rel=0.15)


def test_train_sampled_large_vocabulary_monte_carlo():
    big = tajwar_token_env(length=9, vocab=100)
    model = CausalTransformer(TransformerConfig(100, 1, 9, **SMALL), seed=0)
    run = train_sampled(big, BestOfNLoss(4, push_down=0.1), model=model, steps=2, lr=1e-3,
                        batch_size=4, n_eval=16, record=[0, 2])
    assert run.policy is None
    assert run.config["metrics"].startswith("monte_carlo")
    for col in ("reward", "kl", "win_rate", "entropy", "reward_se", "kl_se", "loss"):
        assert np.isfinite(run.history[col]).all()


def test_custom_sampled_loss_hook(env):
    class MeanLogp(SampledLoss):
        name, group_size, online = "mean_logp", 3, True

        def __call__(self, logp, batch):
            return -logp.mean()

    def top_mass(model, gen):
        return {"top_mass": float(sequence_logp_table(model, env.tokens).exp()[:, -1].mean())}

    run = train_sampled(env, MeanLogp(), model=_model(env), steps=3, lr=1e-2, batch_size=4,
                        record=[0, 3], extra_metrics=top_mass)
    assert run.objective.name == "mean_logp"
    assert run.history["top_mass"].iloc[-1] == pytest.approx(run.policy[:, -1].mean(), rel=1e-12)
    assert run.history["samples"].tolist() == [0, 3 * 4 * 3]


# ------------------------------------------------------------------------------------------------
# invalid inputs

def test_invalid_inputs(env, data):
    model = _model(env)
    big = tajwar_token_env(length=9, vocab=100)
    with pytest.raises(ValueError, match="env"):
        train_exact(env.bandit, "rlhf", steps=1, lr=0.1)
    with pytest.raises(ValueError, match="enumerable|2\\*\\*16"):
        train_exact(big, "rlhf", steps=1, lr=0.1)
    with pytest.raises(ValueError, match="iterative_dpo"):
        train_exact(env, "iterative_dpo", model=model, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="data"):
        train_exact(env, "sigmoid", model=model, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        train_exact(env, "rlhf", model=model, steps=1, lr=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        train_exact(env, "rlhf", model=model, steps=1, lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        train_exact(env, "rlhf", model=model, steps=-1, lr=0.1)
    with pytest.raises(ValueError, match="dtype"):
        train_exact(env, "rlhf", model=model, steps=1, lr=0.1, dtype=torch.float16)
    with pytest.raises(ValueError, match="does not match"):
        train_exact(tajwar_token_env(length=2, vocab=4), "rlhf", model=model, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="model"):
        train_exact(env, "rlhf", model=torch.nn.Linear(2, 2), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="objective"):
        train_exact(env, "no_such_objective", model=model, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="hypo"):
        train_sampled(env, "hypo", model=model, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="proxy reward"):
        sampled_loss(cs.objective("rlhf", reward=np.zeros((2, 9))))
    for obj in (cs.objective("rpo"), cs.objective("sigmoid", use_weighting=True),
                cs.objective("sigmoid", sync_ref_model=True)):
        with pytest.raises(ValueError, match="no sampled torch form"):
            sampled_loss(obj)
    for name in ("kto", "nash_md", "xpo"):
        with pytest.raises(ValueError, match="no sampled form"):
            sampled_loss(cs.objective(name))
    # the f-divergence reaches the sampled per-pair loss
    assert sampled_loss(cs.objective("ipo", f_divergence_type="js_divergence")).params[
        "f_divergence_type"] == "js_divergence"
    with pytest.raises(ValueError, match="online"):
        train_sampled(env, "online_dpo", model=model, steps=1, lr=0.1, n_data=8)
    with pytest.raises(ValueError, match="batch_size"):
        train_sampled(env, "sigmoid", model=model, steps=1, lr=0.1, n_data=8, batch_size=16)
    with pytest.raises(ValueError, match="exact_metrics"):
        train_sampled(big, "sigmoid", steps=1, lr=0.1, exact_metrics=True)
    with pytest.raises(ValueError, match="behavior"):
        train_sampled(env, "sigmoid", model=model, steps=1, lr=0.1, behavior="pi_ref")
    with pytest.raises(ValueError, match="extra_metrics"):
        train_sampled(env, "sigmoid", model=model, steps=1, lr=0.1, extra_metrics={})
    with pytest.raises(ValueError, match="labels"):
        train_sampled(env, "sigmoid", model=model, steps=1, lr=0.1, labels="majority")
    with pytest.raises(ValueError, match="label_noise"):
        PairwiseLoss("sigmoid", label_noise=0.7)
    with pytest.raises(ValueError, match="group_size"):
        ReinforceLoss(0.1, group_size=1)
    with pytest.raises(ValueError, match="baseline"):
        ReinforceLoss(0.1, baseline="mean")
    with pytest.raises(ValueError, match="n"):
        BestOfNLoss(1)
    with pytest.raises(ValueError, match="push_down"):
        BestOfNLoss(4, push_down=-1.0)
    with pytest.raises(ValueError, match="loss"):
        draw_batch(model, env, "sigmoid", 4, torch.Generator())
    with pytest.raises(ValueError, match="generator"):
        draw_batch(model, env, PairwiseLoss(), 4, None)
    with pytest.raises(ValueError, match="batch_size"):
        draw_batch(model, env, PairwiseLoss(), 0, torch.Generator())
    bad = draw_batch(model, env, PairwiseLoss(), 2, torch.Generator().manual_seed(0),
                     behavior=lambda p, g: torch.zeros(len(p), 2, dtype=torch.long))
    with pytest.raises(ValueError, match="behavior must return"):
        draw_batch(model, env, PairwiseLoss(), 2, torch.Generator(),
                   behavior=lambda p, g: torch.zeros(len(p), 3, dtype=torch.long))
    assert bad.tokens.shape == (2, 2, 2)


def test_docstring_examples():
    import doctest

    import coverage_sim.torch_backend as mod
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in doctest.DocTestFinder(exclude_empty=True).find(mod, mod.__name__):
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 5 and result.failed == 0
