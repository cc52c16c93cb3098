"""Progress bars for calls that can run for more than a few seconds.

``progress=None`` (every long-running call's default) shows a bar when the call's *estimated*
duration exceeds :data:`AUTO_SECONDS`; ``True``/``False`` force it. The environment variable
``COVERAGE_SIM_PROGRESS`` changes the default: ``0`` hides every bar not asked for explicitly (the
test suite sets it), ``1`` shows one on every call. Bars advance by estimated work, not by steps,
so that the remaining-time estimate stays right when the early steps are more expensive (the
log-spaced record schedule puts most recorded steps, and their metrics, early).
"""

from __future__ import annotations

import os

__all__ = ["AUTO_SECONDS", "ENV_PROGRESS", "wants_progress", "progress_bar", "NullBar",
           "StepProgress"]

ENV_PROGRESS = "COVERAGE_SIM_PROGRESS"
#: A call estimated to take longer than this shows a bar by default.
AUTO_SECONDS = 3.0
_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"


def wants_progress(progress, expected_seconds: float) -> bool:
    """Whether to show a bar: ``progress`` if it is a bool, else the environment's choice, else
    whether ``expected_seconds`` exceeds :data:`AUTO_SECONDS`."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise ValueError(f"progress must be None (automatic), True or False, got {progress!r}")
        return progress
    setting = os.environ.get(ENV_PROGRESS, "").strip().lower()
    if setting in ("0", "false", "off", "no"):
        return False
    if setting in ("1", "true", "on", "yes"):
        return True
    if setting:
        raise ValueError(f"{ENV_PROGRESS} must be 0 or 1 (or unset for automatic), got {setting!r}")
    return expected_seconds > AUTO_SECONDS


class NullBar:
    """What :func:`progress_bar` returns when no bar is shown: accepts the same calls."""

    disable = True

    def update(self, n=1):
        pass

    def set_postfix_str(self, s=""):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress_bar(show: bool, total: float, desc: str, *, unit_scale_steps: bool = False):
    """A tqdm bar over ``total`` units of estimated work (or a :class:`NullBar` when not ``show``).

    The bar shows the percentage, elapsed and remaining time; with ``unit_scale_steps`` it shows
    ``n/total`` counts too (for bars whose units are real steps or seeds).
    """
    if not show:
        return NullBar()
    from tqdm.auto import tqdm  # deferred: tqdm.auto probes for IPython on import

    fmt = None if unit_scale_steps else _FORMAT
    return tqdm(total=total, desc=desc, bar_format=fmt, leave=False, dynamic_ncols=True)


class StepProgress:
    """A bar over the ``steps + 1`` iterations of a Python training loop whose cost per step is
    unknown beforehand (a torch model): the first iteration is timed, and the bar appears when that
    time predicts a call longer than :data:`AUTO_SECONDS` (or when ``progress`` is True).

    Call :meth:`step` after each iteration and :meth:`close` at the end (or use it as a context).
    """

    def __init__(self, progress, steps: int, desc: str):
        import time

        self._clock = time.perf_counter
        self._start = self._clock()
        self.progress, self.total, self.desc = progress, steps + 1, desc
        self.bar = None
        wants_progress(progress, 0.0)  # validate the argument and the environment before running

    def step(self) -> None:
        if self.bar is None:
            expected = (self._clock() - self._start) * self.total
            self.bar = progress_bar(wants_progress(self.progress, expected), self.total, self.desc,
                                    unit_scale_steps=True)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
