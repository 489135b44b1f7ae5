import numpy as np
import pytest
from PIL import Image

from anomalycli.data.layouts import defect_type_from_name, discover, is_good_name, read_manifest, write_manifest
from anomalycli.data.synthetic import make_part
from anomalycli.errors import UserError


def _png(path, size=32, mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value).save(path)
    return path


def test_class_folders_give_labels_and_defect_types(parts):
    dataset = discover(parts)
    assert dataset.layout.startswith("class folders")
    assert sum(s.label == 0 for s in dataset.samples) == 24
    assert {s.defect_type for s in dataset.samples if s.label} == {"scratch", "spot"}
    assert all(s.mask is not None for s in dataset.samples if s.label)
    assert not any("ground_truth" in str(s.path) for s in dataset.samples), "masks must never be taken for images"


def test_split_folders_and_subfolder_defect_types(tmp_path):
    _png(tmp_path / "train/good/a.png")
    _png(tmp_path / "train/bad/crack/b.png")
    _png(tmp_path / "val/good/c.png")
    _png(tmp_path / "test/bad/007.png")
    dataset = discover(tmp_path, normal_class="good")
    assert dataset.layout.startswith("split folders")
    by_name = {s.path.name: s for s in dataset.samples}
    assert by_name["b.png"].defect_type == "crack" and by_name["b.png"].split == "train"
    assert by_name["c.png"].split == "val" and by_name["c.png"].label == 0
    assert by_name["007.png"].defect_type == "bad" and by_name["007.png"].split == "test"


def test_mvtec_layout_matches_masks_without_split_folder(tmp_path):
    _png(tmp_path / "train/good/000.png")
    _png(tmp_path / "test/good/000.png")
    _png(tmp_path / "test/scratch_head/000.png")
    _png(tmp_path / "ground_truth/scratch_head/000_mask.png")
    dataset = discover(tmp_path)
    assert dataset.layout.startswith("MVTec AD")
    defect = [s for s in dataset.samples if s.label][0]
    assert defect.defect_type == "scratch_head"
    assert defect.mask == tmp_path / "ground_truth/scratch_head/000_mask.png"
    assert len(dataset.samples) == 3


def test_defect_type_from_file_name():
    assert defect_type_from_name("scratch_head001") == "scratch_head"
    assert defect_type_from_name("thread-top 12") == "thread-top"
    assert defect_type_from_name("007") is None


@pytest.mark.parametrize("good", ["OK", "ok", "Normal", "pass", "iO", "Good"])
def test_the_good_parts_are_found_under_the_names_lines_give_them(tmp_path, good):
    _png(tmp_path / "train" / good / "a.png")
    _png(tmp_path / "train" / "NG" / "b.png")
    _png(tmp_path / "test" / good / "c.png")
    dataset = discover(tmp_path)
    assert dataset.normal_class == good and sorted((s.class_name == good, s.label) for s in dataset.samples) == [(False, 1), (True, 0), (True, 0)]
    assert dataset.layout.endswith(f"; good parts: {good}")


def test_the_good_parts_class_is_not_guessed_between_two_names_nor_over_good_or_the_users(tmp_path):
    for name in ("OK", "normal", "NG"):
        _png(tmp_path / name / "a.png")
    assert discover(tmp_path).normal_class == "good"  # two candidates: the errors ask for --normal-class
    assert [s.label for s in discover(tmp_path, normal_class="NG").samples if s.class_name == "NG"] == [0]
    _png(tmp_path / "good" / "b.png")
    dataset = discover(tmp_path)
    assert dataset.normal_class == "good" and dataset.layout == "class folders (class/)"
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\ngood/b.png,OK\nNG/a.png,NG\n")
    assert [s.label for s in discover(tmp_path, labels=labels).samples] == [0, 1]


def test_a_models_own_good_class_comes_first_and_a_line_named_otherwise_is_still_found(tmp_path):
    for name in ("OK", "NG", "pass"):
        _png(tmp_path / name / "a.png")
    assert discover(tmp_path, model_class="pass").normal_class == "pass"  # before the two candidates
    assert discover(tmp_path, model_class="good").normal_class == "good"  # two candidates: not guessed
    (tmp_path / "pass").rename(tmp_path / "bad")
    assert discover(tmp_path, model_class="good").normal_class == "OK"
    assert discover(tmp_path, normal_class="NG", model_class="OK").normal_class == "NG"  # the user's word first
    assert discover(tmp_path, normal_class="ng").normal_class == "NG"  # in any case


@pytest.mark.parametrize(
    "name, good",
    [
        ("gut (iO)", True),
        ("OK parts", True),
        ("01_OK", True),
        ("Gutteile", True),
        ("i.O.", True),
        ("no-defect", True),
        ("not-good", False),
        ("n.i.O.", False),
        ("NIO-Teile", False),
        ("NOK", False),
        ("good_and_bad", False),
        ("Kratzer & Dellen", False),
        ("goodness", False),
    ],
)
def test_the_names_lines_give_good_parts_word_by_word(name, good):
    assert is_good_name(name) == good


def test_a_german_lines_folders_are_read_with_their_good_class_found(tmp_path):
    _png(tmp_path / "gut (iO)" / "a.png")
    _png(tmp_path / "gut (iO)" / "b.png")
    _png(tmp_path / "Kratzer & Dellen" / "c.png")
    _png(tmp_path / "n.i.O. sonstige" / "d.png")
    dataset = discover(tmp_path)
    assert dataset.normal_class == "gut (iO)"
    assert {s.path.name: s.label for s in dataset.samples} == {"a.png": 0, "b.png": 0, "c.png": 1, "d.png": 1}


def test_labels_csv_for_a_flat_folder(tmp_path):
    _png(tmp_path / "img1.png")
    _png(tmp_path / "img2.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label,defect_type\nimg1.png,good,\nimg2.png,nok,dent\n")
    dataset = discover(tmp_path, labels=labels)
    assert [(s.label, s.defect_type) for s in dataset.samples] == [(0, None), (1, "dent")]


def test_a_manifest_written_on_windows_names_its_folders_with_backslashes(tmp_path):
    _png(tmp_path / "good" / "a.png")
    _png(tmp_path / "dent" / "b.png")
    (tmp_path / "split.csv").write_text("path,label,defect_type,split\ngood\\a.png,good,,train\ndent\\b.png,dent,dent,test\n")
    dataset = read_manifest(tmp_path, tmp_path / "split.csv", "good")
    assert [(s.path, s.split) for s in dataset.samples] == [(tmp_path / "good" / "a.png", "train"), (tmp_path / "dent" / "b.png", "test")]


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("filename;label;defect_type\r\nSchraube_ä.png;good;\r\nimg2.png;nok;Delle\r\n", "cp1252"),  # Excel's "CSV", German Windows
        ("\ufefffilename;label;defect_type\r\nSchraube_ä.png;good;\r\nimg2.png;nok;Delle\r\n", "utf-8"),  # Excel's "CSV UTF-8"
        ("filename\tlabel\tdefect_type\nSchraube_ä.png\tgood\t\nimg2.png\tnok\tDelle\n", "utf-8"),  # tab-separated
    ],
)
def test_a_labels_csv_as_a_spreadsheet_saves_it_is_read(tmp_path, text, encoding):
    _png(tmp_path / "Schraube_ä.png")
    _png(tmp_path / "img2.png")
    (tmp_path / "labels.csv").write_bytes(text.encode(encoding))
    dataset = discover(tmp_path, labels=tmp_path / "labels.csv")
    assert [(s.path.name, s.label, s.defect_type) for s in dataset.samples] == [("Schraube_ä.png", 0, None), ("img2.png", 1, "Delle")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,class\nimg1.png,good\n", "needs the columns filename,label"),
        ("filename,label\nimg1.png,good\nmissing.png,nok\n", "missing"),
        ("filename,label\nimg1.png,good\nimg1.png,nok\n", "listed twice"),
        ("filename,label\nimg1.png,bad\n", "no image labelled 'good'"),
        ("filename,label\nimg1.png,\n", "empty label"),
    ],
)
def test_bad_labels_csv_is_a_user_error(tmp_path, content, message):
    _png(tmp_path / "img1.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    with pytest.raises(UserError, match=message):
        discover(tmp_path, labels=labels)


def test_manifest_round_trip_and_outside_paths(parts, tmp_path):
    dataset = discover(parts)
    samples = [s.__class__(**{**s.__dict__, "split": "train"}) for s in dataset.samples]
    out = tmp_path / "m.csv"
    write_manifest(out, parts, samples, "split")
    again = read_manifest(parts, out, "good")
    assert [(s.path, s.label, s.defect_type, s.split) for s in again.samples] == [(s.path, s.label, s.defect_type, s.split) for s in samples]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,defect_type,split\n../../etc/passwd,good,,train\n")
    with pytest.raises(UserError, match="outside"):
        read_manifest(parts, bad, "good")


def test_a_data_set_of_links_to_images_elsewhere_reads_its_own_manifest(tmp_path):
    """A data set gathered by links, not copies: its files are inside DATA where they lie."""
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / "store" / name)
    (tmp_path / "data" / "good").mkdir(parents=True)
    (tmp_path / "data" / "dent").mkdir()
    for name, folder in (("a.png", "good"), ("b.png", "good"), ("c.png", "dent")):
        (tmp_path / "data" / folder / name).symlink_to(tmp_path / "store" / name)
    data = tmp_path / "data"
    write_manifest(tmp_path / "m.csv", data, discover(data).samples, "fold")
    again = read_manifest(data, tmp_path / "m.csv", "good")
    assert [(s.path, s.label) for s in again.samples] == [(data / "dent" / "c.png", 1), (data / "good" / "a.png", 0), (data / "good" / "b.png", 0)]
    (tmp_path / "out.csv").write_text("path,label,defect_type,fold\ngood/../../store/a.png,good,,0\n")
    with pytest.raises(UserError, match="outside"):
        read_manifest(data, tmp_path / "out.csv", "good")


def test_missing_and_empty_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(UserError, match="no images"):
        discover(tmp_path)


def test_synthetic_defect_is_drawn_where_its_mask_is():
    image, mask = make_part(64, np.random.default_rng(0), "spot")
    pixels, inside = np.asarray(image, dtype=float), np.asarray(mask) > 0
    assert inside.any() and pixels[inside].mean() < 100
