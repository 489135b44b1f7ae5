"""What train learns about pixels (workflows/train_pixels.py): a hybrid with enough masked defects
gets the pixel head whose out-of-fold regions served best, and its maps are that head's; with
fewer, or with --no-pixel-head, the maps are the distances alone."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from anomalycli.data.layouts import discover
from anomalycli.data.tensors import load_all, load_mask
from anomalycli.detection import backbones, ignore
from anomalycli.detection.methods import AnomalyModel, pixel_head
from anomalycli.detection.methods.patchcore import embed_maps, maps_from_patches
from tests.conftest import one_clear_line, run_cli


def test_a_trained_hybrid_makes_its_maps_with_the_pixel_head(parts, hybrid_model):
    model = AnomalyModel.load(hybrid_model)
    net = model.net
    # Train tried each kind of head and kept the one whose out-of-fold regions served best.
    tried = model.config["pixel_head"]["tried"]
    assert sorted(hidden for hidden, _ in tried) == sorted(pixel_head.HEAD_KINDS)
    assert model.config["pixel_head"]["hidden"] == max(tried, key=lambda t: t[1])[0]
    assert net.pixel_head.settings()["hidden"] == model.config["pixel_head"]["hidden"]
    samples = [s for s in discover(parts).samples if s.mask]
    size = model.config["image_size"]
    images, _, _ = load_all(samples, size)
    _, maps = model.score(images)
    with torch.no_grad():
        x = backbones.preprocess(images, model.config["backbone"], ignore.keep_of(model.config))
        features, grid = embed_maps(net.patchcore.extractor(x))
        _, distances = net.patchcore.score_patches(features, grid)
        expected = maps_from_patches(net.pixel_head.fused(distances, features), grid, (size, size), net.patchcore.map_blur)
    assert torch.allclose(maps, expected, atol=1e-4 * float(expected.abs().max()))
    # And they find the masked defects.
    truth = np.stack([load_mask(s.mask, size).numpy() for s in samples])
    assert roc_auc_score(truth.ravel(), maps.numpy().ravel()) > 0.9


def test_fewer_than_five_masked_defects_give_no_pixel_head(parts, tmp_path):
    data = tmp_path / "parts"
    shutil.copytree(parts, data)
    for mask in sorted((data / "ground_truth" / "not-good").glob("*.png"))[4:]:
        mask.unlink()
    run = tmp_path / "run"
    run_cli("train", data, "--method", "hybrid", "--image-size", "64", "--cv-folds", "3", "--coreset-ratio", "0.1", "--run-dir", run)
    model = AnomalyModel.load(run / "model.safetensors")
    assert not model.config["pixel_head"] and model.net.pixel_head is None


def test_no_pixel_head_makes_the_maps_of_the_distances_alone(parts, tmp_path):
    run_cli(
        "train",
        parts,
        "--method",
        "hybrid",
        "--image-size",
        "64",
        "--cv-folds",
        "3",
        "--coreset-ratio",
        "0.1",
        "--no-pixel-head",
        "--run-dir",
        tmp_path / "run",
    )
    model = AnomalyModel.load(tmp_path / "run" / "model.safetensors")
    assert not model.config["pixel_head"] and model.net.pixel_head is None
    images, _, _ = load_all([s for s in discover(parts).samples if s.mask][:4], 64)
    x = backbones.preprocess(images, model.config["backbone"], ignore.keep_of(model.config))
    with torch.no_grad():
        _, maps = model.score(images)
        _, distance_maps = model.net.patchcore.score_maps(model.net.patchcore.extractor(x), (64, 64))
    assert torch.equal(maps, distance_maps)


def test_no_pixel_head_on_another_method_is_a_warning(parts, tmp_path):
    result = run_cli("train", parts, "--method", "patchcore", "--image-size", "64", "--coreset-ratio", "0.1", "--no-pixel-head", "--run-dir", tmp_path / "run")
    assert "--no-pixel-head only applies to the hybrid (a patchcore model has no pixel head); ignored" in " ".join(result.output.split())


def test_the_pixel_head_is_turned_off_by_one_flag_and_its_default_still_taken(parts, tmp_path):
    # Help shows --no-pixel-head alone: a flag pair's second column narrowed every option's text.
    shown = run_cli("train", "--help").output
    assert "--no-pixel-head" in shown and "--pixel-head " not in shown.replace("--no-pixel-head", "")
    assert "contradict" in one_clear_line(run_cli("train", parts, "--pixel-head", "--no-pixel-head", "--run-dir", tmp_path / "both", expect=2))
    assert not (tmp_path / "both").exists()
    run_cli("train", parts, "--method", "patchcore", "--image-size", "64", "--coreset-ratio", "0.1", "--pixel-head", "--run-dir", tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").exists()
