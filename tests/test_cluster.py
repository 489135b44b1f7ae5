"""predict and fit on a local Ray instance (2 CPUs) give what one process gives."""

import contextlib
import csv
import json
import logging
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import one_clear_line, run_cli
from PIL import Image

from anomalycli import modelfile
from anomalycli.cli.common import with_ray_address
from anomalycli.deploy import ray_cluster, ray_fit, ray_predict
from anomalycli.detection import coreset, int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UsageError


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def one_thread():
    """Compute on one thread, as a Ray worker does: more threads add some sums up in another order,
    which moves the 7th digit of a score (on one machine as on many)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rows(path):
    return list(csv.DictReader(path.open()))


def _same_model(a, b):
    (tensors_a, meta_a), (tensors_b, meta_b) = modelfile.load(a), modelfile.load(b)
    assert tensors_a.keys() == tensors_b.keys()
    for name in tensors_a:
        assert tensors_a[name].equal(tensors_b[name]), name
    assert meta_a["config"] == meta_b["config"] and meta_a["calibration"] == meta_b["calibration"]


def test_a_cluster_nothing_answers_at_is_one_line_at_once(parts, patchcore_model):
    # Before the tests that start Ray here: a process already connected uses that connection.
    pytest.importorskip("ray")
    line = one_clear_line(run_cli("predict", patchcore_model, parts, "--ray", "127.0.0.1:1", expect=1))
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in line


@pytest.mark.parametrize("method, ignored", [("patchcore", False), ("hybrid", False), ("patchcore", True)])
def test_fit_on_ray_makes_the_model_one_process_makes(ray, parts, tmp_path, monkeypatch, method, ignored):
    # Small coreset parts, so that each fold's coreset is several Ray tasks.
    monkeypatch.setattr(coreset, "PART_SIZE", 200)
    common = ["--method", method, "--image-size", "64", "--coreset-ratio", "0.1", "--cv-folds", "3"]
    if ignored:  # a don't-care corner: the workers mask it as one process does
        mask = np.zeros((64, 64), np.uint8)
        mask[:20, :20] = 255
        Image.fromarray(mask).save(tmp_path / "corner.png")
        common += ["--ignore", tmp_path / "corner.png"]
    with one_thread():
        run_cli("train", parts, *common, "--run-dir", tmp_path / "here")
    run_cli("train", parts, *common, "--run-dir", tmp_path / "ray", "--ray")
    _same_model(tmp_path / "here/model.safetensors", tmp_path / "ray/model.safetensors")
    assert len(modelfile.read_meta(tmp_path / "ray/model.safetensors")["config"]["bank_parts"]) == 3


def test_a_few_goods_learnt_turned_fit_on_ray_as_in_one_process(ray, parts, tmp_path):
    # Only the originals are scored out of fold; their turned copies teach the bank, on the workers as here.
    few = tmp_path / "few"
    (few / "good").mkdir(parents=True)
    for path in sorted((parts / "good").iterdir())[:3]:
        shutil.copy(path, few / "good" / path.name)
    common = ["--method", "patchcore", "--image-size", "64", "--orientation", "free"]
    with one_thread():
        run_cli("train", few, *common, "--run-dir", tmp_path / "here")
    run_cli("train", few, *common, "--run-dir", tmp_path / "ray", "--ray")
    _same_model(tmp_path / "here/model.safetensors", tmp_path / "ray/model.safetensors")
    config = modelfile.read_meta(tmp_path / "ray/model.safetensors")["config"]
    assert config["orientation"]["turns"] > 1 and len(config["bank_parts"]) == 3


def test_predict_on_ray_gives_the_same_rows_in_the_same_order(ray, parts, patchcore_model, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(parts / "not-good", images)
    (images / "broken.png").write_bytes(b"not a png")
    # A list repeats, names files elsewhere and missing ones; rows follow it line by line.
    listed = tmp_path / "list.txt"
    listed.write_text(f"# tonight's archive\nimages/spot001.png\n{parts / 'good/good001.png'}\n\nimages/broken.png\nimages/spot001.png\nimages/gone.png\n")
    with one_thread():
        here = run_cli("predict", patchcore_model, listed, "--engine", "torch", "--batch-size", "2", "--output", tmp_path / "here.csv")
    there = run_cli("predict", patchcore_model, listed, "--engine", "torch", "--batch-size", "2", "--output", tmp_path / "ray.csv", "--ray")
    # The same rows; the defect regions come from maps, which stay on the workers (made here only).
    predict_columns = ("path", "score", "raw_score", "verdict", "error")
    assert [{k: r[k] for k in predict_columns} for r in _rows(tmp_path / "here.csv")] == _rows(tmp_path / "ray.csv")
    assert "regions" in _rows(tmp_path / "here.csv")[0] and "regions: not made on Ray" in there.output
    # The line on where the model runs comes from Ray's workers too, once.
    engine_lines = lambda result: [line for line in result.output.splitlines() if line.startswith("runs on:")]  # noqa: E731
    int8 = int8_backbone.int8_of(AnomalyModel.load(patchcore_model).net) is not None
    assert engine_lines(there) == engine_lines(here) and len(engine_lines(here)) == 1 and ("int8 backbone" in engine_lines(here)[0]) == int8
    rows = _rows(tmp_path / "ray.csv")
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["spot001.png", "good001.png", "broken.png", "spot001.png", "gone.png"]
    assert [r["verdict"] for r in rows][2:] == ["unreadable", rows[0]["verdict"], "unreadable"]
    assert "file not found" in rows[4]["error"]
    # The drift check sees the same images on Ray, their statistics included.
    run_cli("predict", patchcore_model, listed, "--engine", "torch", "--output", tmp_path / "here.json")
    run_cli("predict", patchcore_model, listed, "--engine", "torch", "--output", tmp_path / "ray.json", "--ray")
    here, there = (json.loads((tmp_path / name).read_text())["drift"] for name in ("here.json", "ray.json"))
    summary = lambda report: [(t["what"], t["share"], t["drift"]) for t in report["tests"]]  # noqa: E731
    assert summary(there) == summary(here) and {t["what"] for t in there["tests"]} >= {"score", "brightness"}


def test_predict_on_ray_retries_a_worker_that_died(ray, parts, patchcore_model, tmp_path, monkeypatch):
    marker = tmp_path / "died-once"

    class DiesOnce(ray_predict._Scorer):
        def __call__(self, batch):
            if not marker.exists():
                marker.touch()
                import os

                os._exit(1)  # the worker process dies, as on a machine lost mid-run
            return super().__call__(batch)

    monkeypatch.setattr(ray_predict, "_Scorer", DiesOnce)
    paths = sorted((parts / "good").glob("*.png"))[:3]  # one batch, one actor: it dies, and a new one scores it
    scored, _ = ray_predict.score_paths(ray, patchcore_model, paths, engine="torch", batch_size=3, show_progress=False)
    assert marker.exists() and [s.path for s in scored] == paths and all(s.verdict in ("normal", "anomaly") for s in scored)


def test_predict_on_ray_that_cannot_finish_names_the_missing_images_and_writes_nothing(ray, parts, patchcore_model, tmp_path, monkeypatch):
    class Fails(ray_predict._Scorer):
        def __call__(self, batch):
            raise MemoryError("out of memory")

    monkeypatch.setattr(ray_predict, "_Scorer", Fails)
    out = tmp_path / "rows.csv"
    line = one_clear_line(run_cli("predict", patchcore_model, parts / "good", "--output", out, "--ray", expect=1))
    assert "the Ray run stopped" in line and "24 of 24 images were not scored (first:" in line and "nothing was written" in line
    assert not out.exists()


def test_fit_on_ray_that_cannot_finish_writes_no_model(ray, parts, tmp_path, monkeypatch):
    def fails(extractor, paths, image_size, with_descriptors, keep, framing, stretch, windows):
        raise MemoryError("out of memory")

    monkeypatch.setattr(ray_fit, "_embed_task", fails)
    line = one_clear_line(run_cli("train", parts, "--image-size", "64", "--run-dir", tmp_path / "run", "--ray", expect=1))
    assert "the Ray fit stopped" in line and "36 images from" in line and "no model was written" in line
    assert not (tmp_path / "run/model.safetensors").exists()


def test_without_ray_the_option_says_how_to_install_it(parts, patchcore_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    for args in (["predict", patchcore_model, parts, "--ray"], ["train", parts, "--ray"]):
        line = one_clear_line(run_cli(*args, expect=2))
        assert 'pip install "anomalycli[ray]"' in line


def test_ray_takes_an_optional_address():
    pytest.importorskip("ray")
    assert with_ray_address(["images", "--ray"]) == ["images", "--ray", "local"]
    assert with_ray_address(["--ray", "images"]) == ["--ray", "local", "images"]  # a folder is no address
    assert with_ray_address(["--ray", "--output", "a.csv"]) == ["--ray", "local", "--output", "a.csv"]
    assert with_ray_address(["--ray", "auto", "images"]) == ["--ray", "auto", "images"]
    assert with_ray_address(["--ray", "10.0.0.5:6379", "x"]) == ["--ray", "10.0.0.5:6379", "x"]
    assert with_ray_address(["images"]) == ["images"]
    with pytest.raises(UsageError, match="not a cluster address"):
        ray_cluster.check_address("images")


def test_the_classifier_is_not_fitted_on_ray(parts):
    pytest.importorskip("ray")
    line = one_clear_line(run_cli("train", parts, "--method", "classifier", "--ray", expect=2))
    assert "--ray fits patchcore and hybrid models" in line
