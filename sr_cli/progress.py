"""One progress style for every command: a rich bar on stderr (``sr-train`` has its own, with
losses and validation lines, in :mod:`sr_cli.train.lit.progress`).

A leaf: rich only. ``bar(...)`` returns an object with ``update(n)``, ``describe(text)`` and
``close()``, and is a context manager; ``disable=True`` makes it do nothing.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Bar:
    """A single-task rich progress bar.

    Args:
        total: number of units (``None``: unknown).
        desc: label at the left.
        unit: ``"B"`` shows bytes and speed; anything else counts items.
        initial: units already done (e.g. skipped on a rerun).
        disable: show nothing.
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "item",
        initial: float = 0,
        disable: bool = False,
    ) -> None:
        self.disabled = bool(disable)
        if self.disabled:
            return
        count = (
            (DownloadColumn(), TransferSpeedColumn()) if unit == "B" else (MofNCompleteColumn(),)
        )
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            *count,
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(file=sys.stderr, highlight=False),
        )
        self._progress.start()
        self._task = self._progress.add_task(escape(desc), total=total, completed=initial, note="")

    def update(self, n: float = 1) -> None:
        if not self.disabled:
            self._progress.advance(self._task, n)

    def describe(self, note: str) -> None:
        """Text at the right of the bar (e.g. the file being processed)."""
        if not self.disabled:
            self._progress.update(self._task, note=escape(note))

    def close(self) -> None:
        if not self.disabled:
            self._progress.stop()
            self.disabled = True

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
