"""Verdicts: clause pass fractions, the three-way verdict, effect sizes, legacy checks, the
expected verdicts an experiment pins."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from coverage_sim.experiments.registry import Experiment, assess
from coverage_sim.experiments.verdict import (AGREES, DISAGREES, HOLDS_FRACTION, PARTLY,
                                              CheckResult, Effect, clause, verdict_of)


def _frac(passes: int, n: int = 10):
    return [True] * passes + [False] * (n - passes)


def test_clause_holds_exactly_at_the_threshold():
    n = 10
    at = round(HOLDS_FRACTION * n)
    assert clause("a", "s", _frac(at, n)).holds
    assert not clause("a", "s", _frac(at - 1, n)).holds
    c = clause("a", "s", _frac(7, n))
    assert (c.passes, c.instances, c.fraction) == (7, 10, 0.7)


@pytest.mark.parametrize("fractions, expected", [
    ((10, 10), AGREES), ((10, 2), PARTLY), ((8, 0), PARTLY), ((7, 7), DISAGREES),
    ((0, 0), DISAGREES)])
def test_verdict_is_a_function_of_the_paper_clauses(fractions, expected):
    clauses = [clause(f"c{i}", "s", _frac(p)) for i, p in enumerate(fractions)]
    assert verdict_of(clauses) == expected


def test_substitute_variants_never_change_the_verdict():
    paper = clause("paper", "the paper's claim", _frac(0))
    variant = clause("variant", "a substitute", _frac(10), paper=False)
    assert verdict_of([paper, variant]) == DISAGREES
    assert CheckResult(clauses=(paper, variant)).failing == ("paper",)
    with pytest.raises(ValueError, match="paper's own claim"):
        verdict_of([variant])


def test_pass_fraction_is_joint_over_instances():
    a = clause("a", "s", [True, True, False, True])
    b = clause("b", "s", [True, False, True, True])
    result = CheckResult(clauses=(a, b))
    assert result.pass_fraction == 0.5  # both pass on instances 0 and 3 only
    unequal = CheckResult(clauses=(a, clause("c", "s", [True])))
    assert unequal.pass_fraction == 0.75  # the smallest per-clause fraction


def test_effect_interval_is_the_student_t_interval():
    values = (0.1, 0.4, 0.35, 0.2, 0.5)
    effect = Effect("diff", values)
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert effect.mean == pytest.approx(mean, rel=1e-14)
    assert effect.ci == pytest.approx((mean - half, mean + half), rel=1e-12)
    assert all(math.isnan(v) for v in Effect("one", (0.3,)).ci)
    with pytest.raises(ValueError, match="finite"):
        Effect("bad", (0.1, float("nan")))


@pytest.mark.parametrize("bad, match", [
    (dict(clauses=(clause("a", "s", True), clause("a", "t", True))), "unique"),
    (dict(clauses=(clause("a", "s", True),), mode="monte carlo"), "mode"),
    (dict(clauses=("a",)), "Clause objects")])
def test_check_result_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        CheckResult(**bad)


def test_clause_needs_a_name_and_results():
    with pytest.raises(ValueError, match="name"):
        clause("", "s", True)
    with pytest.raises(ValueError, match="no results"):
        clause("a", "s", [])


def _experiment(check, **kwargs):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        pass

    return Experiment(id="probe", figure="F0", title="t", paper="p", arxiv="0000.00000",
                      claim="the claim", differences="none", config=Config, run=None,
                      plot=None, check=check, **kwargs)


def test_assess_reads_legacy_checks_as_one_clause():
    def failing(table, config):
        raise AssertionError("gap 0.01 < 0.1")

    result = assess(_experiment(failing), pd.DataFrame(), None)
    assert result.verdict == DISAGREES and result.clauses[0].detail == "gap 0.01 < 0.1"
    assert assess(_experiment(lambda t, c: None), pd.DataFrame(), None).verdict == AGREES
    with pytest.raises(TypeError, match="CheckResult"):
        assess(_experiment(lambda t, c: True), pd.DataFrame(), None)


def test_expected_verdict_is_validated():
    with pytest.raises(ValueError, match="expected_verdict"):
        _experiment(lambda t, c: None, expected_verdict="maybe")
    with pytest.raises(ValueError, match="expected_quick_verdict"):
        _experiment(lambda t, c: None, expected_quick_verdict="maybe")
    with pytest.raises(ValueError, match="expected_failing must be empty"):
        _experiment(lambda t, c: None, expected_failing=("gap",))
    with pytest.raises(ValueError, match="expected_quick_failing"):
        _experiment(lambda t, c: None, expected_verdict=PARTLY, expected_failing=("gap",),
                    expected_quick_failing="gap")


def test_expected_quick_verdict_overrides_the_full_one_only_for_quick_runs():
    full = _experiment(lambda t, c: None, expected_verdict=PARTLY, expected_failing=("decline",))
    assert full.expected() == full.expected(quick=True) == (PARTLY, ("decline",))
    both = _experiment(lambda t, c: None, expected_verdict=PARTLY, expected_failing=("decline",),
                       expected_quick_verdict=AGREES)
    assert both.expected() == (PARTLY, ("decline",)) and both.expected(quick=True) == (AGREES, ())
    names = _experiment(lambda t, c: None, expected_verdict=PARTLY, expected_failing=("decline",),
                        expected_quick_failing=("gap",))
    assert names.expected(quick=True) == (PARTLY, ("gap",))


def test_cli_compares_a_quick_config_with_the_quick_expectation(capsys):
    """``coverage-sim run/plot`` exit 0 when the verdict is the expected one for the config: the
    quick one for the quick config, the full one otherwise."""
    from dataclasses import dataclass

    from coverage_sim.cli import _check_verdict

    @dataclass(frozen=True)
    class Config:
        steps: int = 100

        @classmethod
        def quick(cls):
            return cls(steps=10)

    def check(table, config):
        return CheckResult(clauses=(clause("gap", "s", config.steps > 50),))

    exp = Experiment(id="probe", figure="F0", title="t", paper="p", arxiv="0000.00000",
                     claim="the claim", differences="none", config=Config, run=None, plot=None,
                     check=check, expected_quick_verdict=DISAGREES,
                     expected_quick_failing=("gap",))
    assert _check_verdict(exp, pd.DataFrame(), Config()) == 0
    assert _check_verdict(exp, pd.DataFrame(), Config.quick()) == 0
    assert _check_verdict(exp, pd.DataFrame(), Config(steps=20)) == 1     # not the quick config
    assert "expected: agrees" in capsys.readouterr().out
