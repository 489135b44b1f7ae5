"""The image archive: what it keeps, in which order it lets go, its bounds, a restart and a full disk."""

from __future__ import annotations

import numpy as np
from PIL import Image

from anomalycli.deploy import archive as archives
from anomalycli.deploy.archive import Archive, ArchivePolicy, kind_of


class Clock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def image(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8), "L")


def files_of(root) -> list:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*") if p.is_file())


def test_every_flagged_and_error_image_is_kept_and_one_good_in_n_named_by_what_it_is(tmp_path):
    said = []
    kept = Archive(ArchivePolicy(tmp_path / "a", keep_good_every=3, min_free_mb=0), said.append, Clock())
    verdicts = ["normal"] * 7 + ["anomaly", "error", "normal"]
    names = [kept.keep(image(i), v, 0.91 if v == "anomaly" else 0.12, part_id=100 + i, recipe=2) for i, v in enumerate(verdicts)]
    assert [bool(n) for n in names] == [True, False, False, True, False, False, True, True, True, False]
    flagged = names[7]
    assert flagged.endswith("_part107_r2_NG_0.910.png") and kind_of(flagged) == "NG" and (tmp_path / "a" / flagged).is_file()
    assert kind_of(names[8]) == "ERR" and kind_of(names[0]) == "OK"
    assert files_of(tmp_path / "a") == sorted(n for n in names if n)


def test_over_a_bound_the_oldest_good_go_first_then_errors_and_flagged_last(tmp_path):
    kept = Archive(ArchivePolicy(tmp_path / "a", keep_good_every=1, max_files=4, min_free_mb=0), clock=Clock())
    order = ["anomaly", "normal", "error", "normal", "anomaly", "normal", "normal"]
    names = [kept.keep(image(i), v, 0.5, part_id=i) for i, v in enumerate(order)]
    left = files_of(tmp_path / "a")
    assert len(left) == 4 and len(kept) == 4
    # the goods went first (oldest first): the two flagged and the error stay, with the newest good
    assert left == sorted([names[0], names[2], names[4], names[6]])
    for v in ("normal", "normal", "normal"):
        kept.keep(image(9), v, 0.1)
    assert sorted(kind_of(n) for n in files_of(tmp_path / "a")) == ["ERR", "NG", "NG", "OK"]
    kept.keep(image(10), "anomaly", 0.9)  # the last good goes
    assert sorted(kind_of(n) for n in files_of(tmp_path / "a")) == ["ERR", "NG", "NG", "NG"]
    kept.keep(image(11), "anomaly", 0.9)  # no good left: the error goes
    assert sorted(kind_of(n) for n in files_of(tmp_path / "a")) == ["NG", "NG", "NG", "NG"]
    kept.keep(image(12), "anomaly", 0.9)  # only flagged ones: the oldest of them
    assert names[0] not in files_of(tmp_path / "a") and names[4] in files_of(tmp_path / "a")


def test_the_byte_bound_holds_counting_heat_maps_and_a_restart_goes_on_with_the_same_archive(tmp_path):
    policy = ArchivePolicy(tmp_path / "a", keep_good_every=1, max_bytes=12_000, min_free_mb=0)
    clock = Clock()
    kept = Archive(policy, clock=clock)
    for i in range(40):
        kept.keep(image(i), "anomaly" if i % 5 == 0 else "normal", 0.5, part_id=i, heatmap=image(100 + i) if i % 5 == 0 else None)
        on_disk = sum(p.stat().st_size for p in (tmp_path / "a").glob("*/*"))
        assert on_disk == kept.bytes <= policy.max_bytes
    heatmaps = [p for p in (tmp_path / "a").glob("*/*.heatmap.png")]
    assert heatmaps and all(p.with_name(p.name.replace(archives.HEATMAP_SUFFIX, ".png")).is_file() for p in heatmaps)
    from anomalycli.data.images import list_images  # predict or review over the archive: its images, never their heat maps

    assert sorted(list_images(tmp_path / "a")[0]) == sorted(p for p in (tmp_path / "a").glob("*/*.png") if p not in heatmaps)
    again = Archive(policy, clock=clock)  # started again: it knows what is there, and in which order
    assert len(again) == len(kept) and again.bytes == kept.bytes
    assert [k.name for k in again.kept["NG"]] == [k.name for k in kept.kept["NG"]]


def test_images_older_than_the_age_bound_go(tmp_path):
    clock = Clock()
    kept = Archive(ArchivePolicy(tmp_path / "a", keep_good_every=1, max_age_days=1, min_free_mb=0), clock=clock)
    old = kept.keep(image(0), "anomaly", 0.9)
    clock.now += 2 * 86400
    new = kept.keep(image(1), "normal", 0.1)
    assert files_of(tmp_path / "a") == [new] and old != new


def test_a_disk_without_room_keeps_nothing_and_says_so_once_and_a_write_that_fails_loses_only_the_image(tmp_path, monkeypatch):
    said = []
    kept = Archive(ArchivePolicy(tmp_path / "a", keep_good_every=1, min_free_mb=10**12), said.append, Clock())
    assert [kept.keep(image(i), "anomaly", 0.9) for i in range(3)] == ["", "", ""]
    assert files_of(tmp_path / "a") == [] and kept.counts["refused"] == 3
    assert len([s for s in said if "no image is kept until there is more" in s]) == 1

    kept = Archive(ArchivePolicy(tmp_path / "b", keep_good_every=1, min_free_mb=0), said.append, Clock())

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    assert kept.keep(image(0), "anomaly", 0.9) == "" and kept.keep(image(1), "anomaly", 0.9) == ""
    assert files_of(tmp_path / "b") == [] and list((tmp_path / "b").rglob("*.tmp")) == []
    assert len([s for s in said if "No space left on device" in s]) == 1
