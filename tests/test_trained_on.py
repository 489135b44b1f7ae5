"""data/trained_on.py, and what eval and calibrate do with it: a model knows the images it was
trained on by their content, so that figures on them are not taken for figures on new parts."""

import json
import shutil

import pytest

from anomalycli.data import trained_on
from anomalycli.detection.methods import AnomalyModel
from tests.conftest import one_clear_line, run_cli


def test_an_image_is_known_by_its_content_not_its_name(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(b"one image")
    second.write_bytes(b"another image")
    config = trained_on.recorded({}, [first, tmp_path / "missing.png"])
    assert len(config[trained_on.KEY]) == 1  # a file that cannot be read is not recorded
    renamed = tmp_path / "copy" / "renamed.png"
    renamed.parent.mkdir()
    shutil.copy(first, renamed)
    assert trained_on.seen(config, [first, renamed, second, tmp_path / "missing.png"]) == [True, True, False, False]
    assert trained_on.seen(trained_on.added(config, [second]), [second]) == [True]


def test_a_model_without_a_record_says_nothing_and_gets_none(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"pixels")
    assert trained_on.seen({}, [image]) is None
    # adapt's new images alone would make a record that misses the training images.
    assert trained_on.added({}, [image]) == {}


def test_eval_says_when_it_is_given_the_images_the_model_was_trained_on(parts, new_parts, patchcore_model, tmp_path):
    seen = run_cli("eval", patchcore_model, parts, "--json", tmp_path / "seen.json", "--report", tmp_path / "page")
    report = json.loads((tmp_path / "seen.json").read_text())
    assert report["trained_on"]["seen"] == report["trained_on"]["images"] == 36
    assert "the model was trained on all 36 images evaluated here" in " ".join(seen.output.split())
    assert '<p class="warning">The model was trained on all 36 images' in (tmp_path / "page" / "index.html").read_text()
    fresh = run_cli("eval", patchcore_model, new_parts, "--json", tmp_path / "new.json")
    assert json.loads((tmp_path / "new.json").read_text())["trained_on"] == {"seen": 0, "images": 36, "message": None, "unseen_point": None}
    assert "trained on" not in fresh.output
    # A mix: the point on the images the model has not seen is new_parts' own.
    mixed = _mixed(parts, new_parts, tmp_path / "mixed")
    output = " ".join(run_cli("eval", patchcore_model, mixed, "--json", tmp_path / "mixed.json", "--report", tmp_path / "mixed-page").output.split())
    assert "trained on 12 of the 48 images" in output and "measured on the 36 images it was not trained on" in output
    unseen = json.loads((tmp_path / "mixed.json").read_text())["trained_on"]["unseen_point"]
    alone = json.loads((tmp_path / "new.json").read_text())["operating_point"]
    assert (unseen["n_normal"], unseen["n_anomaly"]) == (alone["n_normal"], alone["n_anomaly"]) == (24, 12)
    # The same images, scored in other batches (an int8 search quantises each batch): within one image.
    assert unseen["recall"] == pytest.approx(alone["recall"], abs=1 / 12) and unseen["false_alarm_rate"] == pytest.approx(alone["false_alarm_rate"], abs=1 / 24)
    assert "Measured on the 36 images it was not trained on" in (tmp_path / "mixed-page" / "index.html").read_text()


def test_calibrate_on_data_leaves_out_the_images_the_model_was_trained_on(parts, new_parts, patchcore_model, tmp_path):
    message = one_clear_line(run_cli("calibrate", patchcore_model, parts, "--out", tmp_path / "a.safetensors", expect=1))
    assert "trained on every image" in message and "leave DATA out" in message
    assert not (tmp_path / "a.safetensors").exists()
    result = run_cli("calibrate", patchcore_model, _mixed(parts, new_parts, tmp_path / "mixed"), "--out", tmp_path / "b.safetensors")
    assert "left out 12 of the 48 images" in " ".join(result.output.split())
    calibration = AnomalyModel.load(tmp_path / "b.safetensors").calibration
    assert (calibration.n_normal, calibration.n_anomaly) == (24, 12)


def _mixed(parts, new_parts, folder):
    """new_parts' 36 images and 12 of parts' goods, under other names."""
    shutil.copytree(new_parts, folder)
    for image in sorted((parts / "good").glob("*.png"))[:12]:
        shutil.copy(image, folder / "good" / f"old-{image.name}")
    return folder


def test_adapt_leaves_out_the_images_the_model_was_trained_on_and_records_the_new_ones(parts, new_parts, patchcore_model, tmp_path):
    message = one_clear_line(run_cli("adapt", patchcore_model, parts / "good", "--out", tmp_path / "a.safetensors", expect=1))
    assert "got 0; 24 more were images it was trained on" in message
    goods = _mixed(parts, new_parts, tmp_path / "mixed") / "good"
    result = run_cli("adapt", patchcore_model, goods, "--out", tmp_path / "b.safetensors")
    assert "left out 12 images the model was trained on" in " ".join(result.output.split())
    assert "24 new good images joined the memory bank" in " ".join(result.output.split())
    adapted = AnomalyModel.load(tmp_path / "b.safetensors")
    assert all(trained_on.seen(adapted.config, sorted((new_parts / "good").glob("*.png"))))
