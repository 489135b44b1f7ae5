"""The image archive: what a line keeps of the parts it judged, within bounds it never passes.

Every flagged (NG) and every error image is kept, and one good image in ``keep_good_every``. The
archive stays within ``max_files``, ``max_bytes`` and ``max_age_days``: over a bound, the oldest
good image goes first, then the oldest error image, and flagged ones last; and it never writes
where the disk has less than ``min_free_mb`` left (it makes room by the same order first, then
keeps nothing until there is space, saying so once).

A file's name says what it is, sortable by time: ``20261205T101530.123Z_part42_r1_NG_0.873.png``
(time in UTC, part ID, recipe, verdict OK/NG/ERR, score), under a folder per day; a flagged
image's heat map lies beside it (``..._NG_0.873.heatmap.png``, for ``anomaly review``). The order of
eviction is read from the names alone, so a restarted station goes on with the same archive.
Files are written atomically (a kill leaves a whole file or none).
"""

from __future__ import annotations

import collections
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from PIL import Image

from anomalycli import files
from anomalycli.data.images import HEATMAP_SUFFIX, is_heatmap

VERDICT_NAMES = {"normal": "OK", "anomaly": "NG", "error": "ERR"}
EVICTION_ORDER = ("OK", "ERR", "NG")  # the kinds that go first when a bound is reached
PNG_LEVEL = 1  # fast PNG compression: the archive is written between a part's verdict and its row


@dataclass
class ArchivePolicy:
    path: Path
    keep_good_every: int = 100  # one good image in N (0: none)
    max_bytes: int | None = None
    max_files: int | None = None
    max_age_days: float | None = None
    min_free_mb: float = 500.0


@dataclass
class _Kept:
    name: str  # relative to the archive
    bytes: int


class Archive:
    def __init__(self, policy: ArchivePolicy, say: Callable[[str], None] = print, clock: Callable[[], float] = time.time):
        self.policy, self.say, self.clock = policy, say, clock
        self.root = Path(policy.path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.kept: dict[str, collections.deque[_Kept]] = {kind: collections.deque() for kind in EVICTION_ORDER}
        self.bytes = 0
        self.goods_seen = 0
        self.counts = collections.Counter()  # kept, evicted, refused (disk low)
        self._disk_low = False
        for path in sorted(self.root.glob("*/*"), key=lambda p: p.name):
            if is_heatmap(path) or not path.is_file():
                continue
            kind = kind_of(path.name)
            if kind is not None:
                self._add(path.relative_to(self.root).as_posix(), kind)

    def __len__(self) -> int:
        return sum(len(q) for q in self.kept.values())

    def keep(
        self, image: Image.Image | Path, verdict: str, score: float, part_id: int | str = "", recipe: int | str = "", heatmap: Image.Image | None = None
    ) -> str:
        """Keep ``image`` (pixels, written as PNG, or an image file, copied as it is) where the
        policy says (every NG and error, one good in N); its name relative to the archive, or ""
        where it was not kept."""
        kind = VERDICT_NAMES[verdict]
        if kind == "OK":
            self.goods_seen += 1
            every = self.policy.keep_good_every
            if not every or (self.goods_seen - 1) % every:
                return ""
        self._evict_old()
        if not self._room():
            self.counts["refused"] += 1
            return ""
        name = self._name(kind, score, part_id, recipe, ".png" if isinstance(image, Image.Image) else Path(image).suffix.lower())
        try:
            with files.atomic_path(self.root / name) as tmp:
                if isinstance(image, Image.Image):
                    image.save(tmp, format="PNG", compress_level=PNG_LEVEL)
                else:
                    shutil.copyfile(image, tmp)
            if heatmap is not None:
                with files.atomic_path(self.root / heatmap_name(name)) as tmp:
                    heatmap.save(tmp, format="PNG", compress_level=PNG_LEVEL)
        except OSError as exc:  # a full or failing disk: the part's verdict goes on without its image
            (self.root / name).unlink(missing_ok=True)
            self.counts["failed"] += 1
            if not self.counts["failed"] - 1:
                self.say(f"archive: cannot write {self.root / name}: {exc.strerror or exc}; the verdicts go on, the image is not kept (said once)")
            return ""
        self._add(name, kind)
        self.counts["kept"] += 1
        self._evict_over()
        return name

    def _name(self, kind: str, score: float, part_id, recipe, suffix: str) -> str:
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"
        score_text = "nan" if score != score else f"{score:.3f}"
        base = f"{now:%Y-%m-%d}/{stamp}_part{part_id}_r{recipe}_{kind}_{score_text}"
        name, n = f"{base}{suffix}", 0
        while (self.root / name).exists():  # two parts in one millisecond
            n += 1
            name = f"{base}-{n}{suffix}"
        return name

    def _add(self, name: str, kind: str) -> None:
        size = sum(_size(self.root / n) for n in (name, heatmap_name(name)))
        self.kept[kind].append(_Kept(name, size))
        self.bytes += size

    def _evict_over(self) -> None:
        p = self.policy
        while len(self) and ((p.max_bytes is not None and self.bytes > p.max_bytes) or (p.max_files is not None and len(self) > p.max_files)):
            self._evict_one()

    def _evict_old(self) -> None:
        if self.policy.max_age_days is None:
            return
        oldest_kept = datetime.fromtimestamp(self.clock() - self.policy.max_age_days * 86400, timezone.utc).strftime("%Y%m%dT%H%M%S")
        for queue in self.kept.values():
            while queue and Path(queue[0].name).name[:15] < oldest_kept:
                self._remove(queue.popleft())

    def _evict_one(self) -> bool:
        for kind in EVICTION_ORDER:
            if self.kept[kind]:
                self._remove(self.kept[kind].popleft())
                return True
        return False

    def _remove(self, kept: _Kept) -> None:
        for name in (kept.name, heatmap_name(kept.name)):
            (self.root / name).unlink(missing_ok=True)
        self.bytes -= kept.bytes
        self.counts["evicted"] += 1

    def _room(self) -> bool:
        """Whether the disk has ``min_free_mb`` left, evicting in order to make it; says when it turns."""
        while _free_mb(self.root) < self.policy.min_free_mb and self._evict_one():
            pass
        low = _free_mb(self.root) < self.policy.min_free_mb
        if low != self._disk_low:
            self.say(
                f"archive: under {self.policy.min_free_mb:g} MB free on {self.root}: no image is kept until there is more"
                if low
                else "archive: space again: images are kept again"
            )
            self._disk_low = low
        return not low


def kind_of(name: str) -> str | None:
    """OK, NG or ERR from an archived file's name, or None for a file not of the archive."""
    parts = Path(name).stem.split("_")
    return parts[-2] if len(parts) >= 5 and parts[-2] in EVICTION_ORDER else None


def heatmap_name(name: str) -> str:
    """The heat map's file beside an archived image's."""
    return Path(name).with_suffix("").as_posix() + HEATMAP_SUFFIX


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _free_mb(folder: Path) -> float:
    return shutil.disk_usage(folder).free / 2**20
