"""The one progress bar of long jobs (generation, analysis, SFT training): rich, with elapsed time
and ETA; a no-op when disabled (tests, --no-progress)."""

from __future__ import annotations

from typing import Callable


class progress_bar:
    """``with progress_bar(enabled, total, completed=0, description=...) as advance:`` then
    ``advance(n, description)`` after each unit of work (``n`` may be 0 to update the text only)."""

    def __init__(self, enabled: bool, total: int, *, completed: int = 0, description: str = "working") -> None:
        self.enabled, self.total, self.completed, self.description = enabled, total, completed, description

    def __enter__(self) -> Callable[[int, str], None]:
        if not self.enabled:
            return lambda n, desc: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.bar.__enter__()
        self.task = self.bar.add_task(self.description, total=self.total, completed=self.completed)
        return lambda n, desc: self.bar.update(self.task, advance=n, description=desc)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
