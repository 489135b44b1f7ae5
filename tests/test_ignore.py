"""Don't-care regions: a label where the mask says ignore never flags a part, defects elsewhere
are caught as before, and every engine and the export honour the mask alike."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from anomalycli.deploy import onnx_model
from anomalycli.detection import ignore
from anomalycli.detection.methods import AnomalyModel
from tests.conftest import one_clear_line, run_cli

CORNER = 24  # the ignored square, top left, in the 64 px images


@pytest.fixture(scope="module")
def mask(tmp_path_factory):
    path = tmp_path_factory.mktemp("ignore") / "label.png"
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).rectangle([0, 0, CORNER - 1, CORNER - 1], fill=255)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def labelled(parts, tmp_path_factory):
    """The good parts with a label printed in the ignored corner: black text on white, each different."""
    folder = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for path in sorted((parts / "good").glob("*.png")):
        image = Image.open(path).convert("RGB")
        draw = ImageDraw.Draw(image)
        draw.rectangle([2, 2, CORNER - 3, CORNER - 3], fill=(255, 255, 255))
        for row in range(4, CORNER - 6, 4):
            draw.line([(4, row), (4 + int(rng.integers(6, CORNER - 8)), row)], fill=(0, 0, 0), width=2)
        image.save(folder / path.name)
    return folder


@pytest.fixture(scope="module")
def ignoring_model(parts, mask, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "ignoring"
    run_cli("train", parts, "--method", "patchcore", "--image-size", "64", "--coreset-ratio", "0.1", "--ignore", mask, "--run-dir", run)
    return run / "model.safetensors"


def flagged(model, folder) -> int:
    output = run_cli("predict", model, folder).output
    return int(output.split(" of ")[0].split()[-1])


def test_a_label_in_the_ignored_corner_never_flags_a_part_and_defects_are_caught_as_before(parts, patchcore_model, ignoring_model, labelled):
    assert flagged(patchcore_model, labelled) >= 20  # without the mask, the labels flag the parts
    assert flagged(ignoring_model, labelled) <= 2  # with it, about the announced false alarms (24 goods)
    assert flagged(ignoring_model, parts / "not-good") >= flagged(patchcore_model, parts / "not-good") - 1


def test_the_mask_is_kept_in_the_model_and_the_export_scores_as_the_model_does(ignoring_model, labelled, mask, tmp_path):
    model = AnomalyModel.load(ignoring_model)
    kept = ignore.mask_of(model.config)
    assert kept.shape == (64, 64) and kept[:CORNER, :CORNER].all() and kept.sum() == CORNER * CORNER
    run_cli("export", ignoring_model, "--out", tmp_path / "m.onnx")
    exported = onnx_model.load(tmp_path / "m.onnx")
    stored = onnx_model.stored_in(ignoring_model)  # what predict runs by default: the model file's own graph
    images = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in sorted(labelled.glob("*.png"))])
    raw, _ = model.score(images)
    for graph in (exported, stored):
        raw_graph, _ = graph.score(images, with_maps=False)
        assert torch.allclose(torch.from_numpy(raw_graph), raw, rtol=1e-4, atol=1e-4 * float(raw.abs().max()))


def test_ignore_mistakes_are_one_clear_line(parts, mask, tmp_path):
    white = tmp_path / "white.png"
    Image.new("L", (64, 64), 255).save(white)
    assert "covers the whole image" in one_clear_line(
        run_cli("train", parts, "--method", "patchcore", "--ignore", white, "--run-dir", tmp_path / "a", expect=1)
    )
    assert not (tmp_path / "a").exists()  # said before a run folder is made
    assert "no such file" in one_clear_line(
        run_cli("train", parts, "--method", "patchcore", "--ignore", tmp_path / "none.png", "--run-dir", tmp_path / "b", expect=2)
    )
    assert "classifier has none" in one_clear_line(run_cli("train", parts, "--method", "classifier", "--ignore", mask, "--run-dir", tmp_path / "c", expect=2))
    (tmp_path / "notes.json").write_text('{"points": [1, 2]}')
    circle = labelme(tmp_path / "circle.json", [("circle", [[5, 5], [9, 9]])])
    for shapes, said in ((tmp_path / "notes.json", "not a LabelMe file"), (circle, "shapes of type circle")):
        assert said in one_clear_line(run_cli("train", parts, "--method", "patchcore", "--ignore", shapes, "--run-dir", tmp_path / "d", expect=1))
    assert not (tmp_path / "d").exists()


def labelme(path, shapes, size=(64, 64)):
    """A file as LabelMe saves it (the keys read here, and some it adds)."""
    shapes = [{"label": "date code", "points": points, "shape_type": kind, "flags": {}} for kind, points in shapes]
    path.write_text(
        json.dumps({"version": "5.4.1", "shapes": shapes, "imagePath": "part.png", "imageData": None, "imageWidth": size[0], "imageHeight": size[1]})
    )
    return path


def test_a_labelme_file_of_shapes_masks_as_the_painted_mask_does(mask, tmp_path):
    square = labelme(tmp_path / "square.json", [("rectangle", [[CORNER - 1, CORNER - 1], [0, 0]])])
    assert np.array_equal(ignore.read_masks([square], 64), ignore.read_masks([mask], 64))
    # A triangle drawn on a 640 px image, resized as the images are: its corner is in, the opposite corner out.
    triangle = labelme(tmp_path / "triangle.json", [("polygon", [[0, 0], [639, 0], [0, 639]])], size=(640, 640))
    both = ignore.read_masks([square, triangle], 32)
    assert both[0, 0] and both[0, 30] and both[30, 0] and not both[31, 31] and not both[20, 20]
    assert both.sum() == ignore.read_masks([triangle], 32).sum()  # the square lies inside the triangle


def test_heat_maps_draw_the_ignored_region_in_grey(ignoring_model, labelled, tmp_path):
    run_cli("predict", ignoring_model, labelled, "--heatmaps", tmp_path / "heat")
    heat = np.asarray(Image.open(next((tmp_path / "heat").glob("*.png"))).convert("RGB")).astype(int)
    outline = heat[CORNER - 1, CORNER // 2]  # the region's lower edge
    assert tuple(outline) == (128, 128, 128)
    inside = heat[CORNER // 2, CORNER // 2]
    assert abs(inside[0] - inside[1]) < 40 and abs(inside[1] - inside[2]) < 40  # greyed
