"""Squash or letterbox: the framed input keeps the image's shape and mirrors its edges, the map
comes back in the image's own frame, and for a model trained with ``--framing letterbox`` predict,
the exported file and the line give the same regions, in each image's own pixels."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from anomalycli.data import framing
from anomalycli.data.images import read_image_array
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection.methods import AnomalyModel
from tests.conftest import one_clear_line, run_cli


def gradient(width: int, height: int) -> Image.Image:
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8), "RGB")


def test_a_letterboxed_image_keeps_its_shape_and_mirrors_its_edges():
    assert framing.content_box(200, 100, 64) == (0, 16, 64, 32)
    assert framing.content_box(100, 400, 64) == (24, 0, 16, 64)
    image = gradient(200, 100)
    framed = framing.framed(image, 64, framing.LETTERBOX)
    inside = np.asarray(image.resize((64, 32), Image.BILINEAR, reducing_gap=3.0))
    assert framed.shape == (64, 64, 3) and np.array_equal(framed[16:48], inside)
    assert np.array_equal(framed[15], framed[16]) and np.array_equal(framed[:16], inside[:16][::-1])  # mirrored above
    assert np.array_equal(framed[48:], inside[16:][::-1])  # and below
    squashed = framing.framed(image, 64, framing.SQUASH)
    assert np.array_equal(squashed, np.asarray(image.resize((64, 64), Image.BILINEAR, reducing_gap=3.0)))
    # Square images frame alike either way.
    square = gradient(128, 128)
    assert np.array_equal(framing.framed(square, 64, framing.LETTERBOX), framing.framed(square, 64, framing.SQUASH))


def test_a_map_comes_back_in_the_images_own_frame():
    # A hot spot at (150, 25) of a 200 x 100 image: at (48, 8) of its letterboxed 64 px frame
    # (content rows 16..47), at (48, 16) of the image's own frame at 64 x 64.
    letterboxed = np.zeros((64, 64), np.float32)
    letterboxed[16 + 8, 48] = 1.0
    letterboxed[:16] = letterboxed[48:] = 5.0  # the mirrored rows are cut away
    back = framing.unframed(letterboxed, (200, 100), framing.LETTERBOX)
    assert back.shape == (64, 64) and back.max() <= 1.0
    assert np.unravel_index(back.argmax(), back.shape) in {(16, 48), (17, 48)}
    assert framing.unframed(letterboxed, (200, 100), framing.SQUASH) is letterboxed
    assert framing.unframed(letterboxed, None, framing.LETTERBOX) is letterboxed


def test_models_squash_unless_asked_and_models_from_before_squash(patchcore_model):
    assert AnomalyModel.load(patchcore_model).config["framing"] == framing.SQUASH
    assert framing.framing_of({}) == framing.SQUASH


@pytest.fixture(scope="module")
def shapes(parts, tmp_path_factory):
    """The parts two abreast (128 x 64) or two stacked (64 x 128); a defect beside or above a
    good part, its mask beside an empty one."""
    root = tmp_path_factory.mktemp("shapes") / "data"
    goods, defects = sorted((parts / "good").glob("*.png")), sorted((parts / "not-good").glob("*.png"))
    for folder in ("good", "not-good", "ground_truth/not-good"):
        (root / folder).mkdir(parents=True)
    for i in range(len(goods)):
        wide = i % 2 == 0
        pair = [Image.open(goods[i]), Image.open(goods[(i + 1) % len(goods)])]
        joined(pair, wide).save(root / "good" / f"good{i:03d}.png")
    for i, path in enumerate(defects):
        wide = i % 2 == 0
        joined([Image.open(path), Image.open(goods[i])], wide).save(root / "not-good" / path.name)
        mask = Image.open(parts / "ground_truth" / "not-good" / f"{path.stem}_mask.png")
        joined([mask, Image.new("L", mask.size, 0)], wide).save(root / "ground_truth" / "not-good" / f"{path.stem}_mask.png")
    return root


def joined(images: list[Image.Image], wide: bool) -> Image.Image:
    first = images[0]
    out = Image.new(first.mode, (first.width * 2, first.height) if wide else (first.width, first.height * 2))
    out.paste(first, (0, 0))
    out.paste(images[1], (first.width, 0) if wide else (0, first.height))
    return out


@pytest.fixture(scope="module")
def letterboxing_model(shapes, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "letterbox"
    run_cli("train", shapes, "--method", "patchcore", "--image-size", "64", "--coreset-ratio", "0.1", "--framing", "letterbox", "--run-dir", run)
    return run / "model.safetensors"


def test_regions_of_letterboxed_images_are_where_the_defect_is(letterboxing_model, shapes, tmp_path):
    model = AnomalyModel.load(letterboxing_model)
    assert model.config["framing"] == "letterbox"
    # The scored maps are the model's maps of the letterboxed input, brought to each image's frame.
    paths = sorted((shapes / "not-good").glob("*.png"))[:4]
    _, maps = model.score(np.stack([read_image_array(p, 64, framing=framing.LETTERBOX).transpose(2, 0, 1) for p in paths]))
    for path, scored, letterboxed in zip(paths, iter_scores(model, paths, with_maps=True, show_progress=False), maps.numpy()):
        expected = framing.unframed(letterboxed, Image.open(path).size, framing.LETTERBOX)
        assert np.allclose(scored.map, expected, atol=1e-5) and not np.allclose(scored.map, letterboxed, atol=1e-2)
    run_cli("predict", letterboxing_model, shapes / "not-good", "--output", tmp_path / "p.json")
    rows = json.loads((tmp_path / "p.json").read_text())["images"]
    found = [row for row in rows if row["regions"]]
    assert len(found) >= len(rows) - 2
    for row in found:
        width, height = Image.open(row["path"]).size
        largest = row["regions"][0]
        centre = (largest["x"] + largest["width"] / 2, largest["y"] + largest["height"] / 2)
        # The defect is in the first half: the left one of a wide image, the top one of a tall one.
        assert (centre[0] < width / 2) if width > height else (centre[1] < height / 2), (row["path"], largest)
        assert largest["x"] + largest["width"] <= width and largest["y"] + largest["height"] <= height


def test_the_exported_file_and_the_line_letterbox_as_predict_does(letterboxing_model, shapes, tmp_path):
    from anomalycli.deploy.line import Line

    run_cli("export", letterboxing_model, "--out", tmp_path / "m.onnx")
    run_cli("predict", letterboxing_model, shapes / "not-good", "--output", tmp_path / "a.json")
    run_cli("predict", tmp_path / "m.onnx", shapes / "not-good", "--output", tmp_path / "b.json")
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["images"] for n in "ab")

    def boxes(row):
        return [(r["x"], r["y"], r["width"], r["height"]) for r in row["regions"]]

    assert [row["score"] for row in a] == pytest.approx([row["score"] for row in b], abs=1e-4)
    assert [boxes(row) for row in a] == [boxes(row) for row in b]
    line = Line(letterboxing_model, with_regions=True)
    paths = sorted((shapes / "not-good").glob("*.png"))
    images = np.stack([read_image_array(p, 64, framing=line.framing).transpose(2, 0, 1) for p in paths])
    judged, _ = line.judge([p.name for p in paths], images, [""] * len(paths), [0.0] * len(paths), [Image.open(p).size for p in paths])
    by_name = {row["path"].split("/")[-1]: row for row in a}
    assert [[(r.x, r.y, r.width, r.height) for r in j.regions] for j in judged] == [boxes(by_name[p.name]) for p in paths]


def test_letterbox_and_a_dont_care_mask_are_refused_together(shapes, tmp_path):
    mask = tmp_path / "mask.png"
    Image.new("L", (128, 64), 0).save(mask)
    said = one_clear_line(run_cli("train", shapes, "--method", "patchcore", "--framing", "letterbox", "--ignore", mask, "--run-dir", tmp_path / "r", expect=2))
    assert "drop --framing letterbox" in said and not (tmp_path / "r").exists()
    assert "--framing must be" in one_clear_line(run_cli("train", shapes, "--framing", "crop", "--run-dir", tmp_path / "s", expect=2))


def test_the_review_pages_heat_map_is_predicts_map_of_a_letterboxed_image(letterboxing_model, shapes):
    from anomalycli.deploy.engines import load_model
    from anomalycli.views import review_labels, review_server
    from anomalycli.views.heatmaps import overlay

    model = load_model(letterboxing_model)
    path = next(p for p in sorted((shapes / "not-good").glob("*.png")) if Image.open(p).width > Image.open(p).height)
    (scored,) = iter_scores(model, [path], with_maps=True, show_progress=False)
    state = review_server.Review([review_labels.Item(path.name, path, scored.score, scored.verdict)], None, model, [], model.calibration.raw_threshold(0.5))
    image = Image.open(path).convert("RGB")
    image.thumbnail((review_server.DISPLAY_SIZE, review_server.DISPLAY_SIZE))
    expected = np.asarray(overlay(image, scored.map, state.scale).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(state.heatmap_png(0))).convert("RGB")), expected)
