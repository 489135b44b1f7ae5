import os
import stat
from pathlib import Path

import pytest

from anomalycli import files
from anomalycli.errors import UsageError


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_mode_a_plain_open_gives(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_text(tmp_path / "rows.csv", "a\n")
        (tmp_path / "plain.csv").write_text("a\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "rows.csv") == mode(tmp_path / "plain.csv") == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("old\n")
    path.chmod(0o640)
    files.write_text(path, "new\n")
    assert path.read_text() == "new\n" and mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with files.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["rows.csv"]


def test_a_folder_is_writable_where_its_nearest_existing_folder_is(tmp_path, monkeypatch):
    assert files.unwritable_reason(tmp_path / "new" / "deeper") is None  # made when written, not by the check
    assert not (tmp_path / "new").exists()
    (tmp_path / "notes.txt").write_text("x")
    assert files.unwritable_reason(tmp_path / "notes.txt" / "out") == f"{tmp_path / 'notes.txt'} is a file, not a folder"
    assert files.unwritable_reason(tmp_path / "notes.txt") == f"{tmp_path / 'notes.txt'} is a file, not a folder"
    # A folder this user may not write in (root may write anywhere, so the permission is asked of a stand-in).
    monkeypatch.setattr(files.os, "access", lambda path, mode: Path(path) != tmp_path)
    assert files.unwritable_reason(tmp_path / "new") == f"this user cannot write in {tmp_path}"
    assert files.unwritable_reason(tmp_path / "notes.txt" / "out") == f"{tmp_path / 'notes.txt'} is a file, not a folder"


def test_a_file_system_that_refuses_files_whatever_the_permissions_is_unwritable(tmp_path):
    # /proc takes no new file, even from root whose permission check passes everywhere.
    assert files.unwritable_reason("/proc/anomalycli-rows") is not None
    assert not list(tmp_path.iterdir()) and files.unwritable_reason(tmp_path) is None
    assert not list(tmp_path.iterdir())  # the probe file is gone


def test_an_option_naming_an_unwritable_path_is_a_usage_error_naming_the_option(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    files.check_writable(None, "--output")  # not given: nothing to check
    files.check_writable(tmp_path / "new" / "rows.csv", "--output")
    with pytest.raises(UsageError, match=r"^--output .*rows.csv: .*notes.txt is a file, not a folder; choose a path"):
        files.check_writable(tmp_path / "notes.txt" / "rows.csv", "--output")
    with pytest.raises(UsageError, match="--heatmaps"):
        files.check_writable(tmp_path / "notes.txt", "--heatmaps", folder=True)
    files.check_writable(tmp_path / "notes.txt", "--output")  # a file replaced where it stands: its folder is what counts
