"""A static catalogue of what the command line lists: experiments, objectives and instances.

``coverage-sim list``, ``objectives`` and ``instances`` print from here, so they answer without
importing numba, scipy, torch or any experiment (the registries they mirror do). The catalogue is
generated from the registries (``python -m coverage_sim._catalogue_render``) and
tests/test_catalogue.py checks that it still equals them. Each experiment also carries its expected
seconds per seed (full and quick config, measured on one core) so that ``coverage-sim reproduce``
can order its work longest first and weight its progress bar by cost.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ExperimentEntry", "ObjectiveEntry", "InstanceEntry", "EXPERIMENTS", "OBJECTIVES",
           "INSTANCES", "figure_key"]


class ExperimentEntry(NamedTuple):
    """A registered experiment: id, figure, arXiv id, title, the module that registers it, and
    expected seconds per seed (full and quick config)."""

    id: str
    figure: str
    arxiv: str
    title: str
    module: str
    seconds: float
    quick_seconds: float


class ObjectiveEntry(NamedTuple):
    """An objective: name, family, arXiv id (None without one) and paper."""

    name: str
    family: str
    arxiv: str | None
    paper: str


class InstanceEntry(NamedTuple):
    """A built-in instance: name and one-line summary."""

    name: str
    summary: str


def figure_key(figure: str, experiment_id: str):
    """Sort key of an experiment: the papers' figures (F<n>) first, then this project's own (A<n>,
    the atlas), by number, then its id."""
    digits = "".join(ch for ch in figure if ch.isdigit())
    return (not figure.startswith("F"), int(digits) if digits else 0, experiment_id)


# --- generated below by `python -m coverage_sim._catalogue_render`; do not edit

EXPERIMENTS = (
    ExperimentEntry(
        'azar-ipo-vs-dpo',
        'F5',
        '2310.12036',
        'DPO overfits deterministic preferences; IPO converges (3-arm total order)',
        'coverage_sim.experiments.azar.ipo_vs_dpo',
        0.2,
        0.6),
    ExperimentEntry(
        'song-coverage',
        'F10',
        '2406.01462',
        "Coverage: DPO's KL grows like log(1/eps); RLHF (bounded reward) and HyPO stay bounded",
        'coverage_sim.experiments.song.coverage',
        1.4,
        0.3),
    ExperimentEntry(
        'xu-ood',
        'F11',
        '2404.10719',
        'DPO moves mass to an out-of-distribution response; RLHF does not',
        'coverage_sim.experiments.xu.ood',
        0.2,
        0.2),
    ExperimentEntry(
        'chen-ranking',
        'F12',
        '2405.19534',
        'Preference learning rarely flips rankings: ranking accuracy vs the idealized R*',
        'coverage_sim.experiments.chen.ranking',
        0.8,
        0.3),
    ExperimentEntry(
        'razin-displacement',
        'F15',
        '2410.08847',
        'Likelihood displacement: DPO can lower log pi of the preferred response',
        'coverage_sim.experiments.razin.displacement',
        0.2,
        0.2),
    ExperimentEntry(
        'rashidinejad-lcb',
        'F13',
        '2103.12021',
        'LCB vs behaviour cloning vs greedy: offline multi-armed bandit rates across C*',
        'coverage_sim.experiments.rashidinejad.lcb',
        2.7,
        0.6),
    ExperimentEntry(
        'gao-overoptimization',
        'F14',
        '2210.10760',
        'Reward over-optimisation: gold vs proxy reward against sqrt(KL), Best-of-N and RL',
        'coverage_sim.experiments.gao.overoptimization',
        0.2,
        0.2),
    ExperimentEntry(
        'iterative-optimism',
        'F16',
        '2405.19320',
        'Iterative/online DPO and optimism (VPO) vs offline DPO, sampled: gold reward vs '
        'iteration',
        'coverage_sim.experiments.iterative.optimism',
        4.0,
        0.8),
    ExperimentEntry(
        'drpo-resets',
        'F17',
        '2404.08495',
        'Dataset resets (DR-PO) solve a combination lock on which root-only policy gradient '
        'stalls',
        'coverage_sim.experiments.drpo.resets',
        3.1,
        0.4),
    ExperimentEntry(
        'tajwar-peak',
        'F1',
        '2404.14367',
        'On-policy sampling wins when the optimum is far from the reference (100-arm bandit)',
        'coverage_sim.experiments.tajwar.peak',
        11.0,
        2.4),
    ExperimentEntry(
        'tajwar-efficiency',
        'F2',
        '2404.14367',
        'On-policy data are more query-efficient; moderate sample reuse is best',
        'coverage_sim.experiments.tajwar.efficiency',
        2.8,
        0.9),
    ExperimentEntry(
        'tajwar-negative-gradient',
        'F3',
        '2404.14367',
        'Pushing down the worst sample relocates mass to the optimum faster (Best-of-N)',
        'coverage_sim.experiments.tajwar.negative_gradient',
        3.3,
        2.0),
    ExperimentEntry(
        'tajwar-mode-seeking',
        'F4',
        '2404.14367',
        'Reverse KL (mode-seeking) empties the wrong region faster than forward KL',
        'coverage_sim.experiments.tajwar.mode_seeking',
        0.5,
        0.2),
    ExperimentEntry(
        'tang-pareto',
        'F6',
        '2405.08448',
        'Online IPO dominates offline IPO on the win-rate/KL Pareto frontier',
        'coverage_sim.experiments.tang.pareto',
        1.5,
        1.0),
    ExperimentEntry(
        'tang-ablations',
        'F7',
        '2405.08448',
        "What carries the online/offline gap: Tang's data ablations and a pairs x labels 2x2",
        'coverage_sim.experiments.tang.ablations',
        7.5,
        2.0),
    ExperimentEntry(
        'tang-classifier',
        'F8',
        '2405.08448',
        'Offline IPO: better pairwise classifier, worse generator',
        'coverage_sim.experiments.tang.classifier',
        0.4,
        0.4),
    ExperimentEntry(
        'tang-best-of-2',
        'F9',
        '2405.08448',
        'The online/offline gap persists for non-contrastive Best-of-2 SFT',
        'coverage_sim.experiments.tang.best_of_2',
        0.4,
        0.3),
    ExperimentEntry(
        'trdpo-moving-reference',
        'F1-TR',
        '2404.09656',
        "TR-DPO's moving reference vs online DPO on offline data (F1 instance and its family)",
        'coverage_sim.experiments.gorbatovski.moving_reference',
        6.2,
        1.2),
    ExperimentEntry(
        'kl-estimators',
        'F18',
        '2402.03300',
        'KL estimators k1, k2, k3 in the reward or in the loss: exact bias, variance and where '
        'training ends',
        'coverage_sim.experiments.estimators.kl_estimators',
        1.3,
        0.5),
    ExperimentEntry(
        'group-baselines',
        'F19',
        '2402.14740',
        'Group baselines (REINFORCE, batch mean, RLOO, GRPO, Dr. GRPO) against the exact RLHF '
        'gradient as the group size varies',
        'coverage_sim.experiments.estimators.group_baselines',
        3.9,
        0.7),
    ExperimentEntry(
        'tajwar-tokens',
        'F3 (tokens)',
        '2404.14367',
        "Transfer: pushing down the worst sample speeds up online Best-of-N on Tajwar's token "
        'task with gpt-nano',
        'coverage_sim.experiments.tajwar.tokens',
        37.6,
        5.4),
    ExperimentEntry(
        'tajwar-token-peak',
        'F1 (tokens)',
        '2404.14367',
        'Transfer: on-policy sampling wins when the optimum is far from the reference, on '
        "Tajwar's token task with gpt-nano",
        'coverage_sim.experiments.tajwar.token_peak',
        60.0,
        18.0),
    ExperimentEntry(
        'tang-transformer',
        'F6 (transformer)',
        '2405.08448',
        'Transfer: online vs offline IPO Pareto frontier with a transformer policy over token '
        'sequences',
        'coverage_sim.experiments.tang.transformer',
        175.0,
        20.0),
    ExperimentEntry(
        'tang-scaling',
        'F6 (scaling)',
        '2405.08448',
        'Scaling the policy: the online/offline IPO gap against transformer size',
        'coverage_sim.experiments.tang.scaling',
        68.0,
        8.0),
    ExperimentEntry(
        'drpo-transformer',
        'F17 (transformer)',
        '2404.08495',
        'Transfer: dataset resets vs root-only exact policy gradient on a combination lock, '
        'tabular autoregressive policy and gpt-nano',
        'coverage_sim.experiments.drpo.transformer',
        24.8,
        7.8),
    ExperimentEntry(
        'capacity-findings',
        'A2',
        '2404.14367',
        'Capacity: which bandit findings hold for tabular, log-linear and MLP policies',
        'coverage_sim.experiments.capacity.findings',
        90.0,
        16.0),
    ExperimentEntry(
        'gap-atlas',
        'A1',
        '2406.01462',
        'The gap atlas: online minus offline over coverage, β, n, labels and policy class',
        'coverage_sim.experiments.atlas.gap',
        220.0,
        50.0),
)

OBJECTIVES = (
    ObjectiveEntry(
        'sigmoid',
        'offline pairwise',
        '2305.18290',
        'Rafailov et al. 2023, Direct Preference Optimization (DPO)'),
    ObjectiveEntry(
        'dpo',
        'offline pairwise',
        '2305.18290',
        'Rafailov et al. 2023, Direct Preference Optimization (DPO)'),
    ObjectiveEntry(
        'cdpo',
        'offline pairwise',
        None,
        'Mitchell 2023, A note on DPO with noisy preferences & relationship to IPO (technical '
        'note; no arXiv id)'),
    ObjectiveEntry(
        'hinge',
        'offline pairwise',
        '2305.10425',
        'Zhao et al. 2023, SLiC-HF; hinge with reference as in Liu et al. 2023, RSO '
        '(arXiv:2309.06657)'),
    ObjectiveEntry(
        'slic',
        'offline pairwise',
        '2305.10425',
        'Zhao et al. 2023, SLiC-HF; hinge with reference as in Liu et al. 2023, RSO '
        '(arXiv:2309.06657)'),
    ObjectiveEntry(
        'ipo',
        'offline pairwise',
        '2310.12036',
        'Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human '
        'Preferences (IPO)'),
    ObjectiveEntry(
        'exo_pair',
        'offline pairwise',
        '2402.00856',
        'Ji et al. 2024, Towards Efficient Exact Optimization of Language Model Alignment (EXO)'),
    ObjectiveEntry(
        'nca_pair',
        'offline pairwise',
        '2402.05369',
        'Chen et al. 2024, Noise Contrastive Alignment of Language Models with Explicit Rewards '
        '(NCA)'),
    ObjectiveEntry(
        'robust',
        'offline pairwise',
        '2403.00409',
        'Chowdhury et al. 2024, Provably Robust DPO: Aligning Language Models with Noisy '
        'Feedback (rDPO)'),
    ObjectiveEntry(
        'bco_pair',
        'offline pairwise',
        '2404.04656',
        'Jung et al. 2024, Binary Classifier Optimization for Large Language Model Alignment '
        '(BCO)'),
    ObjectiveEntry(
        'sppo_hard',
        'offline pairwise',
        '2405.00675',
        'Wu et al. 2024, Self-Play Preference Optimization for Language Model Alignment (SPPO)'),
    ObjectiveEntry(
        'aot',
        'offline pairwise',
        '2406.05882',
        'Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport'),
    ObjectiveEntry(
        'aot_unpaired',
        'offline pairwise',
        '2406.05882',
        'Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport'),
    ObjectiveEntry(
        'apo_zero',
        'offline pairwise',
        '2408.06266',
        "D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive Revisions "
        '(APO)'),
    ObjectiveEntry(
        'apo_down',
        'offline pairwise',
        '2408.06266',
        "D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive Revisions "
        '(APO)'),
    ObjectiveEntry(
        'discopop',
        'offline pairwise',
        '2406.08414',
        'Lu et al. 2024, Discovering Preference Optimization Algorithms with and for Large '
        'Language Models (DiscoPOP)'),
    ObjectiveEntry(
        'sft',
        'offline pairwise',
        '2404.19733',
        "Negative log-likelihood of the chosen response; with 'sigmoid' it is RPO (Pang et al. "
        '2024, Iterative Reasoning Preference Optimization)'),
    ObjectiveEntry(
        'sigmoid_norm',
        'offline pairwise',
        '2405.14734',
        'Length-normalised DPO: Meng et al. 2024, SimPO (arXiv:2405.14734) / Lambert et al. '
        '2024, Tulu 3 (arXiv:2411.15124)'),
    ObjectiveEntry(
        'rpo',
        'offline pairwise',
        '2404.19733',
        'Pang et al. 2024, Iterative Reasoning Preference Optimization (RPO: DPO + NLL)'),
    ObjectiveEntry(
        'mpo',
        'offline pairwise',
        '2411.10442',
        'Wang et al. 2024, Mixed Preference Optimization (MPO)'),
    ObjectiveEntry(
        'best_of_n',
        'offline pointwise',
        '2404.14367',
        'Tajwar et al. 2024, filtered behaviour cloning / Best-of-N distillation'),
    ObjectiveEntry(
        'awr',
        'offline pointwise',
        '1910.00177',
        "Peng et al. 2019, advantage-weighted regression (Tajwar et al. 2024's variant)"),
    ObjectiveEntry(
        'rlhf',
        'online',
        '2203.02155',
        'Ouyang et al. 2022 / Rafailov et al. 2023 (KL-regularised RLHF)'),
    ObjectiveEntry(
        'online_dpo',
        'online',
        '2402.04792',
        'Guo et al. 2024, direct alignment from online AI feedback'),
    ObjectiveEntry(
        'online_ipo',
        'online',
        '2403.08635',
        'Calandriello et al. 2024, online IPO = self-play Nash-MD'),
    ObjectiveEntry(
        'iterative_dpo',
        'online',
        '2405.07863',
        'Xiong et al. 2023 / Dong et al. 2024 (RLHF Workflow), iterative DPO'),
    ObjectiveEntry(
        'hypo',
        'hybrid',
        '2406.01462',
        'Song et al. 2024, hybrid preference optimisation (HyPO)'),
    ObjectiveEntry(
        'vpo',
        'online',
        '2405.19320',
        'Cen et al. 2024, value-incentivised preference optimisation (VPO); Zhang et al. 2024 '
        '(SELM)'),
    ObjectiveEntry(
        'kto',
        'offline pointwise',
        '2402.01306',
        'Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization'),
    ObjectiveEntry(
        'apo_zero_unpaired',
        'offline pointwise',
        '2408.06266',
        "D'Oosterlinck et al. 2024, Anchored Preference Optimization (APO-zero, unpaired)"),
    ObjectiveEntry(
        'nash_md',
        'online',
        '2312.00886',
        'Munos et al. 2023, Nash Learning from Human Feedback (Nash-MD)'),
    ObjectiveEntry(
        'xpo',
        'online',
        '2405.21046',
        'Xie et al. 2024, Exploratory Preference Optimization (XPO)'),
)

INSTANCES = (
    InstanceEntry(
        'tajwar-peak70',
        'Tajwar et al. 2404.14367: 100 arms, tanh-Cauchy pi_ref, reward peak at 70 (far from '
        "pi_ref's mass)"),
    InstanceEntry(
        'tajwar-peak20',
        'Tajwar et al. 2404.14367: 100 arms, tanh-Cauchy pi_ref, reward peak at 20 (aligned with '
        'pi_ref)'),
    InstanceEntry(
        'azar',
        'Azar et al. 2310.12036: 3 arms a > b > c, uniform pi_ref'),
    InstanceEntry(
        'xu',
        'Xu et al. 2404.10719: arms y1, y2, y3 with pi_ref(y3) = 1e-3, r = (1, 0, -3)'),
    InstanceEntry(
        'random-k10',
        '10 arms, rewards U[-3, 3], full-support random pi_ref (seed 0)'),
    InstanceEntry(
        'random-k10-x3',
        '3 contexts x 10 arms, rewards U[-3, 3], random pi_ref and rho (seed 0)'),
)
