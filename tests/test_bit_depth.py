"""A 16-bit file's bits, decided from the goods at the fit (data/bit_depth.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from anomalycli import modelfile
from anomalycli.data.bit_depth import FULL_WINDOW, OWN_SCALES, ValueWindow, Windows, bit_depth, fewest_bits, measured_file, windows_of
from anomalycli.data.images import read_image_array
from anomalycli.data.synthetic import make_dataset
from anomalycli.deploy.export import export_onnx
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection.methods import AnomalyModel
from anomalycli.workflows.train import TrainOptions, train
from tests.conftest import one_clear_line, run_cli


def as_low_bits(folder: Path, bits: int = 12) -> list[Path]:
    """Every PNG under ``folder`` (masks too) rewritten as a camera's raw ``bits``-bit values in the
    low bits of a 16-bit file: each grey level v as round(v * (2**bits - 1) / 255), which reads back
    as v on 0..2**bits - 1. Returns the images rewritten."""
    rewritten = []
    for path in sorted(folder.rglob("*.png")):
        if "_mask" in path.stem or "ground_truth" in path.parts:
            continue
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        Image.fromarray(np.round(grey * (2**bits - 1) / 255).astype(np.uint16)).save(path)
        rewritten.append(path)
    return rewritten


def on_an_offset(folder: Path, offset: int = 30000, step: int = 8) -> list[Path]:
    """Every PNG under ``folder`` (masks too) rewritten as 16-bit values on an offset, as a height
    map's: each grey level v as offset + v * step (its range 2,040 wide, 8 grey levels read from 0).
    Returns the images rewritten."""
    rewritten = []
    for path in sorted(folder.rglob("*.png")):
        if "_mask" in path.stem or "ground_truth" in path.parts:
            continue
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.int64)
        Image.fromarray((offset + grey * step).astype(np.uint16)).save(path)
        rewritten.append(path)
    return rewritten


def test_the_fewest_camera_bits_that_hold_the_largest_value():
    assert [fewest_bits(v) for v in (0, 255, 256, 1023, 1024, 4095, 4096, 16383, 16384, 65535)] == [8, 8, 10, 10, 12, 12, 14, 14, 16, 16]


def test_the_goods_files_decide_and_8_bit_files_have_no_say(tmp_path):
    rng = np.random.default_rng(0)

    def save(name: str, largest: int, shift: int = 0) -> Path:
        """A noisy 16-bit image whose largest value is ``largest``, its values moved up ``shift`` bits."""
        values = rng.integers(0, (largest >> shift) + 1, (8, 8))
        values.flat[0] = largest >> shift
        Image.fromarray((values << shift).astype(np.uint16)).save(tmp_path / name)
        return tmp_path / name

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((8, 8), 250, np.uint8)).save(grey)
    twelve = [save(f"m12_{v}.png", v) for v in (100, 4000)]
    assert bit_depth([grey]).windows.sixteen_bit == FULL_WINDOW and bit_depth([grey]).reason == ""
    found = bit_depth([grey, *twelve])
    assert found.windows.sixteen_bit == ValueWindow(0, 4095) and found.windows.sixteen_bit.bits == 12
    assert "the 2 16-bit good(s) hold their values in the low 12 bits (largest value 4000 of 65535)" in found.reason
    assert bit_depth([*twelve, save("m16.png", 60000)]).windows.sixteen_bit == FULL_WINDOW, "one good using 16 bits: every file is read on 16"
    # A dark Mono12 camera's frames as the station's archive keeps them: values in the top bits, on the 16-bit scale already.
    top = bit_depth([save("dark_a.png", 900 << 4, shift=4), save("dark_b.png", 1000 << 4, shift=4)])
    assert top.windows.sixteen_bit == FULL_WINDOW and "hold a 12-bit camera's values in their top bits" in top.reason
    assert windows_of({}) == OWN_SCALES, "a model from before the rule reads 16 bits as it did"
    assert windows_of({"significant_bits": 12}).sixteen_bit == ValueWindow(0, 4095)
    assert found.warning == "" and bit_depth([save("m16.png", 60000)]).warning == ""
    # Their values up to 1000 << 4 from 0, on no offset: under 16,000 of 65,535 keeps under 64 grey levels of 256, said.
    assert re.search(r"lie between \d+ and 159\d\d only \(1st to 99th percentile\): read on 0-65535 they span [56]\d of the 256", top.warning)


def test_goods_on_an_offset_are_read_on_a_window_of_their_own(tmp_path):
    """A height map's values (30,000 to 34,000) fill no whole number of bits: read from 0 they keep
    16 grey levels of 256; on their range and half its width again each side, 128."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"h{i}.png")
        values = np.random.default_rng(i).choice([30000, 32000, 34000], (64, 64))
        values[:16] = 34000 - 2000 * i  # every good has a quarter of one value, a quarter of the lowest
        values[16:32] = 30000
        values[0, 0] = 0  # a no-data pixel: no say in the window
        Image.fromarray(values.astype(np.uint16)).save(paths[-1])
    found = bit_depth(paths)
    assert found.windows.sixteen_bit == ValueWindow(28000, 36000) and found.windows.sixteen_bit.bits is None and found.warning == ""
    assert (
        "hold values between 30000 and 34000 only (1st to 99th percentile), on an offset: every 16-bit image is read on 28000-36000 (128 grey levels"
        in found.reason
    )
    assert windows_of(found.windows.to_config()) == found.windows and found.windows.to_config() == {"sixteen_bit_window": [28000, 36000]}
    assert found.windows.sixteen_bit.to_grey(np.array([30000, 34000])).tolist() == [64, 191]
    assert FULL_WINDOW.to_grey(np.array([30000, 34000])).tolist() == [117, 132], "read from 0, as before the window: 16 levels apart"


def test_a_16_bit_file_is_read_on_the_models_window_and_values_beyond_it_saturate(tmp_path):
    values = np.array([[0, 1000, 2047, 4095, 8000]], dtype=np.uint16).repeat(5, axis=0)
    Image.fromarray(values).save(tmp_path / "row.png")
    read = lambda window: read_image_array(tmp_path / "row.png", 5, windows=Windows(window))[0, :, 0].tolist()  # noqa: E731
    assert read(ValueWindow.of_bits(12)) == [0, 62, 127, 255, 255]
    assert read(FULL_WINDOW) == [0, 4, 8, 16, 31], "16-bit files keep the 0..65535 scale"
    assert read(ValueWindow(1000, 5000)) == [0, 0, 67, 197, 255]


@pytest.mark.parametrize("method", ["patchcore", "classifier"])
def test_a_model_fitted_on_12_bit_files_scores_them_as_one_fitted_on_their_8_bit_copies(tmp_path, method):
    """The fit reads the low-bit files on 12 bits, and so does every image it is given after: the
    model and its scores are those of the same images saved as 8-bit files."""
    eight = make_dataset(tmp_path / "data" / "eight", n_good=12, n_per_defect=3, size=48, masks=False)
    low = make_dataset(tmp_path / "data" / "low", n_good=12, n_per_defect=3, size=48, masks=False)
    for path in low.rglob("*.png"):  # the same scenes, grey, as 8-bit and as 12-bit files
        Image.open(path).convert("L").save(eight / path.relative_to(low))
    images = as_low_bits(low)
    options = {"method": method, "image_size": 48, "seed": 0, "cv_folds": 3, "coreset_ratio": 0.2}
    if method == "classifier":
        options = {"method": method, "weights": "imagenet", "image_size": 48, "epochs": 1, "batch_size": 8, "seed": 0}
    fitted = {
        name: train(TrainOptions(data=str(root), run_dir=str(tmp_path / "runs" / name), **options), show_progress=False).model_path
        for name, root in (("eight", eight), ("low", low))
    }
    low_model, eight_model = AnomalyModel.load(fitted["low"]), AnomalyModel.load(fitted["eight"])
    assert windows_of(low_model.config).sixteen_bit == ValueWindow.of_bits(12) and "significant_bits" not in eight_model.config
    low_scores = [r.raw for r in iter_scores(low_model, images, show_progress=False)]
    eight_scores = [r.raw for r in iter_scores(eight_model, [eight / p.relative_to(low) for p in images], show_progress=False)]
    assert np.allclose(low_scores, eight_scores, rtol=1e-6, atol=1e-6)


def test_adapt_says_where_the_new_lines_16_bit_images_go_above_the_models_bits(tmp_path):
    from anomalycli.data.layouts import Sample
    from anomalycli.workflows.adapt import adapt

    data = make_dataset(tmp_path / "data" / "mono12", n_good=10, n_per_defect=0, size=48, masks=False)
    as_low_bits(data)
    fitted = train(TrainOptions(data=str(data), run_dir=str(tmp_path / "run"), method="patchcore", image_size=48, coreset_ratio=0.2), show_progress=False)
    line = make_dataset(tmp_path / "data" / "line", n_good=6, n_per_defect=0, size=48, seed=3, masks=False)
    brighter = as_low_bits(line, bits=13)  # the new line's exposure is twice as long
    adapted = adapt(AnomalyModel.load(fitted.model_path), [Sample(p, "good", 0) for p in brighter])
    said = " ".join(adapted.warnings)
    assert "6 of the new images go beyond the 12 bits the model reads its goods on" in said and "saturate" in said
    as_bright = as_low_bits(make_dataset(tmp_path / "data" / "line2", n_good=6, n_per_defect=0, size=48, seed=3, masks=False))
    again = adapt(AnomalyModel.load(fitted.model_path), [Sample(p, "good", 0) for p in as_bright])  # as bright as the goods it knows
    assert "saturate" not in " ".join(again.warnings)


def test_a_model_fitted_on_an_offset_reads_its_window_its_export_says_it_and_older_anomalycli_refuse_it(tmp_path, monkeypatch):
    """Goods on an offset are read on a window of their own, which the model records; its export
    tells a line program the window, and an anomalycli that reads no window asks for an upgrade
    instead of reading the files from 0."""
    data = make_dataset(tmp_path / "data" / "offset", n_good=12, n_per_defect=3, size=48, masks=False)
    images = on_an_offset(data)
    fitted = train(TrainOptions(data=str(data), run_dir=str(tmp_path / "run"), method="patchcore", image_size=48, coreset_ratio=0.2), show_progress=False)
    model = AnomalyModel.load(fitted.model_path)
    windows = windows_of(model.config)
    window = windows.sixteen_bit
    assert window.bits is None and window.low < 30000 < 30000 + 255 * 8 < window.high
    assert modelfile.read_meta(fitted.model_path)["format_version"] == modelfile.FORMAT_VERSION == 3
    on_window = [len(np.unique(read_image_array(p, 48, windows=windows))) for p in images[:3]]
    from_0 = [len(np.unique(read_image_array(p, 48))) for p in images[:3]]
    assert min(on_window) > 4 * max(from_0), (on_window, from_0)
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    properties = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert properties["sixteen_bit_window"] == f"{window.low} {window.high}" and "significant_bits" not in properties
    assert json.loads(properties["anomalycli"])["format_version"] == 3
    monkeypatch.setattr(modelfile, "FORMAT_VERSION", 2)  # what an anomalycli before windows reads
    assert "newer than this anomalycli reads (2); upgrade anomalycli" in one_clear_line(run_cli("predict", fitted.model_path, data / "good", expect=1))


def test_float_goods_are_read_on_one_window_for_the_line_not_each_on_its_own_scale(tmp_path):
    """Height maps in mm (7.5 to 8.7; a no-data NaN): each on its own scale (0..255, by its largest
    value) they kept 2 or 3 grey levels, and two images of one line could be scaled apart. The goods'
    range and half its width each side is one window for every such image; NaN reads black."""
    paths = []
    for i in range(2):
        values = np.random.default_rng(i).uniform(7.5, 8.7, (64, 64)).astype(np.float32)
        values[0, 0] = np.nan
        paths.append(tmp_path / f"h{i}.tif")
        Image.fromarray(values, "F").save(paths[-1])
    found = bit_depth(paths)
    floats = found.windows.floats
    assert found.windows.sixteen_bit == FULL_WINDOW and floats is not None and floats.bits is None
    assert (round(floats.low, 1), round(floats.high, 1)) == (6.9, 9.3)
    assert "the 2 float or 32-bit good(s) hold values between 7.5" in found.reason and "every such image is read on 6.9" in found.reason
    assert windows_of(found.windows.to_config()) == found.windows and set(found.windows.to_config()) == {"significant_bits", "float_window"}
    assert ValueWindow(6.0, 10.0).to_grey(np.array([6.0, 8.0, 10.0, np.nan])).tolist() == [0, 128, 255, 0]
    own = {len(np.unique(read_image_array(p, 64, windows=OWN_SCALES))) for p in paths}
    on_window = {len(np.unique(read_image_array(p, 64, windows=found.windows))) for p in paths}
    assert max(own) <= 3 and min(on_window) > 100, (own, on_window)


def test_16_bit_colour_goods_read_on_their_top_bits_are_measured_and_a_narrow_span_is_said(tmp_path):
    """Pillow decodes a 48-bit PNG or a 16-bit RGB TIFF to each channel's top 8 bits: a 12-bit
    camera's values in the low bits read 0-15 of 255. No window gives back the bits the decoder
    dropped, so a narrow span is a warning; full-range 16-bit colour reads well and is only said."""
    cv2 = pytest.importorskip("cv2")  # Pillow writes no 16-bit colour file
    rng = np.random.default_rng(0)

    def save(name: str, top: int) -> Path:
        cv2.imwrite(str(tmp_path / name), rng.integers(0, top + 1, (32, 32, 3)).astype(np.uint16))
        return tmp_path / name

    low_bits = [save("a.png", 4095), save("b.tiff", 4095)]
    full = [save("c.png", 65535), save("d.tiff", 65535)]
    eight_bit = tmp_path / "e.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(eight_bit)
    narrow = bit_depth(low_bits)
    assert narrow.windows == OWN_SCALES and "the 2 colour good(s) of 16 bits a channel are read on the top 8 bits of each" in narrow.reason
    assert re.search(r"the 16-bit colour goods read between \d and 1[45] of 255 only .*: 1[0-5] grey levels", narrow.warning), narrow.warning
    wide = bit_depth(full)
    assert "colour good(s) of 16 bits" in wide.reason and wide.warning == ""
    assert bit_depth([eight_bit]).reason == "", "8-bit colour files have no say"
    assert max(read_image_array(low_bits[0], 32).max(), read_image_array(low_bits[1], 32).max()) <= 16, "what the warning says: nearly black"
    with_floats = Windows(FULL_WINDOW, ValueWindow(0.0, 1.0))
    assert [with_floats.saturates(measured_file(p)) for p in low_bits + full] == [False] * 4, "no window of theirs to go beyond"
