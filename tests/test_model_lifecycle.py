"""Every model file a verb writes works in every verb that reads one, for every kind of model.

The matrix: each model kind (``KINDS``) x each verb that writes a model file (train, calibrate,
adapt, export) x each verb that reads one (eval, predict in process and on the stored graph,
export then predict on the export, watch, serve, review's scoring, calibrate, adapt). Every cell
loads the written file and must give the raw scores the file's own model gives in process, to the
tolerance of the path it runs on. A new part of a model file goes into ``KINDS`` (docs/architecture.md).
"""

from __future__ import annotations

import csv
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from anomalycli.data import trained_on
from anomalycli.data.bit_depth import windows_of
from anomalycli.data.layouts import Sample, discover
from anomalycli.data.levels import levels_of
from anomalycli.data.synthetic import make_dataset
from anomalycli.deploy import engines, export, loading, onnx_model
from anomalycli.deploy.http_api import make_app
from anomalycli.deploy.line import Line
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection import int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.judgement.thresholds import OperatingRule
from anomalycli.views import review_server
from anomalycli.workflows.adapt import adapt
from anomalycli.workflows.calibrate import PixelChoices, recalibrate
from anomalycli.workflows.evaluate import evaluate
from anomalycli.workflows.train import TrainOptions, train
from anomalycli.workflows.watch import WatchOptions, watch
from tests.conftest import one_clear_line, run_cli
from tests.test_bit_depth import as_low_bits, on_an_offset
from tests.test_orientation import key

SMALL = {"image_size": 64, "cv_folds": 3, "coreset_ratio": 0.1, "seed": 0}
# name -> (data set, TrainOptions changes): every kind of model a user can have. Where two parts
# are independent they share a kind, to keep the matrix's time (each kind is 4 cells of 10-20 s).
KINDS = {
    "classifier": ("parts", {"method": "classifier", "weights": "none", "image_size": 64, "epochs": 2, "batch_size": 16}),
    # And 16-bit files on an offset, as a height map's, read on a window of their own (data/bit_depth.py).
    "patchcore int8, 16-bit files on an offset": ("offset 16-bit", {"method": "patchcore", **SMALL}),
    # fp32, and a bank that learnt a few goods turned (data/orientation.py), from float height maps (data/bit_depth.py).
    "patchcore fp32, a few goods learnt turned, float height maps": ("keys", {"method": "patchcore", "precision": "fp32", "image_size": 64, "seed": 0}),
    # A camera's 12-bit values in the low bits of 16-bit files (data/bit_depth.py).
    "hybrid without masks, 12-bit files": ("unmasked 12-bit", {"method": "hybrid", **SMALL}),
    "hybrid, linear pixel head": ("parts", {"method": "hybrid", "pixel_head_kinds": (0,), **SMALL}),
    # The hidden-layer head, and levels stretched (data/levels.py).
    "hybrid, hidden-layer pixel head, --levels stretch": ("parts", {"method": "hybrid", "pixel_head_kinds": (64,), "levels": "stretch", **SMALL}),
    "hybrid fp32 --ignore": ("parts", {"method": "hybrid", "precision": "fp32", "ignore": "corner mask", **SMALL}),
    "hybrid --framing letterbox": ("wide", {"method": "hybrid", "framing": "letterbox", **SMALL}),
}
WRITERS = ("train", "calibrate", "adapt", "export")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lifecycle")
    sets = {
        "parts": make_dataset(root / "parts", n_good=18, n_per_defect=5, size=64, masks=True),
        "unmasked 12-bit": make_dataset(root / "unmasked", n_good=18, n_per_defect=5, size=64, masks=False),
        "offset 16-bit": make_dataset(root / "offset", n_good=18, n_per_defect=5, size=64, masks=True),
        "wide": make_dataset(root / "wide", n_good=18, n_per_defect=5, size=64, masks=True),
        "line": make_dataset(root / "line", n_good=8, n_per_defect=0, size=64, seed=7) / "good",
        "later line": make_dataset(root / "later line", n_good=8, n_per_defect=0, size=64, seed=8) / "good",
    }
    as_low_bits(sets["unmasked 12-bit"])
    on_an_offset(sets["offset 16-bit"])
    for image in sets["wide"].rglob("*.png"):  # images (and masks) of another shape, that letterboxing keeps
        with Image.open(image) as opened:
            opened.resize((96, 64)).save(image)
    rng = np.random.default_rng(5)  # a few goods lying at any angle: the bank learns them turned
    (root / "keys" / "good").mkdir(parents=True)
    for i in range(5):  # as height maps in mm: 5.0 + 0.004 a grey level, on one float window for the line
        grey = np.asarray(key(rng.uniform(0, 360), rng, size=64).convert("L"), dtype=np.float32)
        Image.fromarray(5.0 + grey * np.float32(0.004), "F").save(root / "keys" / "good" / f"{i}.tif")
    sets["keys"] = root / "keys"
    mask = np.zeros((64, 64), np.uint8)
    mask[:10, :10] = 255
    Image.fromarray(mask).save(root / "corner.png")
    sets["corner mask"] = root / "corner.png"
    return sets


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """kind -> its trained model file, fitted once, on first use."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            data_set, changes = KINDS[kind]
            changes = {**changes, **({"ignore": [str(data[changes["ignore"]])]} if "ignore" in changes else {})}
            run = tmp_path_factory.mktemp("runs") / "run"
            result = train(TrainOptions(data=str(data[data_set]), run_dir=str(run), **changes), show_progress=False)
            if data_set == "keys":
                assert result.model.config["orientation"]["kind"] == "free" and result.model.config["orientation"]["turns"] > 1
            made[kind] = result.model_path
        return made[kind]

    return get


def written(writer: str, kind: str, trained_file: Path, data: dict, folder: Path) -> Path:
    """The file ``writer`` makes of ``kind``'s trained model, as its command does."""
    if writer == "train":
        return trained_file
    if writer == "calibrate":
        out = folder / "calibrated.safetensors"
        area = ["--min-area", "6"] if KINDS[kind][1]["method"] != "classifier" else []
        run_cli("calibrate", trained_file, "--max-fpr", "0.1", *area, "--out", out)
        return out
    if writer == "adapt":
        out = folder / "adapted.safetensors"
        run_cli("adapt", trained_file, data["line"], "--out", out)
        return out
    out = folder / "exported.onnx"
    run_cli("export", trained_file, "--out", out)
    return out


def _images(data: dict, kind: str) -> list[Path]:
    samples = discover(data[KINDS[kind][0]]).samples
    return [s.path for s in samples if s.label == 0][:3] + [s.path for s in samples if s.label == 1][:3]


def _raw(rows) -> np.ndarray:
    return np.array([r.raw for r in rows], dtype=np.float64)


def _tolerance(model, graph: bool) -> float:
    """How far a path's raw scores may lie from the in-process model's. A memory bank's search may
    multiply in int8 or bfloat16 on this CPU (``bank_search``), quantising each batch of queries as a
    whole, so an image scored alone and in a batch differ by up to about 0.5 % (test_bank_search):
    such models to the probe's bound of the score range (``onnx_model.PROBE_SCORE_TOL``); the
    classifier, to rounding (its graph's float32 a little more)."""
    spread = model.calibration.high - model.calibration.low
    if model.method != "classifier":
        return onnx_model.PROBE_SCORE_TOL * spread
    return (1e-4 if graph else 1e-5) * spread


def _watched(model_file: Path, images: list[Path], folder: Path) -> dict[str, float]:
    """The raw scores the watch workflow journals for ``images`` dropped into its inbox."""
    inbox, journal = folder / "inbox", folder / "journal.csv"
    inbox.mkdir(parents=True)
    for image in images:
        shutil.copy(image, inbox / image.name)
    stop = threading.Event()
    options = WatchOptions(inbox=inbox, journal=journal, settle_seconds=0.2, polling=True, min_free_mb=0)
    thread = threading.Thread(target=watch, args=(model_file, "auto", options, lambda line: None, stop))
    thread.start()
    end = time.monotonic() + 120
    try:
        while time.monotonic() < end and len(_journal(journal)) < len(images) and thread.is_alive():
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
    return {Path(r["path"]).name: float(r["raw_score"]) for r in _journal(journal)}


def _journal(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("kind", [pytest.param(kind, marks=pytest.mark.xdist_group(kind)) for kind in KINDS])  # a kind's cells on one worker: one fit
def test_every_file_a_verb_writes_gives_the_same_scores_in_every_verb_that_reads_it(kind, writer, trained, data, tmp_path):
    if writer == "adapt" and KINDS[kind][1]["method"] == "classifier":
        result = run_cli("adapt", trained(kind), data["line"], "--out", tmp_path / "a.safetensors", expect=None)
        assert result.exit_code != 0 and "has none" in one_clear_line(result)
        return
    model_file = written(writer, kind, trained(kind), data, tmp_path)
    images = _images(data, kind)
    exported = model_file.suffix == ".onnx"
    source = AnomalyModel.load(trained(kind)) if exported else AnomalyModel.load(model_file)
    int8 = int8_backbone.int8_of(source.net) is not None
    # The reference: the file's own network in process (an export's: the network it came from).
    reference = _raw(iter_scores(source, images, show_progress=False))
    if writer == "train":
        assert source.config.get("precision", "fp32") == ("int8" if int8 else "fp32")
    # Every file says whether its images' levels are stretched, and the bits it reads 16-bit files
    # on (the export in its metadata, for a line program).
    assert levels_of(loading.load(model_file, "auto").config) == KINDS[kind][1].get("levels", "as-is")
    windows = windows_of(loading.load(model_file, "auto").config)
    window = windows.sixteen_bit
    assert window.bits == (12 if "12-bit" in kind else None if "offset" in kind else 16) and (window.low > 0) == ("offset" in kind)
    assert (windows.floats is not None) == ("float" in kind)
    tolerance = _tolerance(source, graph=exported)

    def same(scores, where: str, graph: bool = False) -> None:
        bound = _tolerance(source, graph) if not exported else tolerance
        # rtol: the journal writes six significant digits.
        assert np.allclose(np.asarray(scores, dtype=np.float64), reference, rtol=1e-5, atol=bound), f"{where}: {scores} against {reference.tolist()}"

    # predict, in process and where the file runs by default (an int8 file: its stored graph).
    loaded = loading.load(model_file, "auto")
    if int8 and not exported:
        assert isinstance(loaded, onnx_model.OnnxModel), f"{writer} dropped the int8 scoring graph of a {kind} model"
    placed, _ = loading.on_engine(loaded, "auto", len(images), with_maps=True)
    same(_raw(iter_scores(placed, images, with_maps=True, show_progress=False)), "predict (auto)", graph=isinstance(placed, onnx_model.OnnxModel))
    if not exported:
        in_process, _ = engines.on_engine(engines.load_model(model_file, "torch"), "torch", len(images))
        same(_raw(iter_scores(in_process, images, show_progress=False)), "predict --engine torch")

    # eval, with the maps and masks it reads, and review's scoring of the page.
    samples = [Sample(p, "x", int(i >= 3)) for i, p in enumerate(images)]
    model, _ = engines.on_engine(engines.load_model(model_file), "auto", len(samples))
    report, rows = evaluate(model, samples, with_masks=True, n_boot=10, show_progress=False)
    same(_raw(rows), "eval", graph=isinstance(model, onnx_model.OnnxModel))
    # Every file keeps which images its model was trained on (adapt adds the new line's): eval says so.
    assert report["trained_on"]["seen"] == len(samples), f"{writer} lost the record of the images its model was trained on"
    # And how those images were saved (PNG here: lossless), for the drift check to name a lossier line.
    assert sum(loaded.config["encoding"].values()) >= len(samples), f"{writer} lost how its training images were saved"
    if writer == "adapt":
        assert all(trained_on.seen(loaded.config, sorted(data["line"].glob("*.png")))), "adapt did not add the new line's goods"
    items, _ = review_server.scored_items(engines.load_model(model_file), images, images[0].parent.parent)
    assert [i.score for i in items] == pytest.approx([r.score for r in rows], abs=0.02), "review"

    # watch and serve: the line's warm model, through the inbox and over HTTP.
    line = Line(model_file)
    graph = isinstance(line.model, onnx_model.OnnxModel)
    client = TestClient(make_app(line))
    same([client.post("/predict", content=p.read_bytes(), headers={"X-Image-Name": p.name}).json()["raw_score"] for p in images], "serve", graph)
    journaled = _watched(model_file, images, tmp_path / "watch")
    assert sorted(journaled) == sorted(p.name for p in images), "watch journaled every image once"
    same([journaled[p.name] for p in images], "watch", graph)

    if exported:  # the verbs that need the model file an export came from say so in one line
        for verb in ("calibrate", "adapt"):
            result = run_cli(verb, model_file, data["line"], expect=None)
            assert result.exit_code != 0 and "already an ONNX export" in one_clear_line(result)
        return
    if writer == "train":  # the trained file goes through export, calibrate and adapt in those writers' own cells
        return

    # export, then predict on the export.
    onnx_file = export.export_onnx(AnomalyModel.load(model_file), tmp_path / "again.onnx")
    onnx_loaded, _ = loading.on_engine(loading.load(onnx_file, "auto"), "auto", len(images), with_maps=True)
    same(_raw(iter_scores(onnx_loaded, images, show_progress=False)), "export, then predict on the export", graph=True)

    # calibrate moves the threshold, never the scores; adapt again (to goods it has not seen) keeps every part.
    calibrated, _ = recalibrate(AnomalyModel.load(model_file), OperatingRule("fpr", 0.2), show_progress=False, pixel=PixelChoices())
    calibrated_file = export.save_model(calibrated, tmp_path / "recalibrated.safetensors")
    same(_raw(iter_scores(AnomalyModel.load(calibrated_file), images, show_progress=False)), "calibrate")
    if source.method != "classifier":
        line_goods = [Sample(p, "good", 0) for p in sorted(data["later line"].glob("*.png"))]
        adapted = adapt(AnomalyModel.load(model_file), line_goods).model
        again = AnomalyModel.load(export.save_model(adapted, tmp_path / "readapted.safetensors"))
        assert set(again.net.state_dict()) == set(source.net.state_dict()), "adapt keeps every tensor"
        assert np.allclose(_raw(iter_scores(again, images, show_progress=False)), _raw(iter_scores(adapted, images, show_progress=False)), atol=1e-6)
        if source.config.get("pixel_head"):
            assert again.net.pixel_head is not None and again.config["pixel_head"] == source.config["pixel_head"]
        assert again.calibration.min_area_px == source.calibration.min_area_px, "adapt keeps the size rule"


@pytest.mark.xdist_group("hybrid, linear pixel head")  # beside that kind's cells: its fit is theirs
def test_a_damaged_file_is_refused_in_one_line_that_names_what_is_missing(trained, data, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model_file = trained("hybrid, linear pixel head")
    with safe_open(str(model_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("pixel_head.")}
        metadata = f.metadata()
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata=metadata)
    line = one_clear_line(run_cli("eval", damaged, data["parts"], expect=None))
    assert "missing pixel_head.bias, pixel_head.stats, pixel_head.weight" in line and "retrain it" in line
