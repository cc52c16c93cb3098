"""Hypothesis profiles for the property tests, chosen by the ``HYPOTHESIS_PROFILE`` variable.

- ``ci`` (default): derandomised (the same examples every run, so CI is deterministic), no example
  database, each test's own ``examples(n)`` count. Every documented extreme of a strategy is pinned
  with ``@example`` so that it runs every time, not only when the search happens to draw it.
- ``nightly``: random search (a new seed each run, failures kept in the local ``.hypothesis``
  database and replayed first), 20 times the examples. Run it on demand::

      HYPOTHESIS_PROFILE=nightly python -m pytest -n 2 tests/test_claims.py tests/test_losses.py

- ``explicit``: only the pinned ``@example`` cases, no search (a quick check of the extremes).

Tests set only ``max_examples=examples(n)`` and ``deadline``; everything else comes from the profile.
"""

from __future__ import annotations

import os

from hypothesis import Phase, settings

_SCALE = {"ci": 1, "nightly": 20, "explicit": 1}

settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("nightly", derandomize=False, deadline=None, print_blob=True)
settings.register_profile("explicit", database=None, deadline=None, phases=[Phase.explicit])

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in _SCALE:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {sorted(_SCALE)}, got {PROFILE!r}")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """The example count of a test that runs ``n`` examples in CI, under the active profile."""
    return n * _SCALE[PROFILE]
