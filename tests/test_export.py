import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalycli import export
from anomalycli.data import discover, load_all
from anomalycli.engines import OnnxModel
from anomalycli.inference import iter_scores
from anomalycli.methods import AnomalyModel
from conftest import one_clear_line, run_cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_file(patchcore_model, tmp_path_factory):
    return export.export_onnx(AnomalyModel.load(patchcore_model), tmp_path_factory.mktemp("onnx") / "m.onnx")


def _images(parts, size):
    images, _, _ = load_all(discover(parts).samples, size)
    return images


@pytest.mark.parametrize("fixture", ["patchcore_model", "hybrid_model", "classifier_model"])
def test_exported_file_scores_as_the_model_does(fixture, parts, tmp_path, request):
    path = request.getfixturevalue(fixture)
    model = AnomalyModel.load(path)
    run_cli("export", path, "--out", tmp_path / "m.onnx")
    exported = OnnxModel.load(tmp_path / "m.onnx")
    assert (exported.method, exported.config, exported.calibration) == (model.method, model.config, model.calibration)
    images = _images(parts, model.config["image_size"])
    raw, maps = model.score(images)
    raw_onnx, maps_onnx = exported.score(images)
    # Within 1e-4 of the scores' scale: the hybrid's fused scores cross zero, where no relative bound holds.
    assert torch.allclose(raw_onnx, raw, rtol=1e-4, atol=1e-4 * float(raw.abs().max()))
    if model.has_maps:
        assert torch.allclose(maps_onnx, maps, rtol=1e-4, atol=1e-3 * float(maps.abs().max()))
    else:
        assert maps_onnx is None and not exported.has_maps
    paths = [s.path for s in discover(parts).samples]
    verdicts = [r.verdict for r in iter_scores(model, paths, show_progress=False)]
    assert verdicts == [r.verdict for r in iter_scores(exported, paths, show_progress=False)]
    if model.has_maps:  # the 2-epoch random-weight classifier flags everything
        assert {"anomaly", "normal"} <= set(verdicts)


def test_the_readme_recipe_runs_the_file_in_a_bare_onnxruntime_session(patchcore_model, onnx_file, parts, tmp_path):
    import re
    import shutil

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    recipe = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "onnxruntime.InferenceSession" in block)
    image = next((parts / "not-good").glob("*.png"))
    shutil.copy(image, tmp_path / "part.png")
    shutil.copy(onnx_file, tmp_path / "model.onnx")
    # A fresh interpreter that never imports anomalycli or torch.
    script = recipe + "\nimport sys\nassert 'anomalycli' not in sys.modules and 'torch' not in sys.modules\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    verdict, score = done.stdout.split()
    (expected,) = iter_scores(AnomalyModel.load(patchcore_model), [image], show_progress=False)
    assert verdict == expected.verdict and abs(float(score) - expected.score) < 1e-4


def test_predict_and_eval_take_the_exported_file_and_agree_with_torch(parts, patchcore_model, onnx_file, tmp_path):
    for engine_args, name in [((onnx_file,), "file"), ((patchcore_model, "--engine", "torch"), "torch"), ((patchcore_model, "--engine", "onnx"), "memory")]:
        run_cli("predict", *engine_args[:1], parts / "not-good", *engine_args[1:], "--output", tmp_path / f"{name}.json")
    rows = {name: json.loads((tmp_path / f"{name}.json").read_text())["images"] for name in ("file", "torch", "memory")}
    for name in ("file", "memory"):
        assert [r["verdict"] for r in rows[name]] == [r["verdict"] for r in rows["torch"]]
        assert np.allclose([r["raw_score"] for r in rows[name]], [r["raw_score"] for r in rows["torch"]], rtol=1e-4)
    run_cli("eval", onnx_file, parts, "--json", tmp_path / "eval.json")
    assert json.loads((tmp_path / "eval.json").read_text())["pixel_auroc"] > 0.8


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
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
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


def test_auto_exports_for_many_images_and_without_onnxruntime_runs_on_torch(parts, patchcore_model, tmp_path, monkeypatch):
    from anomalycli import engines

    model = engines.load_model(patchcore_model)
    assert isinstance(engines.on_engine(model, "auto", engines.AUTO_ONNX_MIN_IMAGES), OnnxModel)
    # A few images do not pay for the export; --engine onnx exports whatever the number.
    assert engines.on_engine(model, "auto", engines.AUTO_ONNX_MIN_IMAGES - 1) is model
    assert isinstance(engines.on_engine(model, "onnx", 1), OnnxModel)
    monkeypatch.setattr(engines, "onnxruntime_installed", lambda: False)
    assert engines.resolve_engine("auto") == "torch"
    assert engines.on_engine(model, "auto", 10_000) is model
    message = one_clear_line(run_cli("predict", patchcore_model, parts / "good", "--engine", "onnx", expect=2))
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


def test_a_model_file_from_before_this_version_exports_with_parity(parts, patchcore_model, tmp_path):
    """No bank parts, no blurred score, batch norm not folded: the oldest files still export."""
    from anomalycli import backbones
    from anomalycli.methods.patchcore import PatchCore

    new = AnomalyModel.load(patchcore_model)
    name = new.config["backbone"]
    old_net = PatchCore(backbones.FeatureExtractor(name, backbones.build(name, "imagenet"), fold=False), new.net.bank, score_blur=0.0)
    old_config = {k: v for k, v in new.config.items() if k not in ("batch_norm_folded", "bank_parts", "score_blur")}
    old_file = AnomalyModel("patchcore", old_net, old_config, new.calibration).save(tmp_path / "old.safetensors")
    old = AnomalyModel.load(old_file)
    assert old.net.part_sizes is None and old.net.score_blur == 0.0
    run_cli("export", old_file)
    images = _images(parts, 64)
    raw, _ = old.score(images, with_maps=False)
    raw_onnx, _ = OnnxModel.load(tmp_path / "old.onnx").score(images, with_maps=False)
    assert torch.allclose(raw_onnx, raw, rtol=1e-4, atol=1e-4 * float(raw.abs().max()))
