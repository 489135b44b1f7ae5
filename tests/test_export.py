import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_clear_line, run_cli
from PIL import Image

from anomalycli.data.decoding import DecodeAhead
from anomalycli.data.layouts import discover
from anomalycli.data.tensors import load_all
from anomalycli.deploy import export, onnx_model
from anomalycli.deploy.onnx_model import OnnxModel
from anomalycli.deploy.scoring import iter_scores
from anomalycli.detection import bank_search, int8_backbone
from anomalycli.detection.methods import AnomalyModel

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_file(patchcore_model, tmp_path_factory):
    return export.export_onnx(AnomalyModel.load(patchcore_model), tmp_path_factory.mktemp("onnx") / "m.onnx")


def _images(parts, size):
    images, _, _ = load_all(discover(parts).samples, size)
    return images


@pytest.mark.parametrize("fixture", ["patchcore_model", "hybrid_model", "classifier_model"])
def test_exported_file_scores_as_the_model_does(fixture, parts, tmp_path, request, exact_search):
    path = request.getfixturevalue(fixture)
    model = AnomalyModel.load(path)
    run_cli("export", path, "--out", tmp_path / "m.onnx")
    exported = onnx_model.load(tmp_path / "m.onnx")
    assert (exported.method, exported.config, exported.calibration) == (model.method, model.config, model.calibration)
    images = _images(parts, model.config["image_size"])
    raw, maps = model.score(images)
    raw_onnx, maps_onnx = exported.score(images)
    # Relative to the scores' scale: the hybrid's fused scores cross zero, where no relative bound
    # holds. An int8 model's file searches its bank with 7-bit products (export._searching_in_int8),
    # which may pick a row a rounding step further than float32's nearest: 1e-3 of the scale, where
    # the rest of the graph holds to float32's rounding (the next test).
    bound = 1e-3 if int8_backbone.int8_of(model.net) is not None else 1e-4
    assert torch.allclose(torch.from_numpy(raw_onnx), raw, rtol=1e-4, atol=bound * float(raw.abs().max()))
    if model.has_maps:
        assert torch.allclose(torch.from_numpy(maps_onnx), maps, rtol=1e-4, atol=1e-3 * float(maps.abs().max()))
    else:
        assert maps_onnx is None and not exported.has_maps
    paths = [s.path for s in discover(parts).samples]
    verdicts = [r.verdict for r in iter_scores(model, paths, show_progress=False)]
    assert verdicts == [r.verdict for r in iter_scores(exported, paths, show_progress=False)]
    if model.has_maps:  # the 2-epoch random-weight classifier flags everything
        assert {"anomaly", "normal"} <= set(verdicts)


@pytest.mark.parametrize("fixture", ["patchcore_model", "hybrid_model"])
def test_an_int8_files_graph_apart_from_its_bank_search_scores_to_float32s_rounding(fixture, parts, tmp_path, request, exact_search, monkeypatch):
    """Preprocessing, the int8 backbone (its leading convolutions in fp32) and the head as the model
    computes them: exported with a float32 bank search, the file's scores are the model's to 1e-5,
    its search in one block, and where an image's products are over the budget, in blocks of its
    patch positions (every image of a call blocked alike)."""
    import onnx

    model = AnomalyModel.load(request.getfixturevalue(fixture))
    assert int8_backbone.int8_of(model.net) is not None
    monkeypatch.setattr(export, "_searching_in_int8", lambda model: model)
    images = _images(parts, model.config["image_size"])
    raw, maps = model.score(images)
    products, shipped = {}, bank_search.EXPORT_PRODUCTS_BYTES
    for budget in (shipped, 4096):
        monkeypatch.setattr(bank_search, "EXPORT_PRODUCTS_BYTES", budget)
        path = export.export_onnx(model, tmp_path / f"{budget}.onnx")
        products[budget] = sum(node.op_type == "MatMul" for node in onnx.load(path).graph.node)
        raw_onnx, maps_onnx = onnx_model.load(path).score(images)
        assert torch.allclose(torch.from_numpy(raw_onnx), raw, rtol=1e-5, atol=1e-5 * float(raw.abs().max()))
        assert torch.allclose(torch.from_numpy(maps_onnx), maps, rtol=1e-5, atol=1e-5 * float(maps.abs().max()))
    assert products[4096] > products[shipped] + 1  # the tiny budget's blocks


def test_the_readme_recipe_runs_the_file_in_a_bare_onnxruntime_session(patchcore_model, onnx_file, parts, tmp_path, exact_search):
    import re
    import shutil

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    recipe = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "onnxruntime.InferenceSession" in block)
    image = next((parts / "not-good").glob("*.png"))
    # The same part as a camera's JPEG four times the model's size: decoded at a draft scale, as predict does.
    camera = tmp_path / "camera"
    camera.mkdir()
    Image.open(image).resize((256, 256), Image.BICUBIC).save(camera / "part.png", format="JPEG", quality=90)
    shutil.copy(image, tmp_path / "part.png")
    for folder in (tmp_path, camera):
        shutil.copy(onnx_file, folder / "model.onnx")
        # A fresh interpreter that never imports anomalycli or torch.
        script = recipe + "\nimport sys\nassert 'anomalycli' not in sys.modules and 'torch' not in sys.modules\n"
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=folder)
        assert done.returncode == 0, done.stderr
        verdict, score = done.stdout.split()
        (expected,) = iter_scores(AnomalyModel.load(patchcore_model), [folder / "part.png"], show_progress=False)
        assert verdict == expected.verdict and abs(float(score) - expected.score) < 1e-4, folder.name


def test_predict_and_eval_take_the_exported_file_and_agree_with_the_model(parts, patchcore_model, onnx_file, tmp_path, exact_search):
    """The int8 export, in a file or exported in memory, scores as predict's default path (the int8
    backbone on ONNX Runtime, the rest on PyTorch), and so does --engine torch: never the fp32 backbone."""
    for engine_args, name in [((onnx_file,), "file"), ((patchcore_model,), "auto"), ((patchcore_model, "--engine", "onnx"), "memory")]:
        result = run_cli("predict", *engine_args[:1], parts / "not-good", *engine_args[1:], "--output", tmp_path / f"{name}.json")
        assert "fp32 backbone" not in result.output
    rows = {name: json.loads((tmp_path / f"{name}.json").read_text())["images"] for name in ("file", "auto", "memory")}
    for name in ("file", "memory"):
        assert [r["verdict"] for r in rows[name]] == [r["verdict"] for r in rows["auto"]]
        assert np.allclose([r["raw_score"] for r in rows[name]], [r["raw_score"] for r in rows["auto"]], rtol=1e-4)
    torch_run = run_cli("predict", patchcore_model, parts / "not-good", "--engine", "torch", "--output", tmp_path / "torch.json")
    assert "runs on: PyTorch, int8 backbone on ONNX Runtime's int8 kernels" in " ".join(torch_run.output.split())
    torch_rows = json.loads((tmp_path / "torch.json").read_text())["images"]
    assert [r["verdict"] for r in torch_rows] == [r["verdict"] for r in rows["auto"]]
    run_cli("eval", onnx_file, parts, "--json", tmp_path / "eval.json")
    assert json.loads((tmp_path / "eval.json").read_text())["pixel_auroc"] > 0.8


def test_predict_decodes_ahead_at_an_exported_files_size_before_it_loads(parts, patchcore_model, onnx_file, tmp_path):
    from anomalycli.cli.predict import _decode_ahead

    paths = sorted((parts / "good").glob("*.png"))[:3]
    for model in (patchcore_model, onnx_file):
        with _decode_ahead(model, paths, batch_size=2) as decoded:
            assert isinstance(decoded, DecodeAhead) and [pixels.shape for pixels, _ in decoded] == [(64, 64, 3)] * 3
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"not an onnx file")  # its one line comes from loading it: nothing decodes before
    assert isinstance(_decode_ahead(damaged, paths, batch_size=2), contextlib.nullcontext)


def test_predict_from_an_exported_file_never_imports_pytorch(parts, onnx_file, tmp_path):
    """Rows, drift check and heat maps from the file alone: PyTorch's import is most of a predict's start."""
    script = (
        "import sys\nfrom anomalycli.cli import main\n"
        "sys.argv = ['anomaly', 'predict', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    args = [onnx_file, parts / "not-good", "--output", tmp_path / "rows.json", "--heatmaps", tmp_path / "maps"]
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("torch imported: False")
    run_cli("predict", onnx_file, parts / "not-good", "--output", tmp_path / "again.json")  # here, where PyTorch is loaded
    rows, again = (json.loads((tmp_path / name).read_text()) for name in ("rows.json", "again.json"))
    assert rows["images"] == again["images"] and rows["drift"] == again["drift"]
    assert len(list((tmp_path / "maps").glob("*.png"))) == len(rows["images"]) > 0


def test_an_int8_file_checks_on_its_probe_image_that_this_cpu_scores_as_the_exporting_one(patchcore_model, parts, tmp_path):
    import onnx

    from anomalycli.deploy.engines import on_engine

    run_cli("export", patchcore_model, "--out", tmp_path / "int8.onnx")
    model = onnx_model.load(tmp_path / "int8.onnx")
    assert model.probe is not None and model.probe_mismatch() == 0.0 and on_engine(model, "auto", 1) == (model, "")

    def with_probe(name, change):
        proto = onnx.load(tmp_path / "int8.onnx")
        entry = next(p for p in proto.metadata_props if p.key == export.PROBE_KEY)
        probe = json.loads(entry.value)
        change(probe)
        entry.value = json.dumps(probe)
        onnx.save(proto, tmp_path / name)
        return tmp_path / name

    # As a CPU on which no kernels reproduce the file's scores sees it: the probe scored 5 % of the
    # score range away on the int8 kernels and on the reference ones. Its verdicts would not hold.
    spread = model.calibration.high - model.calibration.low
    moved = with_probe("moved.onnx", lambda probe: probe.update(raw_score=probe["raw_score"] + 0.05 * spread))
    message = one_clear_line(run_cli("predict", moved, parts / "good", expect=1))
    assert "scores the model's probe image 5.0% of the score range away" in message and "verdicts would not hold here" in message
    damaged = with_probe("damaged.onnx", lambda probe: probe.update(image_png_base64="not base64!"))
    assert "probe is damaged" in one_clear_line(run_cli("predict", damaged, parts / "good", expect=1))


def test_an_int8_file_on_the_reference_kernels_scores_as_on_the_int8_ones(patchcore_model, parts, tmp_path):
    # The fallback where a CPU's int8 kernels fail the probe: the same quantised network in float32.
    from dataclasses import replace

    run_cli("export", patchcore_model, "--out", tmp_path / "int8.onnx")
    fast = onnx_model.load(tmp_path / "int8.onnx")
    reference = replace(fast, session=onnx_model.whole_graph_session(fast.source, onnx_model.REFERENCE_KERNELS), kernels=onnx_model.REFERENCE_KERNELS)
    images, _, _ = load_all(discover(parts).samples, 64)
    raw_fast, _ = fast.score(images, with_maps=False)
    raw_reference, _ = reference.score(images, with_maps=False)
    assert not np.array_equal(raw_fast, raw_reference)  # other kernels indeed ran
    assert np.allclose(raw_reference, raw_fast, rtol=0, atol=0.02 * float(np.abs(raw_fast).max()))
    assert reference.probe_holds() and "reference kernels" in reference.describe()


def test_export_writes_beside_the_model_and_never_replaces_unasked(patchcore_model, tmp_path):
    import shutil

    model = tmp_path / "run" / "model.safetensors"
    model.parent.mkdir()
    shutil.copy(patchcore_model, model)
    result = run_cli("export", model.parent)
    assert (tmp_path / "run" / "model.onnx").is_file() and "model.onnx" in result.output
    before = (tmp_path / "run" / "model.onnx").read_bytes()
    assert "--overwrite" in one_clear_line(run_cli("export", model, expect=1))
    assert (tmp_path / "run" / "model.onnx").read_bytes() == before
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_damaged_and_foreign_onnx_files_get_one_line(parts, onnx_file, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    good = onnx_file
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.onnx"
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]
    )
    onnx.save(helper.make_model(graph), foreign)
    for path in (damaged, foreign):
        assert "not an anomalycli model file" in one_clear_line(run_cli("predict", path, parts / "good", expect=1))
        assert "not an anomalycli model file" in one_clear_line(run_cli("eval", path, parts, expect=1))


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["predict", "{model}", "{parts}", "--engine", "tpu"], 2, "--engine must be one of"),
        (["predict", "{onnx}", "{parts}", "--engine", "torch"], 2, "runs on ONNX Runtime only"),
        (["export", "{onnx}"], 2, "already an ONNX export"),
        (["export", "{model}", "--format", "tflite"], 2, "--format must be one of"),
        (["export", "{model}", "--out", "{tmp}/m.pt"], 2, "must end in .onnx"),
        (["calibrate", "{onnx}", "--target-recall", "0.9"], 2, "calibrate the .safetensors model"),
    ],
)
def test_engine_and_export_mistakes_are_one_line(parts, patchcore_model, onnx_file, tmp_path, args, code, words):
    args = [a.format(model=patchcore_model, onnx=onnx_file, parts=parts, tmp=tmp_path) for a in args]
    assert words in one_clear_line(run_cli(*args, expect=code))


@pytest.fixture(scope="module")
def fp32_model(parts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "fp32"
    run_cli("train", parts, "--method", "patchcore", "--image-size", "64", "--run-dir", run, "--coreset-ratio", "0.1", "--precision", "fp32")
    return run / "model.safetensors"


def test_auto_runs_the_stored_graph_or_the_int8_backbone_and_exports_fp32_files_without_one_for_many_images(parts, patchcore_model, fp32_model, monkeypatch):
    from anomalycli.deploy import engine_choice, engines
    from anomalycli.detection import int8_backbone

    model = engines.load_model(patchcore_model)
    graph, note = engines.on_engine(model, "auto", 1)
    assert isinstance(graph, OnnxModel) and graph.probe_mismatch() == 0.0 and note == ""  # the file's own scoring graph
    assert isinstance(engines.on_engine(model, "onnx", 1)[0], OnnxModel)
    model.stored = None  # a file from before stored graphs: the int8 backbone, the rest on PyTorch
    assert engines.on_engine(model, "auto", 10_000) == (model, "") and int8_backbone.int8_of(model.net).kernels == onnx_model.INT8_KERNELS
    assert isinstance(engines.on_engine(model, "onnx", 1)[0], OnnxModel)
    # An fp32 model runs the graph its file carries, for one image too, and says it is fp32.
    model = engines.load_model(fp32_model)
    assert model.stored is not None and "probe_tensor" not in model.stored
    graph, note = engines.on_engine(model, "auto", 1)
    assert isinstance(graph, OnnxModel) and graph.probe is None and "trained with --precision fp32" in note
    assert engines.on_engine(model, "torch", 1)[0] is model
    # An fp32 file without a graph (from before): a few images do not pay for the export; --engine onnx exports whatever the number.
    model.stored = None
    exported, note = engines.on_engine(model, "auto", engine_choice.AUTO_ONNX_MIN_IMAGES)
    assert isinstance(exported, OnnxModel) and "trained with --precision fp32" in note
    assert engines.on_engine(model, "auto", engine_choice.AUTO_ONNX_MIN_IMAGES - 1)[0] is model
    assert isinstance(engines.on_engine(model, "onnx", 1)[0], OnnxModel)
    monkeypatch.setattr(engine_choice, "onnxruntime_installed", lambda: False)
    assert engine_choice.resolve_engine("auto") == "torch"
    assert engines.on_engine(model, "auto", 10_000)[0] is model
    message = one_clear_line(run_cli("predict", fp32_model, parts / "good", "--engine", "onnx", expect=2))
    assert "pip install 'anomalycli[onnx]'" in message


def test_predict_fails_when_no_image_can_be_read_and_lists_some_unreadable(parts, patchcore_model, tmp_path):
    import shutil

    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"\x89PNG\r\n not really")
    message = one_clear_line(run_cli("predict", patchcore_model, folder, expect=1))
    assert "none of the 2 image file(s)" in message
    shutil.copy(next((parts / "good").glob("*.png")), folder / "c.png")
    result = run_cli("predict", patchcore_model, folder, "--output", tmp_path / "rows.json")
    rows = json.loads((tmp_path / "rows.json").read_text())["images"]
    assert [r["verdict"] for r in rows].count("unreadable") == 2 and "2 unreadable" in result.output


def test_a_model_file_from_before_this_version_exports_with_parity(parts, patchcore_model, tmp_path, exact_search):
    """No bank parts, no blurred score, batch norm not folded: the oldest files still export."""
    from anomalycli.detection import backbones
    from anomalycli.detection.methods.patchcore import PatchCore

    new = AnomalyModel.load(patchcore_model)
    name = new.config["backbone"]
    old_net = PatchCore(backbones.FeatureExtractor(name, backbones.build(name, "imagenet"), fold=False), new.net.bank, score_blur=0.0)
    old_config = {k: v for k, v in new.config.items() if k not in ("batch_norm_folded", "bank_parts", "score_blur", "precision", "int8")}
    old_file = AnomalyModel("patchcore", old_net, old_config, new.calibration).save(tmp_path / "old.safetensors")
    old = AnomalyModel.load(old_file)
    assert old.net.part_sizes is None and old.net.score_blur == 0.0
    run_cli("export", old_file)
    images = _images(parts, 64)
    raw, _ = old.score(images, with_maps=False)
    raw_onnx, _ = onnx_model.load(tmp_path / "old.onnx").score(images, with_maps=False)
    assert torch.allclose(torch.from_numpy(raw_onnx), raw, rtol=1e-4, atol=1e-4 * float(raw.abs().max()))
