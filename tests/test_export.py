import json
import subprocess
import sys

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


def test_exported_file_runs_in_a_bare_onnxruntime_session(patchcore_model, parts, tmp_path):
    model = AnomalyModel.load(patchcore_model)
    export.export_onnx(model, tmp_path / "m.onnx")
    images = _images(parts, 64)[:5]
    expected = model.calibration.normalise(model.score(images, with_maps=False)[0].numpy())
    np.save(tmp_path / "images.npy", images.numpy())
    # The README's recipe, in a fresh interpreter that never imports anomalycli or torch.
    script = f"""
import json, sys
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession({str(tmp_path / 'm.onnx')!r})
meta = session.get_modelmeta().custom_metadata_map
score, raw = session.run(["score", "raw_score"], {{"images": np.load({str(tmp_path / 'images.npy')!r})}})
assert "anomalycli" not in sys.modules and "torch" not in sys.modules
print(json.dumps({{"score": score.tolist(), "method": meta["method"], "threshold": float(meta["raw_threshold"])}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path).stdout)
    assert out["method"] == "patchcore" and out["threshold"] == model.calibration.threshold
    assert np.allclose(out["score"], expected, atol=1e-4)


def test_predict_and_eval_take_the_exported_file_and_agree_with_torch(parts, patchcore_model, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    run_cli("export", patchcore_model, "--out", onnx_file)
    for engine_args, name in [((onnx_file,), "file"), ((patchcore_model, "--engine", "torch"), "torch"), ((patchcore_model, "--engine", "onnx"), "memory")]:
        run_cli("predict", *engine_args[:1], parts / "not-good", *engine_args[1:], "--output", tmp_path / f"{name}.json")
    rows = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("file", "torch", "memory")}
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


def test_damaged_and_foreign_onnx_files_get_one_line(parts, patchcore_model, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    good = tmp_path / "m.onnx"
    run_cli("export", patchcore_model, "--out", good)
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
def test_engine_and_export_mistakes_are_one_line(parts, patchcore_model, tmp_path, args, code, words):
    onnx_file = tmp_path / "m.onnx"
    export.export_onnx(AnomalyModel.load(patchcore_model), onnx_file)
    args = [a.format(model=patchcore_model, onnx=onnx_file, parts=parts, tmp=tmp_path) for a in args]
    assert words in one_clear_line(run_cli(*args, expect=code))


def test_without_onnxruntime_auto_runs_on_torch_and_onnx_says_how_to_install(parts, patchcore_model, tmp_path, monkeypatch):
    from anomalycli import engines

    monkeypatch.setattr(engines, "onnxruntime_installed", lambda: False)
    assert engines.resolve_engine("auto") == "torch"
    assert isinstance(engines.load_model(patchcore_model), AnomalyModel)
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
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["verdict"] for r in rows].count("unreadable") == 2 and "2 unreadable" in result.output
