"""Bad input, untrusted files, interruptions, reruns, determinism: what users' folders throw at the tool."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import one_clear_line, run_cli
from PIL import Image
from safetensors.torch import save_file

from anomalycli.data.images import ImageError, load_image
from anomalycli.workflows.train_options import write_history


def _make(folder, name, kind):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    good = Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    if kind == "truncated-png":
        good.save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "truncated-jpeg":
        good.save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "1x1":
        Image.new("L", (1, 1), 128).save(path)
    elif kind == "16-bit":
        Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16)).save(path)
    elif kind == "palette":
        good.convert("P").save(path)
    elif kind == "cmyk":
        good.convert("CMYK").save(path, format="JPEG")
    elif kind == "rgba":
        good.convert("RGBA").save(path)
    elif kind == "exif-rotated":
        image = Image.new("RGB", (60, 30), (200, 10, 10))
        exif = image.getexif()
        exif[0x0112] = 8
        image.save(path, exif=exif)
    else:
        good.save(path)
    return path


BROKEN = [
    ("cut.png", "truncated-png", "truncated"),
    ("cut.jpg", "truncated-jpeg", "truncated"),
    ("empty.png", "zero-byte", "empty file"),
    ("notes.png", "text", "not an image"),
]
FINE = [
    ("tiny.png", "1x1"),
    ("deep.png", "16-bit"),
    ("pal.png", "palette"),
    ("print.jpg", "cmyk"),
    ("alpha.png", "rgba"),
    ("rotated.jpg", "exif-rotated"),
    ("name with spaces.png", "plain"),
    ("ねじ_画像.png", "plain"),
]


@pytest.mark.parametrize("name, kind, words", BROKEN)
def test_broken_image_gets_a_row_naming_file_and_problem(patchcore_model, tmp_path, name, kind, words):
    _make(tmp_path, "ok.png", "plain")
    _make(tmp_path, name, kind)
    out = tmp_path.parent / f"{tmp_path.name}.json"
    result = run_cli("predict", patchcore_model, tmp_path, "--output", out)
    assert "Traceback" not in result.output and "1 unreadable" in result.output
    rows = {os.path.basename(r["path"]): r for r in json.loads(out.read_text())["images"]}
    assert rows["ok.png"]["verdict"] in ("normal", "anomaly")
    assert rows[name]["verdict"] == "unreadable" and name in rows[name]["error"] and words in rows[name]["error"]


@pytest.mark.parametrize("name, kind", FINE)
def test_unusual_but_valid_images_are_scored(patchcore_model, tmp_path, name, kind):
    _make(tmp_path, name, kind)
    out = tmp_path.parent / f"{tmp_path.name}.csv"
    run_cli("predict", patchcore_model, tmp_path, "--output", out)
    (row,) = list(csv.DictReader(out.open(encoding="utf-8")))
    assert row["path"].endswith(name) and row["verdict"] in ("normal", "anomaly") and 0 <= float(row["score"]) <= 1


def test_non_image_files_are_skipped_with_a_count(patchcore_model, tmp_path):
    _make(tmp_path, "a.png", "plain")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "readme.txt").write_text("x")
    assert "2 non-image file(s) skipped" in run_cli("predict", patchcore_model, tmp_path).output


def test_symlink_loop_does_not_hang(patchcore_model, tmp_path):
    _make(tmp_path, "a/x.png", "plain")
    (tmp_path / "a/loop").symlink_to(tmp_path / "a")
    assert "of 1 image flagged" in run_cli("predict", patchcore_model, tmp_path).output


def test_empty_folder(patchcore_model, tmp_path):
    assert "no images found" in one_clear_line(run_cli("predict", patchcore_model, tmp_path, expect=1))


def test_decompression_bomb_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = _make(tmp_path, "huge.png", "plain")
    with pytest.raises(ImageError, match="huge.png: image is too large"):
        load_image(path)


def test_unreadable_permissions_name_the_file(tmp_path, monkeypatch):
    path = _make(tmp_path, "locked.png", "plain")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageError, match="locked.png: permission denied"):
        load_image(path)


def test_one_class_only_patchcore_warns_and_uses_a_percentile(parts, tmp_path):
    import shutil

    shutil.copytree(parts / "good", tmp_path / "only/good")
    result = run_cli("train", tmp_path / "only", "--image-size", "64", "--run-dir", tmp_path / "r")
    assert "warning:" in result.output and "no labelled defects" in result.output
    assert "--method hybrid" not in result.output  # nothing for the hybrid to learn from


@pytest.mark.parametrize(
    "content, words",
    [
        ("filename,label\ngood/good001.png,good\nnope.png,bad\n", "missing"),
        ("filename,label\ngood/good001.png,fine\n", "--normal-class"),
        ("filename,label\ngood/good001.png,good\ngood/good001.png,bad\n", "listed twice"),
        ("file;label\ngood/good001.png;good\n", "header"),
    ],
)
def test_bad_labels_csv_through_the_cli(parts, tmp_path, content, words):
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    message = one_clear_line(run_cli("inspect", parts, "--labels", labels, expect=1))
    assert words in message and "labels.csv" in message


def test_manifest_pointing_outside_data(parts, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,defect_type,split\n../outside.png,good,,train\n")
    assert "outside" in one_clear_line(run_cli("train", parts, "--manifest", manifest, expect=1))


def test_model_files_that_are_not_models(parts, patchcore_model, tmp_path):
    data = patchcore_model.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:1000])
    save_file({"w": torch.zeros(1)}, str(tmp_path / "new.safetensors"), metadata={"anomalycli": json.dumps({"format_version": 7})})
    (tmp_path / "text.safetensors").write_text("hello")
    for name, words in [("cut", "damaged"), ("new", "newer"), ("text", "not an anomalycli model")]:
        assert words in one_clear_line(run_cli("eval", tmp_path / f"{name}.safetensors", parts, expect=1))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--val-ratio", "-0.1"], "--val-ratio"),
        (["--max-fpr", "2"], "--max-fpr"),
        (["--target-recall", "0"], "--target-recall"),
        (["--defect-rate", "1"], "--defect-rate"),
        (["--target-recall", "0.9", "--max-fpr", "0.01"], "give one of --target-recall, --max-fpr and --defect-rate"),
        (["--batch-size", "0"], "--batch-size"),
        (["--sampler", "magic", "--method", "classifier"], "--sampler"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_options_out_of_range(parts, args, words):
    assert words in one_clear_line(run_cli("train", parts, *args, expect=2))


def test_output_is_not_overwritten_without_permission(patchcore_model, parts, tmp_path):
    out = tmp_path / "rows.csv"
    out.write_text("precious")
    assert "--overwrite" in one_clear_line(run_cli("predict", patchcore_model, parts / "good", "--output", out, expect=1))
    assert out.read_text() == "precious"
    run_cli("predict", patchcore_model, parts / "good", "--output", out, "--overwrite")
    assert out.read_text().startswith("path,score")


def test_same_seed_same_scores(parts, tmp_path):
    outputs = []
    for name in ("a", "b"):
        run_cli("train", parts, "--image-size", "64", "--run-dir", tmp_path / name, "--seed", "3")
        run_cli("predict", tmp_path / name / "model.safetensors", parts, "--output", tmp_path / f"{name}.csv")
        outputs.append((tmp_path / f"{name}.csv").read_text())
    assert outputs[0] == outputs[1]


def _train_process(parts, run_dir, epochs):
    args = [
        sys.executable,
        "-m",
        "anomalycli",
        "train",
        str(parts),
        "--method",
        "classifier",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        str(epochs),
        "--patience",
        "100",
        "--run-dir",
        str(run_dir),
    ]
    # A terminal's Ctrl-C: a child started from a background job would inherit SIGINT ignored.
    restore_ctrl_c = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=restore_ctrl_c)


def _wait_for(path, process, timeout=120):
    start = time.time()
    while not path.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("method", ["patchcore", "classifier"])
def test_a_fit_interrupted_before_anything_is_kept_says_so_and_offers_no_resume(parts, tmp_path, monkeypatch, method):
    """Ctrl-C before a checkpoint (any patchcore or hybrid fit, a classifier's first epoch) leaves
    nothing to resume: the line says to start again, where it once named a checkpoint that was not there."""
    from anomalycli.workflows import train as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit", interrupted)
    run_dir = tmp_path / "run"
    result = run_cli("train", parts, "--method", method, "--image-size", "32", "--run-dir", run_dir, expect=130)
    line = one_clear_line(result)
    assert "holds no model and nothing to resume from; start the fit again" in line and "--resume" not in line, line
    assert not (run_dir / "model.safetensors").exists() and not (run_dir / "checkpoint.pt").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_training_keeps_a_consistent_run_and_resumes(parts, tmp_path, sig):
    run_dir = tmp_path / "run"
    process = _train_process(parts, run_dir, epochs=10)
    _wait_for(run_dir / "checkpoint.pt", process)
    process.send_signal(sig)
    output = process.communicate(timeout=120)[0]
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "--resume" in output and "Traceback" not in output
        assert "checkpoint.pt" in output and "RUN_DIR" not in output  # the run's own folder, not a placeholder
        assert not list(run_dir.glob(".*.tmp"))  # Ctrl-C cleans up; SIGKILL mid-write cannot
    else:
        (run_dir / ".history.csv.killed.tmp").write_text("epoch,train_loss\n1,0.6")  # as a kill mid-write leaves
    assert not (run_dir / "model.safetensors").exists()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 1 <= state["epoch"] < 10 and len(state["history"]) == state["epoch"]
    # history.csv follows the checkpoint: a signal between the two writes leaves it one epoch behind.
    history = list(csv.DictReader((run_dir / "history.csv").open())) if (run_dir / "history.csv").exists() else []
    assert len(history) in (state["epoch"] - 1, state["epoch"])
    assert [int(r["epoch"]) for r in history] == [r["epoch"] for r in state["history"][: len(history)]]
    if sig == signal.SIGKILL and len(history) == state["epoch"]:  # as a kill between the two writes leaves
        history = history[:-1]
        if history:
            write_history(run_dir / "history.csv", history)
        else:
            (run_dir / "history.csv").unlink()

    run_cli("train", "--resume", run_dir)
    final = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in final] == list(range(1, 11)) and not list(run_dir.glob(".*.tmp"))
    assert final[: len(history)] == history
    assert (run_dir / "model.safetensors").exists()
