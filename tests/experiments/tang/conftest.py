"""Fixtures of the Tang et al. experiment tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def swap_methods():
    """``swap_methods(table, a="online", b="offline")``: the table with methods ``a`` and ``b``
    swapped (the negative control: every Tang check must fail on it)."""
    def swap(table, a="online", b="offline"):
        swapped = table.copy()
        swapped["method"] = table["method"].replace({a: b, b: a})
        return swapped
    return swap
