from PIL import Image

from anomalycli.data.encoding import LOSSLESS, WEBP_LOSSY, added, encoding_of, lossier_line
from anomalycli.data.layouts import Sample
from anomalycli.detection.methods import AnomalyModel
from anomalycli.workflows.adapt import adapt
from tests.conftest import run_cli


def _saved(folder, images, suffix, **options):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i:03d}{suffix}")
        image.save(paths[-1], **options)
    return paths


def test_each_file_says_how_it_was_saved_from_its_header(parts, tmp_path):
    image = Image.open(next((parts / "good").glob("*.png")))
    for quality in (20, 75, 90, 95):
        assert encoding_of(_saved(tmp_path / f"q{quality}", [image.convert("RGB")], ".jpg", quality=quality)[0]) == f"JPEG q{quality}"
    assert encoding_of(_saved(tmp_path / "png", [image], ".png")[0]) == LOSSLESS
    assert encoding_of(_saved(tmp_path / "webp", [image], ".webp", quality=80)[0]) == WEBP_LOSSY
    assert encoding_of(_saved(tmp_path / "webp-lossless", [image], ".webp", lossless=True)[0]) == LOSSLESS
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert encoding_of(tmp_path / "broken.png") is None


def test_a_cause_is_named_only_where_most_images_are_saved_lossier_than_every_training_image():
    line = lossier_line({LOSSLESS: 40}, {"JPEG q75": 30, LOSSLESS: 2})
    assert line.startswith("cause: these images are JPEG at quality 75 (30 of the 32 looked at), the training images lossless")
    assert "quality 90 or more" in line
    assert "WebP lossy" in lossier_line({"JPEG q95": 10}, {WEBP_LOSSY: 5})
    assert lossier_line({"JPEG q75": 40}, {"JPEG q75": 30}) is None  # as lossy as the training images: not the cause
    assert lossier_line({"JPEG q95": 40}, {"JPEG q98": 30}) is None
    assert lossier_line({LOSSLESS: 40}, {"JPEG q75": 10, LOSSLESS: 11}) is None  # a minority
    assert lossier_line(None, {"JPEG q75": 10}) is None  # a model file from before it kept them
    assert added({LOSSLESS: 3}, []) == {LOSSLESS: 3}


def test_predict_names_jpeg_as_the_likely_cause_of_drift_and_adapt_learns_the_encoding(new_parts, patchcore_model, tmp_path):
    goods = sorted((new_parts / "good").glob("*.png"))
    jpeg = _saved(tmp_path / "jpeg", [Image.open(p) for p in goods], ".jpg", quality=20)
    model = AnomalyModel.load(patchcore_model)
    assert model.config["encoding"] == {LOSSLESS: 36}  # the 24 goods and 12 defects it was trained on
    warned = " ".join(run_cli("predict", patchcore_model, tmp_path / "jpeg").output.split())
    assert "drift: these 24 images do not look like the training data" in warned
    assert "Likely cause: these images are JPEG at quality 20 (24 of the 24 looked at), the training images lossless" in warned
    lossless = " ".join(run_cli("predict", patchcore_model, new_parts / "good").output.split())
    assert "Likely cause" not in lossless
    adapted = adapt(model, [Sample(p, "good", 0) for p in jpeg]).model
    assert adapted.config["encoding"] == {LOSSLESS: model.config["encoding"][LOSSLESS], "JPEG q20": 24}
