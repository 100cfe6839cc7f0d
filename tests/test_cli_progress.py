"""Progress in a log: plain lines when stderr is not a terminal (CI, ``> log``), rich bars otherwise."""

from __future__ import annotations

import io
import re

from rich.console import Console

from interp.cli.progress import LogBars, bars


def _log_console() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, force_terminal=False, width=200), sink


def _lines(sink: io.StringIO) -> list[str]:
    return [re.sub(r"\(\d+\.\d+s\)", "(T)", line) for line in sink.getvalue().splitlines()]


def test_a_log_gets_one_line_per_finished_step():
    console, sink = _log_console()
    with bars(console) as progress:
        assert isinstance(progress, LogBars)
        scores = progress.add_task("edge scores", total=4)
        for _ in range(4):
            progress.advance(scores, 1)
        curve = progress.add_task("curve", total=None)
        progress.update(curve, completed=3)
    assert _lines(sink) == ["edge scores: 4/4 done (T)", "curve: 3 done (T)"]


def test_silent_tasks_and_disabled_bars_print_nothing():
    console, sink = _log_console()
    with bars(console) as progress:
        cells = progress.add_task("cells", total=2, log=False)
        progress.update(cells, completed=2)
    with bars(console, enabled=False) as progress:
        progress.advance(progress.add_task("rank 1", total=1), 1)
    assert sink.getvalue() == ""


def test_long_steps_print_a_line_every_interval_and_reset_restarts():
    console, sink = _log_console()
    with LogBars(console, every=0.0) as progress:
        rows = progress.add_task("rows", total=3)
        progress.update(rows, completed=1)
        progress.update(rows, completed=3)
        progress.reset(rows, total=2)
        progress.update(rows, completed=2)
    assert _lines(sink) == ["rows: 1/3 (T)", "rows: 3/3 done (T)", "rows: 2/2 done (T)"]


def test_a_terminal_gets_rich_bars():
    from rich.progress import Progress

    assert isinstance(bars(Console(file=io.StringIO(), force_terminal=True)), Progress)
