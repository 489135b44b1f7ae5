"""The hybrid's pixel head: what a patch counts as, that it learns where masked defects lie and
scores every training image out of fold, and that a trained hybrid carries it (or not)."""

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
from tests.conftest import run_cli


def test_mask_cover_is_the_share_of_each_patch_under_the_mask():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # the top-left patch whole
    mask[4:6, 4:8] = True  # half of the bottom-right one
    cover = pixel_head.mask_cover([mask, None], (2, 2))
    assert cover.tolist() == [[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]]


def _patches(n_good=30, n_defect=15, patches=36, channels=6, seed=0):
    """Features where a defect's masked patches lie along channel 0, with uninformative distances."""
    rng = np.random.default_rng(seed)
    n = n_good + n_defect
    features = rng.normal(size=(n, patches, channels)).astype(np.float32)
    cover = np.zeros((n, patches), np.float32)
    for i in range(n_good, n):
        spot = rng.choice(patches, 4, replace=False)
        cover[i, spot] = 1.0
        features[i, spot, 0] += 3.0
    labels = np.array([0] * n_good + [1] * n_defect)
    return torch.from_numpy(features), rng.random((n, patches)).astype(np.float32), cover, labels


def test_the_cross_fitted_head_finds_masked_patches_that_the_distances_miss():
    features, distances, cover, labels = _patches()
    folds = np.arange(len(labels)) % 3
    head, fused = pixel_head.cross_fit(lambda index: features[index], distances, cover, np.ones(len(labels), bool), labels, folds)
    # Out of fold, the defect patches stand out though the distances say nothing.
    assert roc_auc_score(cover.ravel() > 0, distances.ravel()) < 0.6
    assert roc_auc_score(cover.ravel() > 0, fused.ravel()) > 0.9
    # Each image scored by the head of the other folds: a fold's fused scores are those of a head
    # fitted without it (refitting that fold's head alone gives them again).
    x, y, w, owner = pixel_head._training_patches(lambda index: features[index], np.arange(len(labels)), cover, labels, np.random.default_rng(0))
    fitted = folds[owner] != 0
    weight, bias = pixel_head._fit_head(x[fitted], y[fitted], w[fitted])
    scored = np.flatnonzero(folds == 0)
    logits = (features[scored] @ weight.unsqueeze(1)).squeeze(-1) + bias
    assert np.allclose(fused[scored], pixel_head.fuse(head.stats, torch.from_numpy(distances[scored]), logits).numpy(), atol=1e-4)
    # The deployed head (the folds' mean) finds them on new images too.
    new_features, new_distances, new_cover, _ = _patches(seed=1)
    deployed = head.fused(torch.from_numpy(new_distances), new_features).numpy()
    assert roc_auc_score(new_cover.ravel() > 0, deployed.ravel()) > 0.9


def test_a_trained_hybrid_makes_its_maps_with_the_pixel_head(parts, hybrid_model):
    model = AnomalyModel.load(hybrid_model)
    net = model.net
    assert model.config["pixel_head"] and net.pixel_head is not None
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
