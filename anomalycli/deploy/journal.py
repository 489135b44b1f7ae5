"""The line's journal: one CSV row per verdict, on disk before the part counts as judged.

Append-only, one ``write`` and one ``fsync`` per batch of rows: a crash can only cut the last
rows, never an earlier one, and opening the journal again mends such a cut (the rows' images are
judged again, as they were never judged). Why a CSV fsynced per batch and not a database: the line's
programs and a person with a spreadsheet read it as it is, and the fsync costs less than the
scoring it follows ("On the line" in BENCHMARKS.md gives the measured cost).

A row names the image by its path below the watched folder, its size and its modification time,
so an image judged once is never judged again, and a new image written under the same name is.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from anomalycli import files
from anomalycli.errors import UserError

# predict's CSV columns, then when and what was judged (the row's identity), how long it took, and
# (with --regions) the defect regions' count and the largest one's area in the image's pixels.
COLUMNS = ("time", "path", "score", "raw_score", "verdict", "error", "bytes", "mtime_ns", "latency_ms", "regions", "largest_area_px")
VERDICTS = ("normal", "anomaly", "error")


class JournalError(UserError):
    """The journal cannot be opened or written; the message says why and what to do."""


def now() -> str:
    """The row's time: UTC, to the millisecond, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def rows_of(path: Path) -> Iterator[dict]:
    """A journal's rows as dicts, named by its header, one at a time (a long journal is not held whole)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        yield from csv.DictReader(handle)


def identity(row: dict) -> tuple[str, str, str]:
    """What makes two rows the same image: path, size and modification time (as text)."""
    return str(row["path"]), str(row.get("bytes", "")), str(row.get("mtime_ns", ""))


class Journal:
    """An open journal file: the identities of the images it holds, and ``append``."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS, older: tuple[tuple[str, ...], ...] = (), kind: str = "anomaly watch or serve"):
        self.path = Path(path)
        self.kind = kind  # which program's journal, for the line that refuses another's
        self.columns = columns  # COLUMNS, then any a program adds after them (the station's)
        self.older = older  # the columns of this program's journals before its last ones were added: such a journal gets them, empty
        self.last: dict | None = None  # the last whole row, as read when it was opened
        self.repaired = 0  # rows cut by a crash, dropped when it was opened
        self.rows = 0
        self.judged: dict[tuple[str, str, str], str] = {}  # each image's identity -> its verdict
        if self.path.is_dir():
            raise JournalError(f"--journal {self.path} is a folder; give a file name ending in .csv")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._mend()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc.strerror or exc}; give a --journal where this user can write") from None
        if os.fstat(self._fd).st_size == 0:
            self._write(_encode([dict(zip(self.columns, self.columns))], self.columns))

    def _mend(self) -> None:
        """Read the journal; drop what a crash cut (a last row without its line end, a row of the
        wrong width) by writing it again without them, atomically."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        header = lines[0].rstrip("\r").split(",")
        if header != list(self.columns) and tuple(header) not in self.older:
            raise JournalError(f"{self.path} is not a journal of {self.kind} (its first line is not {','.join(self.columns)}); give another journal file")
        # A journal from before the last columns were added: its rows get them, empty.
        padding = "," * (len(self.columns) - len(header))
        complete, torn = lines[1:-1], lines[-1]  # the text after the last line end is a cut row
        kept = []
        for line in complete:
            line += padding
            fields = next(csv.reader([line]), [])
            if len(fields) != len(self.columns) or "\x00" in line or fields[4] not in VERDICTS:
                self.repaired += 1
                continue
            kept.append(line)
            self.last = dict(zip(self.columns, fields))
            self.judged[identity(self.last)] = fields[4]
        self.repaired += bool(torn)
        self.rows = len(kept)
        if self.repaired or padding:
            files.write_text(self.path, "\n".join([",".join(self.columns), *kept]) + "\n")

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.judged

    def verdict(self, key: tuple[str, str, str]) -> str | None:
        return self.judged.get(key)

    def append(self, rows: list[dict]) -> None:
        """Write ``rows`` and wait until they are on disk. A failed write (disk full, an I/O error)
        is undone, so the journal keeps whole rows only, and raises ``JournalError``."""
        if not rows:
            return
        self._write(_encode(rows, self.columns))
        self.rows += len(rows)
        self.last = rows[-1]
        self.judged.update((identity(r), r["verdict"]) for r in rows)

    def forget(self, keep) -> None:
        """Keep in memory only the identities ``keep(identity)`` says may come again (those whose
        image is still in the folder): memory stays flat over days."""
        self.judged = {key: verdict for key, verdict in self.judged.items() if keep(key)}

    def _write(self, data: bytes) -> None:
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(28, f"only {written} of {len(data)} bytes written (No space left on device?)")
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise JournalError(
                f"cannot write the journal {self.path}: {exc.strerror or exc}; every row before this one is kept; "
                "free space or fix the file's disk, then start again: the images without a row are judged then"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _encode(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
