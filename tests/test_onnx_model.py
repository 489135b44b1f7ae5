"""A patchcore or hybrid model file (int8 or fp32) carries its scoring graph, checked against the
file's tensors, and predict runs it without PyTorch; an exported file's own loading is in test_export."""

import json
import re
import subprocess
import sys

import numpy as np
from conftest import one_clear_line, run_cli
from safetensors.torch import load_file, save_file

from anomalycli import modelfile
from anomalycli.data.layouts import discover
from anomalycli.data.tensors import load_all
from anomalycli.deploy import export, onnx_model
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection.methods import AnomalyModel

PREDICT_WITHOUT_TORCH = (
    "import sys\nfrom anomalycli.cli import main\n"
    "sys.argv = ['anomaly', 'predict', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    "print('torch imported:', 'torch' in sys.modules)\n"
)


def _in_process(path) -> AnomalyModel:
    """The model as predict ran it before files carried a graph: int8 backbone on ONNX Runtime, the rest on PyTorch."""
    model = AnomalyModel.load(path)
    model.stored = None
    return model


def test_an_int8_model_file_carries_its_graph_and_predict_runs_it_without_pytorch(hybrid_model, parts, tmp_path):
    model = AnomalyModel.load(hybrid_model)
    assert model.stored is not None and model.stored["probe_tensor"] == "patchcore.extractor.probe"
    args = [hybrid_model, parts, "--output", tmp_path / "rows.json", "--heatmaps", tmp_path / "maps"]
    done = subprocess.run([sys.executable, "-c", PREDICT_WITHOUT_TORCH, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("torch imported: False") and "PyTorch" not in done.stdout + done.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())["images"]
    assert len(list((tmp_path / "maps").rglob("*.png"))) == len(rows)
    # The graph searches with the export's 7-bit rows, the in-process path with 8-bit ones: the
    # stated tolerance of the export, 1 % of the scores' scale, and the same verdicts.
    before = list(iter_scores(_in_process(hybrid_model), [r["path"] for r in rows], show_progress=False))
    raw, raw_before = np.array([r["raw_score"] for r in rows]), np.array([r.raw for r in before])
    assert np.abs(raw - raw_before).max() <= 1e-2 * np.abs(raw_before).max()
    assert [r["verdict"] for r in rows] == [r.verdict for r in before]


def test_an_fp32_model_file_carries_its_graph_too_and_predicts_one_image_without_pytorch(parts, tmp_path):
    """An fp32 file's predict imported PyTorch and, from 64 images, exported the same fp32 graph in
    memory at every start; the file now carries it, without a probe (fp32 kernels agree on every CPU)."""
    run = tmp_path / "fp32"
    run_cli("train", parts, "--method", "patchcore", "--image-size", "64", "--run-dir", run, "--coreset-ratio", "0.1", "--precision", "fp32")
    path = run / "model.safetensors"
    model = AnomalyModel.load(path)
    assert model.stored is not None and "probe_tensor" not in model.stored and model.config["precision"] == "fp32"
    one = next((parts / "not-good").rglob("*.png"))
    done = subprocess.run(
        [sys.executable, "-c", PREDICT_WITHOUT_TORCH, str(path), str(one), "--output", str(tmp_path / "rows.json")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("torch imported: False") and "int8" not in done.stdout
    row = json.loads((tmp_path / "rows.json").read_text())["images"][0]
    on_pytorch = next(iter_scores(_in_process(path), [one], show_progress=False))
    assert np.isclose(row["raw_score"], on_pytorch.raw, rtol=1e-4) and row["verdict"] == on_pytorch.verdict


def _with_bank_edited(path, out):
    """A copy of the model file with its bank scaled by 1.5, its metadata (the graph's check included) left as it was."""
    from safetensors import safe_open

    tensors = load_file(path)
    tensors["bank"] = tensors["bank"] * 1.5
    with safe_open(str(path), framework="pt") as f:
        save_file(tensors, str(out), metadata=f.metadata())
    return out


def test_the_stored_graph_digest_is_the_files_and_a_changed_file_falls_back_to_pytorch(patchcore_model, parts, tmp_path):
    model = AnomalyModel.load(patchcore_model)
    assert modelfile.file_digest(modelfile.raw_tensors(patchcore_model)) == modelfile.digest(model.net.state_dict()) == model.stored["digest"]
    assert onnx_model.stored_in(patchcore_model) is not None
    changed = _with_bank_edited(patchcore_model, tmp_path / "changed.safetensors")
    assert onnx_model.stored_in(changed) is None and AnomalyModel.load(changed).stored is None
    run_cli("predict", changed, parts / "good", "--output", tmp_path / "rows.json")
    rows = json.loads((tmp_path / "rows.json").read_text())["images"]
    expected = [r.raw for r in iter_scores(_in_process(changed), [r["path"] for r in rows], show_progress=False)]
    assert np.allclose([r["raw_score"] for r in rows], expected, rtol=1e-5)


def test_saving_a_changed_model_stores_a_graph_that_scores_as_the_changed_model(patchcore_model, parts, tmp_path):
    """adapt and calibrate save through AnomalyModel.save, which exports the graph afresh."""
    model = AnomalyModel.load(_with_bank_edited(patchcore_model, tmp_path / "changed.safetensors"))
    export.save_model(model, tmp_path / "saved.safetensors")
    graph = onnx_model.stored_in(tmp_path / "saved.safetensors")
    assert graph is not None and graph.probe_mismatch() == 0.0
    images, _, _ = load_all(discover(parts).samples, model.config["image_size"])
    raw = model.score(images, with_maps=False)[0].numpy()
    raw_graph, _ = graph.score(images.numpy(), with_maps=False)
    assert np.abs(raw_graph - raw).max() <= 1e-2 * np.abs(raw).max()
    original, _ = onnx_model.stored_in(patchcore_model).score(images.numpy(), with_maps=False)
    assert np.abs(original - raw).max() > 0.05 * np.abs(raw).max()  # the unchanged file's graph scores otherwise


def test_a_model_whose_graph_cannot_be_exported_is_still_saved_and_predicts_on_pytorch(patchcore_model, parts, tmp_path, monkeypatch):
    from anomalycli.deploy import export

    def fails(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(export, "onnx_bytes", fails)
    export.save_model(AnomalyModel.load(patchcore_model), tmp_path / "model.safetensors")
    assert onnx_model.stored_in(tmp_path / "model.safetensors") is None
    assert AnomalyModel.load(tmp_path / "model.safetensors").stored is None
    run_cli("predict", tmp_path / "model.safetensors", parts / "good", "--output", tmp_path / "rows.json")
    assert len(json.loads((tmp_path / "rows.json").read_text())["images"]) == len(list((parts / "good").glob("*.png")))


def test_an_anomalycli_from_before_stored_graphs_asks_for_an_upgrade_not_a_retrain(patchcore_model, parts, monkeypatch):
    assert modelfile.read_meta(patchcore_model)["format_version"] == modelfile.GRAPH_FORMAT_VERSION == 2
    monkeypatch.setattr(modelfile, "FORMAT_VERSION", 1)  # what the version before reads
    message = one_clear_line(run_cli("predict", patchcore_model, parts / "good", expect=1))
    assert "newer than this anomalycli reads (1); upgrade anomalycli" in message


def test_a_graph_scores_an_image_the_same_alone_or_in_a_batch(patchcore_model, parts):
    # One image an ONNX Runtime call: the arena keeps one image's bank products whatever the
    # caller's batch, and each image's int8 queries are quantised on their own scale.
    model = onnx_model.stored_in(patchcore_model)
    images, _, _ = load_all(discover(parts).samples[:6], model.config["image_size"])
    pixels = images.numpy()
    together, maps = model.score(pixels)
    alone = [model.score(pixels[i : i + 1]) for i in range(len(pixels))]
    assert np.array_equal(together, np.concatenate([raw for raw, _ in alone]))
    assert np.array_equal(maps, np.concatenate([m for _, m in alone]))


def test_calls_in_flight_score_a_batch_as_one_call_at_a_time(patchcore_model, parts, monkeypatch):
    # predict scores two images at once, each on its share of the cores: the same numbers, in order.
    monkeypatch.setattr(onnx_model, "available_cores", lambda: 2)
    one_at_a_time = onnx_model.stored_in(patchcore_model)
    images, _, _ = load_all(discover(parts).samples[:7], one_at_a_time.config["image_size"])
    pixels = images.numpy()
    in_flight = onnx_model.stored_in(patchcore_model)
    in_flight.calls_in_flight = 2
    raw, maps = in_flight.score(pixels)
    expected_raw, expected_maps = one_at_a_time.score(pixels)
    assert in_flight._in_flight is not None and one_at_a_time._in_flight is None
    assert np.allclose(raw, expected_raw, rtol=1e-6, atol=0) and np.allclose(maps, expected_maps, rtol=1e-5, atol=1e-6)
    assert np.argsort(raw).tolist() == np.argsort(expected_raw).tolist()


def test_a_model_loaded_for_calls_in_flight_makes_one_session(patchcore_model, parts, monkeypatch):
    # predict loads the graph for its calls in flight: the probe and the batches share one session.
    monkeypatch.setattr(onnx_model, "available_cores", lambda: 2)
    made = []
    real_session = onnx_model.session
    monkeypatch.setattr(onnx_model, "session", lambda *args: made.append(args) or real_session(*args))
    in_flight = onnx_model.stored_in(patchcore_model, calls_in_flight=2)
    images, _, _ = load_all(discover(parts).samples[:5], in_flight.config["image_size"])
    assert in_flight.probe_holds()
    raw, _ = in_flight.score(images.numpy(), with_maps=False)
    assert len(made) == 1 and made[0][2] == 1  # one session, one thread a call
    assert in_flight._in_flight[0] is in_flight.session
    alone, _ = onnx_model.stored_in(patchcore_model).score(images.numpy(), with_maps=False)
    assert np.allclose(raw, alone, rtol=1e-6, atol=0)


def test_predict_without_regions_or_heatmaps_imports_no_scipy(hybrid_model, parts):
    # SciPy's import was 0.3 s of a one-image predict's start (BENCHMARKS.md, "Speed"): only the
    # regions' labelling needs it (made where rows go to a file), and the drift check's binomial
    # tails are judgement.binomial's.
    script = PREDICT_WITHOUT_TORCH.replace("print('torch imported:', 'torch' in sys.modules)", "print('scipy imported:', 'scipy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script, str(hybrid_model), str(parts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("scipy imported: False")
    assert re.search(r"[1-9]\d* of 36 images flagged as anomalies", done.stdout)  # defects judged (and the drift check run: predict always runs it)
