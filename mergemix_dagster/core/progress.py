"""Progress of a long loop (training steps, candidates, tasks, reference runs): i/N, rate and ETA.

One object feeds two readers: a tqdm bar on the terminal (only when stderr is a terminal, so logs and
tests stay clean) and a ``log`` callable (e.g. Dagster's ``context.log.info``) that receives one plain line
at the first step, then at most every ``log_every_seconds``, and at the end, so the run's event log shows
progress without a line per step::

    with Progress(len(todo), "candidates", log=context.log.info) as progress:
        for c in todo:
            ...
            progress.advance(candidate=c["candidate_id"])
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

from tqdm.auto import tqdm


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: short enough for a log line."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts ``done`` out of ``total``; reports rate and ETA to the terminal and to ``log``."""

    def __init__(
        self,
        total: int,
        label: str,
        log: Callable[[str], None] | None = None,
        unit: str = "it",
        log_every_seconds: float = 10.0,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.unit = unit
        self.log = log
        self.log_every_seconds = log_every_seconds
        self.done = 0
        self.fields: dict[str, Any] = {}
        self._clock = clock
        self._start = clock()
        self._last_log: float | None = None
        show = sys.stderr.isatty() if terminal is None else terminal
        self._bar = tqdm(total=self.total, desc=label, unit=unit, disable=not show, leave=True, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    @property
    def rate(self) -> float:
        """Units per second so far (0 before the first unit)."""
        return self.done / self.elapsed if self.done and self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        """Seconds left at the rate so far (``inf`` before the first unit)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else math.inf

    def line(self) -> str:
        """``candidates 3/40 (8%) · 0.52 it/s · ETA 1 min 11 s · loss=3.21``"""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = self.rate
        speed = f"{rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}"
        parts = [f"{self.label} {self.done}/{self.total}{pct}", speed]
        parts.append(f"done in {format_seconds(self.elapsed)}" if self.done >= self.total else f"ETA {format_seconds(self.eta)}")
        parts += [f"{k}={_short(v)}" for k, v in self.fields.items()]
        return " · ".join(parts)

    def advance(self, n: int = 1, **fields: Any) -> None:
        """``n`` more units done; ``fields`` (loss, tokens/s, the item's name) are shown with the count."""
        self.done += n
        self.fields.update(fields)
        if fields:
            self._bar.set_postfix({k: _short(v) for k, v in self.fields.items()}, refresh=False)
        self._bar.update(n)
        now = self._clock()
        due = self._last_log is None or now - self._last_log >= self.log_every_seconds or self.done >= self.total
        if self.log is not None and due:
            self._last_log = now
            self.log(self.line())

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Progress", "format_seconds"]
