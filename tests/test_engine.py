"""The numba kernels' compile structure: one specialisation per loop (fresh clones compile cold)."""

from __future__ import annotations

import ast
import importlib
import inspect

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

KERNEL_MODULES = ("coverage_sim._engine", "coverage_sim._sampled", "coverage_sim._dpo_fast",
                  "coverage_sim._pair_kernels", "coverage_sim._metric_kernels", "coverage_sim._rng")


def _calls(source: str, jitted: set) -> dict:
    """``{jitted function: [(callee, call node)]}``: the calls between jitted functions."""
    return {fn.name: [(node.func.id, node) for node in ast.walk(fn)
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                      and node.func.id in jitted]
            for fn in ast.parse(source).body
            if isinstance(fn, ast.FunctionDef) and fn.name in jitted}


def literal_calls(source: str, jitted: set, constants: set, callers: set) -> list[str]:
    """Calls in ``source`` from a jitted function to one of ``callers`` (jitted functions that call
    others) with a literal argument: a bool or int constant, or one of the module's integer
    ``constants`` (numba types a global int as a literal too)."""
    found = []
    for caller, sites in _calls(source, jitted).items():
        for callee, node in sites:
            if callee not in callers:
                continue
            for arg in node.args:
                if ((isinstance(arg, ast.Constant) and isinstance(arg.value, (bool, int)))
                        or (isinstance(arg, ast.Name) and arg.id in constants)):
                    found.append(f"{caller} -> {callee}({ast.unparse(arg)})")
    return found


def _module_facts(name: str):
    module = importlib.import_module(name)
    jitted = {n for n, o in vars(module).items() if isinstance(o, CPUDispatcher)}
    constants = {n for n, o in vars(module).items() if n.isupper() and isinstance(o, (bool, int))}
    return inspect.getsource(module), jitted, constants


@pytest.mark.parametrize("name", KERNEL_MODULES)
def test_no_literal_constant_reaches_a_jitted_function_with_callees(name):
    # numba compiles a callee, and everything it calls, once more for each literal argument
    # (True, 0, a module-level int): run_one passing last=True to run_chunk compiled the whole
    # engine twice in every fresh process. Only leaves (no jitted callees) may take literals:
    # their second specialisation is one small compile.
    callers = set()
    for other in KERNEL_MODULES:
        source, jitted, _ = _module_facts(other)
        callers |= {fn for fn, sites in _calls(source, jitted).items() if sites}
    source, jitted, constants = _module_facts(name)
    assert literal_calls(source, jitted, constants, callers) == []


def test_the_literal_check_finds_literals():
    # negative control: the pattern that compiled the engine twice, and a global constant
    source = ("def run_one(x):\n    run_chunk(x, True, 0, TABULAR, np.bool_(True), y)\n"
              "def leaf_user(x):\n    leaf(x, True)\n")
    found = literal_calls(source, {"run_one", "run_chunk", "leaf_user", "leaf"}, {"TABULAR"},
                          {"run_chunk"})
    assert found == ["run_one -> run_chunk(True)", "run_one -> run_chunk(0)",
                     "run_one -> run_chunk(TABULAR)"]


def writable_pair_weights(source: str, jitted: set) -> list[str]:
    """Calls in ``source``'s jitted functions to ``population_pairwise_sum`` whose pair weights
    (its sixth argument) are neither a term's frozen ``W`` nor a buffer passed through
    ``_read_only``."""
    return [f"{caller}: {ast.unparse(node)}" for caller, sites in _calls(source, jitted).items()
            for callee, node in sites if callee == "population_pairwise_sum"
            and not (ast.unparse(node.args[5]) == "W"
                     or ast.unparse(node.args[5]).startswith("_read_only("))]


def test_the_pairwise_kernels_get_pair_weights_of_one_layout():
    """The online objectives' pair buffer reaches the pairwise kernels typed read-only, as the
    data's frozen ``W`` does, so that numba compiles them once (a writable buffer compiled
    ``population_pairwise_sum`` and the AOT kernels under it a second time: about 6 s of one core
    in a fresh clone's warm-up)."""
    source, jitted, _ = _module_facts("coverage_sim._engine")
    assert writable_pair_weights(source, jitted | {"population_pairwise_sum"}) == []
    # negative control: the call the online branches made before
    bad = "def f(x):\n    population_pairwise_sum(c, p, w, lp, rlp, wbuf, g)\n"
    assert writable_pair_weights(bad, {"f", "population_pairwise_sum"}) == [
        "f: population_pairwise_sum(c, p, w, lp, rlp, wbuf, g)"]


def test_read_only_is_the_same_memory_typed_read_only():
    from numba import njit

    from coverage_sim._engine import _read_only

    @njit
    def view(a):
        return _read_only(a)

    a = np.arange(6.0).reshape(2, 3)
    b = view(a)
    assert np.shares_memory(a, b) and b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    (signature,) = view.nopython_signatures
    assert signature.args[0].mutable and not signature.return_type.mutable
