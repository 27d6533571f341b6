"""Progress lines: i/N, rate, ETA, fields; logged at the first step, at intervals and at the end only."""

from __future__ import annotations

import pytest

from mergemix_dagster.core.progress import Progress, format_seconds


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_carry_count_rate_eta_and_fields():
    clock, lines = _Clock(), []
    progress = Progress(4, "candidates", log=lines.append, log_every_seconds=10, terminal=False, clock=clock)
    clock.now += 2.0
    progress.advance(candidate="c00", loss=3.14159265)
    assert lines == ["candidates 1/4 (25%) · 2 s/it · ETA 6 s · candidate=c00 · loss=3.142"]
    assert progress.rate == pytest.approx(0.5) and progress.eta == pytest.approx(6.0)


def test_logs_first_step_then_every_interval_then_the_end():
    clock, lines = _Clock(), []
    progress = Progress(100, "steps", log=lines.append, log_every_seconds=10, unit="step", terminal=False, clock=clock)
    for _ in range(100):
        clock.now += 1.0
        progress.advance()
    progress.close()
    # step 1, then every 10 s (steps 11, 21, ..., 91), then step 100: not one line per step
    assert [line.split(" ")[1] for line in lines] == [f"{i}/100" for i in (1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100)]
    assert lines[-1].endswith("done in 1 min 40 s")
    assert "1 step/s" in lines[-1]


def test_without_a_log_or_terminal_it_only_counts():
    with Progress(3, "tasks", terminal=False) as progress:
        progress.advance(2)
    assert progress.done == 2 and "tasks 2/3 (67%)" in progress.line()


def test_format_seconds():
    assert [format_seconds(x) for x in (4.4, 65, 3725, float("inf"))] == ["4 s", "1 min 05 s", "1 h 02 min", "?"]
