"""The hybrid's pixel head: what a patch counts as, that it learns where masked defects lie and
scores every training image out of fold (whether train gives a hybrid one: test_train_pixels.py)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from anomalycli.detection.methods import pixel_head


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
    scored = np.flatnonzero(folds == 0)
    logits = pixel_head._fit_head(x[fitted], y[fitted], w[fitted]).logits(features[scored])
    assert np.allclose(fused[scored], pixel_head.fuse(head.stats, torch.from_numpy(distances[scored]), logits).numpy(), atol=1e-4)
    # The deployed head (fitted on every fold's patches) finds them on new images too.
    new_features, new_distances, new_cover, _ = _patches(seed=1)
    deployed = head.fused(torch.from_numpy(new_distances), new_features).numpy()
    assert roc_auc_score(new_cover.ravel() > 0, deployed.ravel()) > 0.9


def test_the_deployed_head_is_fitted_on_every_folds_patches():
    features, distances, cover, labels = _patches()
    folds = np.arange(len(labels)) % 3
    head, _ = pixel_head.cross_fit(lambda index: features[index], distances, cover, np.ones(len(labels), bool), labels, folds)
    x, y, w, _ = pixel_head._training_patches(lambda index: features[index], np.arange(len(labels)), cover, labels, np.random.default_rng(0))
    expected = pixel_head._fit_head(x, y, w).logits(features)
    assert head.hidden_weight.shape[1] == pixel_head.HIDDEN_UNITS
    assert torch.allclose(head.logits(features), expected) and expected.std() > 0.1


def test_the_linear_kind_is_a_logistic_regression_on_the_features():
    features, _, cover, labels = _patches()
    x, y, w, _ = pixel_head._training_patches(lambda index: features[index], np.arange(len(labels)), cover, labels, np.random.default_rng(0))
    head = pixel_head._fit_head(x, y, w, hidden=0)
    assert head.hidden_weight is None and head.settings() == {"hidden": 0}
    # Channel 0 carries the defects: its weight stands out from the noise channels'.
    weight = head.weight.squeeze(1).abs()
    assert weight[0] > 3 * weight[1:].max()


def test_a_model_file_from_before_the_hidden_layer_keeps_its_linear_head():
    head = pixel_head.build_pixel_head(True, 6)
    assert head.hidden_weight is None and head.settings() == {"hidden": 0}
    head.weight.copy_(torch.arange(6.0).unsqueeze(1))
    head.stats.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    features, distances = torch.ones(1, 2, 6), torch.tensor([[5.0, 7.0]])
    # logit 0 + 1 + ... + 5 = 15: (0.5 (d - 1) / 2 + 0.5 (15 - 3) / 4)
    assert head.fused(distances, features).tolist() == [[2.5, 3.0]]
    assert pixel_head.build_pixel_head(False, 6) is None
