"""Atomic file output: a crash or Ctrl-C never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from anomalycli.errors import UsageError, UserError


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` once the block succeeds."""
    path = Path(path)
    if not overwrite and path.exists():
        raise UserError(already_there(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600): give it the mode a plain open() would, or the
        # replaced file's, so that colleagues who could read the old predictions can read the new.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unwritable_reason(folder: str | Path) -> str | None:
    """Why files cannot be written in ``folder`` (made first where it is missing), or None where
    they can; checked before a verb's work (a nameless file made and gone at once), not after it."""
    folder = Path(folder).absolute()
    for nearest in (folder, *folder.parents):
        if nearest.is_dir():
            if not os.access(nearest, os.W_OK | os.X_OK):
                return f"this user cannot write in {nearest}"
            try:  # permissions are not all: a read-only or pseudo file system (/proc) refuses files too
                with tempfile.TemporaryFile(dir=nearest):
                    return None
            except OSError as exc:
                return f"no file can be made in {nearest} ({exc.strerror or exc})"
        if nearest.exists() or nearest.is_symlink():
            return f"{nearest} is a file, not a folder"
    return None


def already_there(path: Path) -> str:
    return f"{path} already exists; choose another name or pass --overwrite to replace it"


def check_writable(path: Path | None, option: str, folder: bool = False, overwrite: bool = True) -> None:
    """One line, before any work, where the file ``path`` (a folder, with ``folder``) that ``option``
    names cannot be written: a typo through a file, a folder this user may not write in, or (not
    ``overwrite``) a file already there, which ``atomic_path`` would refuse only after the work."""
    if path is None:
        return
    if not overwrite and not folder and path.exists():
        raise UserError(already_there(path))
    reason = unwritable_reason(path if folder else path.parent)
    if reason is not None:
        raise UsageError(f"{option} {path}: {reason}; choose a path this user can write to")


def staging_folder(folder: Path) -> Path:
    """A new empty folder beside ``folder`` to build it in and rename into place, with the mode
    ``mkdir`` gives: mkdtemp's own is private (0700), and a report renamed from it opened for
    this user alone."""
    build = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    os.chmod(build, 0o777 & ~_umask())
    return build


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def new_run_dir(parent: str | Path = "runs", prefix: str = "train") -> Path:
    """Create ``parent/prefix-N`` with the first free N; never reuses an existing folder."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = parent / f"{prefix}-{n}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
