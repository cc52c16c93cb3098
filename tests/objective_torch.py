"""The population objectives written out in torch: the autograd oracle of the gradient tests.

Shared by tests/test_objectives.py (engine gradients under both policy parameterisations) and
tests/test_gradients.py (``coverage_sim.gradient`` with respect to the logits). The loss is built
from each objective's definition -- ``losses.population_loss`` for the pairwise components and plain
torch for the log-likelihood, KL, reward, KTO and Nash-MD terms -- not from the engine's kernels;
what the engine holds fixed (online samplers, Nash-MD's y ~ pi and its mixture, WPO's weights, KTO's
z0) comes from ``lp_t`` detached.
"""

from __future__ import annotations

import numpy as np
import torch

from coverage_sim import _engine
from coverage_sim.losses import population_loss


def freeze_pairs(terms, lp, rlp):
    """Online terms with the pair weights of ``lp`` baked in: the semi-gradient is their gradient.

    Returns the term list with ``source`` set to OFFLINE and ``W`` the frozen pair weights.
    """
    t = list(terms)
    pi, probs, rho = np.exp(lp), t[4], t[13]
    if t[2] == _engine.ONLINE:
        t[3] = 2 * rho[:, None, None] * pi[:, :, None] * pi[:, None, :] * probs
    elif t[2] == _engine.ONLINE_REF:
        piref = np.exp(rlp)
        t[3] = rho[:, None, None] * (pi[:, :, None] * piref[:, None, :] * probs
                                     + piref[:, :, None] * pi[:, None, :]
                                     * np.swapaxes(1.0 - probs, 1, 2))
    t[2] = _engine.OFFLINE
    return t


def frozen_loss_torch(obj, env, terms, lp_t):
    """The population loss of ``obj`` in torch at ``lp_t`` (X, K) with the same (sampler-fixed)
    terms as the engine (``terms = obj.terms(env, data, lp)``)."""
    lp_np = lp_t.detach().numpy()
    (_codes, _prms, _source, weights, probs, _fast, _s, _d, _a, linear, kl_coef, reward_coef,
     reward, rho, _lw, _unpaired, uprm, U, M, _pg, _pg_prm) = freeze_pairs(terms, lp_np,
                                                                         env.ref_logp2d)
    rlp = torch.from_numpy(env.ref_logp2d)
    loss = torch.zeros((), dtype=torch.float64)
    for name, weight in zip(obj.loss_types, obj.loss_weights):
        loss = loss + weight * population_loss(
            name, lp_t, rlp, weights, use_weighting=bool(obj.params.get("use_weighting")),
            **obj.pair_params(name))
    if obj.unpaired:
        beta, w_des, w_und = uprm
        z0 = max(float((M * (lp_np - env.ref_logp2d)).sum()), 0.0) if obj.name == "kto" else 0.0
        u = lp_t - rlp
        U_t = torch.from_numpy(U)
        loss = loss + (w_des * U_t[0] * torch.sigmoid(-beta * (u - z0))
                       + w_und * U_t[1] * torch.sigmoid(beta * (u - z0))).sum()
    if obj.name == "nash_md":
        beta, m = obj.params["beta"], obj.params["mixture_coef"]
        mix = np.exp(m * env.ref_logp2d + (1 - m) * lp_np)
        mix /= mix.sum(axis=1, keepdims=True)
        win = np.einsum("xj,xij->xi", mix, probs)
        coef = rho[:, None] * np.exp(lp_np) * (beta * (lp_np - env.ref_logp2d) - (win - 0.5))
        loss = loss + (torch.from_numpy(coef) * lp_t).sum()
    mask = torch.from_numpy(linear != 0)
    loss = loss - torch.where(mask, torch.from_numpy(linear) * lp_t, 0.0).sum()
    pi_t = torch.exp(lp_t)
    rho_t = torch.tensor(rho)[:, None]
    support = torch.from_numpy(np.exp(lp_np) > 0)
    if kl_coef:
        loss = loss + kl_coef * torch.where(support, rho_t * pi_t * (lp_t - rlp), 0.0).sum()
    if reward_coef:
        loss = loss - reward_coef * (rho_t * pi_t * torch.tensor(reward)).sum()
    return loss
