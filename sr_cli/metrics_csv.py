"""A run's ``metrics.csv`` (Lightning's CSV log), read so that a damaged row costs that row only.

A byte flipped on disk, a stray NUL or a row cut short must not stop a resume, a report or a
sweep summary. Every reader of ``metrics.csv`` goes through :func:`read_metrics_rows`: it keeps
the readable rows and names each row it leaves out in one warning line (the file, the row, why).
Every cell of that log is a number or empty, so a cell that is not a number marks a damaged row.

A ground module: the standard library only.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Damaged rows named one by one; beyond this many, one line counts the rest.
SHOWN = 5


@dataclass
class MetricsRows:
    """The readable part of a ``metrics.csv``: its header, its rows (``{column: text}``) and the
    line numbers (1 = the header) of the rows left out."""

    header: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)


def _cells(raw: bytes) -> list[str]:
    """The cells of one line; ``ValueError`` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"byte {exc.start + 1} is not UTF-8 text") from None
    if "\x00" in text:
        raise ValueError(f"byte {text.index(chr(0)) + 1} is a NUL")
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        raise ValueError(str(exc)) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_metrics_rows(path: str | Path) -> MetricsRows:
    """The readable rows of the ``metrics.csv`` at ``path``.

    A row is left out, with a warning naming the file, the row and why, when it is not UTF-8
    text, holds a NUL, cannot be split, has another number of cells than the header, or has a
    cell that is not a number. A damaged header leaves nothing readable (a warning says so).
    """
    path = Path(path)
    out = MetricsRows()
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        log.warning("%s cannot be read (%s); its rows are left out", path, exc.strerror or exc)
        return out
    if not lines:
        return out
    try:
        header = _cells(lines[0])
        if not header or any(not name for name in header) or len(set(header)) != len(header):
            raise ValueError("its column names are missing or repeated")
    except ValueError as exc:
        log.warning("%s: the header row is damaged (%s); no row of it can be read", path, exc)
        out.damaged.append(1)
        return out
    out.header = header
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        try:
            cells = _cells(raw)
            if len(cells) != len(header):
                raise ValueError(f"it has {len(cells)} cells, the header {len(header)}")
            bad = next((i for i, c in enumerate(cells) if c and not _is_number(c)), None)
            if bad is not None:
                raise ValueError(f"{header[bad]} is {cells[bad][:40]!r}, not a number")
        except ValueError as exc:
            out.damaged.append(number)
            if len(out.damaged) <= SHOWN:
                log.warning(
                    "%s: row %d is damaged (%s); it is left out, the other rows are kept",
                    path,
                    number,
                    exc,
                )
            continue
        out.rows.append(dict(zip(header, cells)))
    if len(out.damaged) > SHOWN:
        log.warning(
            "%s: %d more damaged rows left out (rows %s)",
            path,
            len(out.damaged) - SHOWN,
            ", ".join(map(str, out.damaged[SHOWN : SHOWN + 20]))
            + (", ..." if len(out.damaged) > SHOWN + 20 else ""),
        )
    return out
