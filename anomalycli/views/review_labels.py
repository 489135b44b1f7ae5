"""Reviewing what a model flagged: the order a person looks in, their decisions, and where they go.

``anomaly review`` shows a shift's images in the browser (``review_server.py``); a person marks each
good or defective. This module is all of it but the web: the order (the decisions that matter
first), the labels CSV every decision is saved to at once, and the copy of reviewed images into
a data set's class folders for the next ``train``. The labels CSV is the one ``train``,
``eval`` and ``calibrate`` take with ``--labels`` (``filename,label,defect_type``, file names
relative to SOURCE).
"""

from __future__ import annotations

import contextlib
import csv
import filecmp
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from anomalycli.errors import UserError
from anomalycli.files import atomic_path

LABELS_COLUMNS = ("filename", "label", "defect_type")
# A 0..1 score this close to the threshold (0.5) is a close call: reviewed right after the flagged images.
UNCERTAIN_BAND = 0.1
FILTERS = ("flagged", "uncertain", "unlabelled", "all")


@dataclass
class Item:
    """One scored image as the review shows it."""

    name: str  # the path relative to SOURCE, as the labels CSV writes it
    path: Path
    score: float  # 0..1, the threshold at 0.5; nan when unreadable
    verdict: str  # anomaly | normal | unreadable

    @property
    def uncertain(self) -> bool:
        return abs(self.score - 0.5) < UNCERTAIN_BAND

    @property
    def group(self) -> int:
        """0: flagged, clearly; 1: a close call on either side; 2: the rest; 3: unreadable."""
        if self.verdict == "unreadable":
            return 3
        if self.uncertain:
            return 1
        return 0 if self.verdict == "anomaly" else 2


def review_order(items: list[Item]) -> list[int]:
    """Indices of ``items`` in the order to review them: the flagged images by score (highest
    first), then the closest calls on both sides of the threshold (closest first), then the rest
    by score, then the unreadable ones."""

    def key(i: int):
        item = items[i]
        within = abs(item.score - 0.5) if item.group == 1 else (0.0 if item.group == 3 else -item.score)
        return (item.group, within, item.name)

    return sorted(range(len(items)), key=key)


def matches(item: Item, decided: bool, kind: str) -> bool:
    """Whether ``item`` passes the filter ``kind`` (one of ``FILTERS``)."""
    return {"flagged": item.verdict == "anomaly", "uncertain": item.group == 1, "unlabelled": not decided, "all": True}[kind]


def default_labels_path(source: Path) -> Path:
    """Where a review of SOURCE saves its labels unless told: beside it, ``<name>-labels.csv``."""
    source = Path(source)
    stem = source.stem if source.is_file() else source.name
    return source.parent / f"{stem or 'images'}-labels.csv"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s lock file: two reviews of one labels file take turns."""
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: os.replace is still atomic, a rare lost update is the worst case
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LabelStore:
    """The labels CSV of a review: every decision written at once, atomically, under a lock.

    Each write reads the file again under the lock and changes one row, so a second review of the
    same file (another tab, another person) loses nothing and never sees a half-written file.
    """

    def __init__(self, path: Path, normal_class: str, defect_class: str):
        self.path, self.normal_class, self.defect_class = Path(path), normal_class, defect_class

    def read(self) -> dict[str, tuple[str, str]]:
        """name -> (label, defect_type) of every decision so far."""
        if not self.path.exists():
            return {}
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not set(LABELS_COLUMNS[:2]) <= set(reader.fieldnames):
                    raise UserError(f"{self.path} is not a labels CSV (its header must be {','.join(LABELS_COLUMNS)}); pass another --labels FILE")
                return {row["filename"]: (row["label"], row.get("defect_type") or "") for row in reader if row.get("filename")}
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"cannot read the labels CSV {self.path} ({type(exc).__name__}); pass another --labels FILE") from None

    def decide(self, name: str, defective: bool | None, defect_type: str = "") -> dict[str, tuple[str, str]]:
        """Save one decision (``None`` removes it, for undo) and return every decision."""
        with _locked(self.path):
            decisions = self.read()
            if defective is None:
                decisions.pop(name, None)
            else:
                decisions[name] = (self.defect_class, defect_type.strip()) if defective else (self.normal_class, "")
            with atomic_path(self.path) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    writer.writerow(LABELS_COLUMNS)
                    writer.writerows([name, label, kind] for name, (label, kind) in sorted(decisions.items()))
            return decisions


@dataclass
class CopyReport:
    copied: int = 0
    already_there: int = 0
    missing: int = 0


def copy_into(labels: Path, base: Path, into: Path, normal_class: str) -> CopyReport:
    """Copy every reviewed image into ``into``'s class folders: good ones into ``normal_class/``,
    defective ones into a folder named after their defect type (or their label without one).

    A file is never overwritten: the same name with other contents gets a free ``-N`` suffix,
    and an identical file already there is not copied again (so copying twice adds nothing).
    """
    report = CopyReport()
    for name, (label, defect_type) in sorted(LabelStore(labels, normal_class, "").read().items()):
        source = base / name
        if not source.is_file():
            report.missing += 1
            continue
        folder = into / (normal_class if label == normal_class else _folder_name(defect_type or label))
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        n = 1
        while target.exists():
            if filecmp.cmp(source, target, shallow=False):
                break
            target = folder / f"{source.stem}-{n}{source.suffix}"
            n += 1
        if target.exists():
            report.already_there += 1
            continue
        with atomic_path(target, overwrite=False) as tmp:
            shutil.copyfile(source, tmp)
        report.copied += 1
    return report


def _folder_name(kind: str) -> str:
    """A defect type typed in the browser as a safe folder name (no separators, no dot-only names)."""
    cleaned = "".join(c if c.isalnum() or c in " _-" else "_" for c in kind).strip() or "defect"
    return cleaned
