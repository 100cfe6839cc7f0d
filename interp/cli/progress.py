"""Progress bars for the long commands (circuit, patch, trace): rich bars in a terminal, plain lines in a log.

In a log file or CI (stderr not a terminal) rich draws nothing until the end, so :class:`LogBars` prints a
line when a step finishes and, on long steps, one line every ``every`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console


class LogBars:
    """The part of ``rich.progress.Progress`` the commands use, as plain log lines.

    ``add_task`` / ``advance`` / ``update`` / ``reset`` keep counts. A task prints
    ``description: done/total (seconds)`` when it reaches its total (or, without one, when the bars
    close) and at most every ``every`` seconds while it runs; ``add_task(..., log=False)`` keeps a
    task silent (rich keeps the extra field and ignores it).
    """

    def __init__(self, console: Console, *, every: float = 60.0, enabled: bool = True) -> None:
        self._console = console
        self._every = every
        self._enabled = enabled
        self._tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LogBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            for task in self._tasks:
                if not task["reported"]:
                    self._line(task, " done")

    def add_task(self, description: str, total: float | None = None, *, log: bool = True, **_: Any) -> int:
        now = time.perf_counter()
        self._tasks.append({"description": description, "total": total, "done": 0, "start": now, "shown": now,
                            "log": log, "reported": not log})
        return len(self._tasks) - 1

    def advance(self, handle: int, amount: float = 1) -> None:
        self.update(handle, completed=self._tasks[handle]["done"] + amount)

    def update(self, handle: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **_: Any) -> None:
        task = self._tasks[handle]
        task.update({key: value for key, value in (("total", total), ("description", description), ("done", completed))
                     if value is not None})
        if task["reported"]:
            return
        if task["total"] is not None and task["done"] >= task["total"]:
            self._line(task, " done")
            task["reported"] = True
        elif time.perf_counter() - task["shown"] >= self._every:
            self._line(task, "")
            task["shown"] = time.perf_counter()

    def reset(self, handle: int, *, total: float | None = None, **_: Any) -> None:
        task = self._tasks[handle]
        task.update(total=total, done=0, reported=not task["log"], start=time.perf_counter())

    def _line(self, task: dict[str, Any], suffix: str) -> None:
        if not self._enabled:
            return
        total = "" if task["total"] is None else f"/{int(task['total'])}"
        elapsed = time.perf_counter() - task["start"]
        self._console.print(f"{task['description']}: {int(task['done'])}{total}{suffix} ({elapsed:.1f}s)",
                            highlight=False, soft_wrap=True)


def bars(console: Console, *, enabled: bool = True, remaining: bool = False):
    """Rich bars when ``console`` is a terminal, :class:`LogBars` otherwise; ``enabled=False`` shows nothing."""
    if not console.is_terminal:
        return LogBars(console, enabled=enabled)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    return Progress(*columns, *([TimeRemainingColumn()] if remaining else []), console=console, disable=not enabled)
