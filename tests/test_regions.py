"""Defect regions beside predict's verdicts: boxes and areas in each image's own pixels, masks at
its own size, the same from the model file and from its export."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import one_clear_line, run_cli


@pytest.fixture(scope="module")
def source(parts, tmp_path_factory):
    """Two defects at their own size, one stretched to 96 x 64 (the model squashes it to 64 x 64), two goods."""
    folder = tmp_path_factory.mktemp("regions") / "images"
    folder.mkdir()
    defects, goods = sorted((parts / "not-good").glob("*.png")), sorted((parts / "good").glob("*.png"))
    for path in [defects[0], defects[6], goods[0], goods[1]]:
        Image.open(path).save(folder / path.name)
    Image.open(defects[1]).resize((96, 64)).save(folder / "wide.png")
    return folder


def test_regions_and_masks_are_in_each_images_own_pixels(patchcore_model, source, tmp_path):
    run_cli("predict", patchcore_model, source, "--output", tmp_path / "p.json", "--masks", tmp_path / "masks", "--pixel-size", "0.5")
    rows = {r["path"].split("/")[-1]: r for r in json.loads((tmp_path / "p.json").read_text())["images"]}
    flagged = [name for name, r in rows.items() if r["verdict"] == "anomaly"]
    assert flagged and all(rows[name]["regions"] for name in flagged)  # a flagged part says where
    wide = rows["wide.png"]["regions"]
    assert wide and all(r["x"] + r["width"] <= 96 and r["y"] + r["height"] <= 64 for r in wide)
    for region in (r for row in rows.values() for r in row["regions"]):
        assert region["area_mm2"] == pytest.approx(region["area_px"] * 0.25, abs=1e-3) and region["peak"] >= region["mean"]
    written = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert written == sorted(f"{name[:-4]}_mask.png" for name, r in rows.items() if r["regions"])
    mask = Image.open(tmp_path / "masks" / "wide_mask.png")
    pixels = np.asarray(mask)
    assert mask.size == (96, 64) and set(np.unique(pixels).tolist()) <= {0, 255}
    # The mask's white pixels are the regions' pixels: their areas add up to it (at the image's size).
    assert int((pixels == 255).sum()) == pytest.approx(sum(r["area_px"] for r in wide), rel=0.1)


def test_flagged_images_without_a_region_are_counted_in_one_line(patchcore_model, source, tmp_path):
    from anomalycli.detection.methods import AnomalyModel

    placed = run_cli("predict", patchcore_model, source, "--output", tmp_path / "p.json").output
    assert "no region above the pixel threshold" not in placed  # every flagged part here says where
    # A pixel threshold no map reaches: the image score still flags, and no region says where.
    model = AnomalyModel.load(patchcore_model)
    model.config["pixel_threshold"] = {**model.config["pixel_threshold"], "value": 1e9}
    model.save(tmp_path / "high.safetensors")
    rows = json.loads((tmp_path / "p.json").read_text())["images"]
    flagged = sum(r["verdict"] == "anomaly" for r in rows)
    output = " ".join(run_cli("predict", tmp_path / "high.safetensors", source, "--output", tmp_path / "q.json").output.split())
    assert flagged and f"{flagged} of the {flagged} flagged image(s) have no region above the pixel threshold" in output


def test_csv_rows_carry_the_count_and_the_largest_area(patchcore_model, source, tmp_path):
    run_cli("predict", patchcore_model, source, "--output", tmp_path / "p.csv", "--pixel-size", "0.5")
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"regions", "largest_area_px", "largest_area_mm2"} <= set(rows[0])
    assert all(int(r["regions"]) >= 1 and float(r["largest_area_px"]) > 0 for r in rows if r["verdict"] == "anomaly")


def test_the_exported_file_gives_the_same_regions(patchcore_model, source, tmp_path):
    run_cli("export", patchcore_model, "--out", tmp_path / "m.onnx")
    run_cli("predict", patchcore_model, source, "--output", tmp_path / "a.json")
    run_cli("predict", tmp_path / "m.onnx", source, "--output", tmp_path / "b.json")
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["images"] for n in "ab")
    assert [[(r["x"], r["y"], r["width"], r["height"], r["area_px"]) for r in row["regions"]] for row in a] == [
        [(r["x"], r["y"], r["width"], r["height"], r["area_px"]) for r in row["regions"]] for row in b
    ]


def test_masks_need_a_model_with_a_pixel_threshold(classifier_model, source, tmp_path):
    result = run_cli("predict", classifier_model, source, "--masks", tmp_path / "masks", expect=2)
    assert "no pixel threshold" in one_clear_line(result)
    assert "above 0" in one_clear_line(run_cli("predict", classifier_model, source, "--pixel-size", "-1", expect=2))


def test_the_exported_file_outputs_the_defect_mask_at_its_pixel_threshold(patchcore_model, source, tmp_path):
    import onnxruntime

    from anomalycli.data.images import read_image_array

    run_cli("export", patchcore_model, "--out", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    meta = session.get_modelmeta().custom_metadata_map
    pixels = np.stack([read_image_array(p, 64).transpose(2, 0, 1) for p in sorted(source.glob("*.png"))])
    anomaly_map, defect_mask = session.run(["anomaly_map", "defect_mask"], {"images": pixels})
    assert defect_mask.dtype == np.uint8 and defect_mask.shape == anomaly_map.shape
    assert np.array_equal(defect_mask, (anomaly_map >= float(meta["pixel_threshold"])).astype(np.uint8))
    assert defect_mask.any() and "defect_mask" in meta["outputs"]


def test_two_images_of_one_name_get_two_heat_maps_and_masks_and_a_repeat_one(patchcore_model, parts, tmp_path):
    """a.png and a.jpg in one folder, and a list naming one image twice: each image's own files,
    none written over another's or refused as already there."""
    defects = sorted((parts / "not-good").glob("*.png"))
    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(defects[0]).save(folder / "a.png")
    Image.open(defects[1]).convert("RGB").save(folder / "a.jpg", quality=95)
    Image.open(defects[2]).save(folder / "b.png")
    run_cli("predict", patchcore_model, folder, "--heatmaps", tmp_path / "heat", "--masks", tmp_path / "masks", "--threshold", "0.01")
    assert sorted(p.name for p in (tmp_path / "heat").glob("*.png")) == ["a.jpg.png", "a.png.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a.jpg_mask.png", "a.png_mask.png", "b_mask.png"]
    listed = tmp_path / "list.txt"
    listed.write_text(f"{folder / 'b.png'}\n{folder / 'b.png'}\n")
    run_cli("predict", patchcore_model, listed, "--heatmaps", tmp_path / "heat2", "--masks", tmp_path / "masks2", "--threshold", "0.01")
    assert [p.name for p in (tmp_path / "heat2").rglob("*.png")] == ["b.png"] and [p.name for p in (tmp_path / "masks2").rglob("*.png")] == ["b_mask.png"]
