"""Mutation testing of the core modules: apply each fault of ``mutants.py`` alone, run its tests.

    python tests/mutation/run_mutants.py                  # every fault (about an hour on 2 cores)
    python tests/mutation/run_mutants.py --module metrics --module coverage
    python tests/mutation/run_mutants.py --id dpo-skip-last-block -v    # one fault, show the test
    python tests/mutation/run_mutants.py --list

Not part of the default test run (pytest collects ``test_*.py`` only). For each fault the script
copies the package and the tests into a scratch folder, applies the one edit, and runs the test
subset of the mutated module (``SUBSETS``) with ``pytest -x``: the fault is *killed* when a test
fails (or the run passes ``--timeout``), *survives* when every test passes. It prints the kill rate
per module and the failing test that killed each fault.

Why not mutmut or cosmic-ray: both mutate by rewriting the Python source operator by operator and
run thousands of mostly meaningless mutants; neither knows that a numba module's compiled code is
cached (numba's cache is keyed by each file's content, and a jitted function that calls a mutated
function in *another* module keeps its stale compiled copy). Here the faults are a hand-written
list of realistic mistakes, and numba's cache is isolated per fault: a warm cache of the unmutated
code (built by a baseline run, which must pass) is copied for each fault, minus the entries of the
mutated module and of every jitted module that calls it, so those compile afresh from the mutant.

Kill rates per module, measured: ``README.md`` next to this script.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from mutants import MUTANTS, SUBSETS  # noqa: E402

#: numba modules, and the numba modules whose cached compiled code inlines them.
NUMBA_DEPENDENTS = {
    "_dpo_fast": ["_dpo_fast", "_engine", "_sampled"],
    "_pair_kernels": ["_pair_kernels", "_engine", "_sampled"],
    "_engine": ["_engine", "_sampled"],
    "_rng": ["_rng", "_sampled"],
    "_sampled": ["_sampled"],
    "_metric_kernels": ["_metric_kernels"],
}


def apply_mutant(text: str, mutant) -> str:
    """The file text with the mutant's ``old`` snippet (its ``nth`` occurrence) replaced."""
    starts = [m.start() for m in re.finditer(re.escape(mutant.old), text)]
    if len(starts) < mutant.nth:
        raise LookupError(f"{mutant.id}: snippet not found ({len(starts)} occurrences, "
                          f"wanted #{mutant.nth}): {mutant.old!r}")
    at = starts[mutant.nth - 1]
    return text[:at] + mutant.new + text[at + len(mutant.old):]


def module_path(root: Path, module: str) -> Path:
    return root / "coverage_sim" / (module.replace(".", "/") + ".py")


def fresh_copy(work: Path, source: Path = ROOT) -> None:
    """The package, the tests and pyproject.toml of ``source``, copied to ``work``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", ".hypothesis")
    shutil.copytree(source / "coverage_sim", work / "coverage_sim", ignore=ignore)
    shutil.copytree(source / "tests", work / "tests", ignore=ignore)
    shutil.copy2(source / "pyproject.toml", work / "pyproject.toml")


def run_tests(work: Path, tests: list[str], cache: Path, timeout: float, verbose: bool,
              stop_first: bool = True):
    """``(status, failing test(s), seconds)``: status 'pass', 'fail' or 'timeout'; the first
    failing test, or all of them (comma-separated) without ``stop_first``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "pytest", *(["-x"] if stop_first else []), "-q", "-p",
           "no:cacheprovider", "-p", "no:randomly", "-n", "0", "--no-header", "-rfE", *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", "", time.perf_counter() - start
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if verbose:
        print(out[-4000:])
    if proc.returncode == 0:
        return "pass", "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    if not failed:
        failed = re.findall(r"^_{3,} (\S.*?) _{3,}$", out, flags=re.M)
    if not failed:
        return "fail", f"exit {proc.returncode}", seconds
    return "fail", (failed[0] if stop_first else ", ".join(failed)), seconds


def isolated_cache(base: Path, dest: Path, module: str) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    for stale in NUMBA_DEPENDENTS.get(module, []):
        for f in dest.rglob(f"{stale}.*"):
            if f.suffix in (".nbi", ".nbc"):
                f.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", help="only faults in this module (repeatable)")
    ap.add_argument("--id", action="append", help="only this fault (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the faults and exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per fault (killed after)")
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--target", type=float, default=95.0, help="kill rate required per module, %%")
    ap.add_argument("--tests", nargs="+", default=None,
                    help="run these tests instead of the module's subset (e.g. to show which test "
                         "of a file catches a fault)")
    ap.add_argument("--all-failures", action="store_true",
                    help="run every test of the subset (no -x) and list all that fail")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each pytest run's tail")
    args = ap.parse_args(argv)

    chosen = [m for m in MUTANTS if (not args.module or m.module in args.module)
              and (not args.id or m.id in args.id)]
    if args.list:
        for m in chosen:
            print(f"{m.module:<14} {m.id:<40} {m.what}")
        return 0
    if not chosen:
        print("no fault matches", file=sys.stderr)
        return 2
    ids = [m.id for m in MUTANTS]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        print(f"duplicate fault ids: {sorted(dup)}", file=sys.stderr)
        return 2
    # Every snippet must still match the code before anything runs.
    for m in chosen:
        apply_mutant(module_path(ROOT, m.module).read_text(), m)

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="cs-mutation-"))
    work, base_cache, cache = scratch / "repo", scratch / "cache-base", scratch / "cache"
    source = scratch / "source"
    modules = list(dict.fromkeys(m.module for m in chosen))
    # A snapshot of the tree as it is now: edits made while the faults run do not leak into them.
    fresh_copy(source)

    print(f"baseline: the unmutated tests must pass (also warms numba's cache) in {scratch}",
          flush=True)
    fresh_copy(work, source)
    base_cache.mkdir(parents=True, exist_ok=True)
    subsets = {module: args.tests or SUBSETS[module] for module in modules}
    for module in modules:
        status, test, secs = run_tests(work, subsets[module], base_cache, args.timeout * 2,
                                       args.verbose)
        print(f"  {module:<14} {status} ({secs:.0f} s)", flush=True)
        if status != "pass":
            print(f"baseline fails for {module}: {test}; fix the tests first", file=sys.stderr)
            return 1

    results = defaultdict(list)
    for n, m in enumerate(chosen, 1):
        fresh_copy(work, source)
        path = module_path(work, m.module)
        path.write_text(apply_mutant(path.read_text(), m))
        isolated_cache(base_cache, cache, m.module)
        status, test, secs = run_tests(work, subsets[m.module], cache, args.timeout,
                                       args.verbose, stop_first=not args.all_failures)
        killed = status != "pass"
        results[m.module].append((m, killed, status, test))
        verdict = ("killed by " + test) if status == "fail" else (
            "killed (timeout)" if status == "timeout" else "SURVIVED")
        print(f"[{n}/{len(chosen)}] {m.module:<14} {m.id:<40} {verdict} ({secs:.0f} s)",
              flush=True)

    print("\nmodule          faults  killed  survived  kill rate")
    ok = True
    for module in modules:
        rows = results[module]
        killed = sum(r[1] for r in rows)
        rate = 100.0 * killed / len(rows)
        ok &= rate >= args.target
        print(f"{module:<14} {len(rows):>7} {killed:>7} {len(rows) - killed:>9} {rate:>9.1f}%")
    total = sum(len(r) for r in results.values())
    killed = sum(r[1] for rows in results.values() for r in rows)
    print(f"{'all':<14} {total:>7} {killed:>7} {total - killed:>9} {100.0 * killed / total:>9.1f}%")
    survivors = [r[0] for rows in results.values() for r in rows if not r[1]]
    if survivors:
        print("\nsurvivors:")
        for m in survivors:
            print(f"  {m.module}: {m.id}: {m.what}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
