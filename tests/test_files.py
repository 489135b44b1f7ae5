import os
import stat

import pytest

from anomalycli import files


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
