"""What `conformance grade` shows while a class is graded: one line per submission as it finishes and, on a
terminal, a progress bar with the running tally (graded, failed to load, timed out, kept from an earlier
run), the time left and the submissions being graded now."""

from __future__ import annotations

import collections

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .areas import AREAS

KINDS = ("graded", "failed to load", "timed out", "kept")


def kind(row: dict) -> str:
    """How a submission's grading ended, for the tally."""
    if row.get("kept"):
        return "kept"
    if "time limit" in row.get("error", ""):
        return "timed out"
    if all(row.get(area) == "missing" for area in AREAS):
        return "failed to load"  # not one check could run: the file could not be read or loaded, or defines nothing
    return "graded"


def line(row: dict) -> str:
    text = f"{row['name']}: {row['score']:g}/{row['max_score']:g}, gate {row['gate']}"
    if row.get("kept"):
        text += " (kept: graded the same way since its last change; --force grades it again)"
    if kind(row) == "failed to load":
        text += " (nothing could be graded: see its feedback.md)"
    return text + (f" ({row['error']})" if row.get("error") else "")


class Board:
    """The display of one `grade` run (a context manager)."""

    def __init__(self, total: int):
        self.console = Console(highlight=False, soft_wrap=True)
        self.tally: collections.Counter[str] = collections.Counter()
        self.current: list[str] = []
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[current]}"), console=self.console, transient=True,
                                 disable=not self.console.is_terminal)
        self.task = self.progress.add_task(self._description(), total=total, current="")

    def __enter__(self) -> Board:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _description(self) -> str:
        return " · ".join(f"{self.tally[k]} {k}" for k in KINDS if self.tally[k] or k == "graded")

    def _refresh(self, advance: int = 0) -> None:
        shown = ", ".join(self.current[:3]) + (f" +{len(self.current) - 3}" if len(self.current) > 3 else "")
        self.progress.update(self.task, advance=advance, description=self._description(), current=shown)

    def started(self, name: str) -> None:
        self.current.append(name)
        self._refresh()

    def finished(self, row: dict) -> None:
        if row["name"] in self.current:
            self.current.remove(row["name"])
        self.tally[kind(row)] += 1
        self.console.print(line(row), markup=False)
        self._refresh(advance=1)

    def summary(self) -> str:
        return "; ".join(f"{self.tally[k]} {k}" for k in KINDS if self.tally[k])
