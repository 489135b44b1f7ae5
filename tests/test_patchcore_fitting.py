import numpy as np
import torch

from anomalycli.detection import backbones
from anomalycli.detection.methods import patchcore, patchcore_fitting
from tests.test_patchcore import _batch, _fitted


def test_bank_holds_the_chosen_share_of_patches():
    model = _fitted()
    # 20 images x (64/8)^2 patches, a quarter kept.
    assert model.bank.shape == (320, sum(backbones.get("efficientnet_lite0").feature_channels))


def test_each_fold_coreset_holds_only_good_patches_of_its_own_fold():
    torch.manual_seed(0)
    features = torch.randn(12, 16, 8).half()
    labels = torch.tensor([0] * 9 + [1] * 3)
    folds = np.arange(12) % 3
    coresets = patchcore_fitting.fold_coresets(features, labels, folds, coreset_ratio=0.5)
    assert sorted(coresets) == [0, 1, 2]
    for fold, bank in coresets.items():
        own = features[np.flatnonzero((folds == fold) & (labels.numpy() == 0))].reshape(-1, 8).float()
        others = features[np.flatnonzero(folds != fold)].reshape(-1, 8).float()
        assert torch.cdist(bank, own).min(1).values.max() < 1e-6
        assert torch.cdist(bank, others).min() > 1e-3


def _cross_fitted(coreset_ratio):
    extractor = backbones.FeatureExtractor("efficientnet_lite0", backbones.build("efficientnet_lite0", "imagenet"))
    good, _ = _batch(n=12, seed=4)
    defective, _ = _batch("scratch", n=3, seed=5)
    features, _ = patchcore_fitting.embed_all(extractor, [good, defective], 15)
    labels = torch.tensor([0] * 12 + [1] * 3)
    folds = np.arange(15) % 3
    model, out_of_fold = patchcore_fitting.cross_fit(extractor, features, labels, folds, coreset_ratio=coreset_ratio)
    return extractor, features, folds, model, out_of_fold


def test_cross_fitting_scores_every_image_without_its_own_patches(exact_search):
    _, features, _, model, out_of_fold = _cross_fitted(coreset_ratio=1.0)
    assert model.bank.shape[0] == 12 * features.shape[1] and model.part_sizes == [4 * features.shape[1]] * 3
    assert out_of_fold[12:].min() > out_of_fold[:12].max()  # the scratches rank above every good part
    # Every patch kept, so a bank holding an image's own patches scores it 0: the deployed model's
    # score of a training image is its out-of-fold score (the one part without it) over 3 parts.
    final = patchcore_fitting.score_all(model, features)
    assert torch.allclose(final[:12], out_of_fold[:12] / 3, rtol=0.02)


def test_out_of_fold_scores_of_chosen_images_are_theirs_among_all(exact_search):
    # A fit on goods learnt turned scores only the originals out of fold: each as scored among all, in the order asked.
    extractor, features, folds, _, _ = _cross_fitted(coreset_ratio=0.25)
    coresets = patchcore_fitting.fold_coresets(features, torch.tensor([0] * 12 + [1] * 3), folds, 0.25)
    every = patchcore_fitting.out_of_fold(extractor, features, folds, coresets, with_grids=True)
    chosen = np.array([13, 3, 7, 0])
    some = patchcore_fitting.out_of_fold(extractor, features, folds, coresets, with_grids=True, images=chosen)
    assert some.scores.shape == (4,) and torch.allclose(some.scores, every.scores[chosen]) and np.allclose(some.grids, every.grids[chosen])
    assert len(set(folds[chosen].tolist())) == 2  # and fold 2 has none of them


def test_a_cross_fitted_model_scores_new_images_as_calibration_did(exact_search):
    extractor, features, folds, model, _ = _cross_fitted(coreset_ratio=0.25)
    new, _ = _batch(n=4, seed=9)
    new_features, _ = patchcore_fitting.embed_all(extractor, [new], 4)
    bounds = np.cumsum([0] + model.part_sizes)
    leave_one_out = []
    for f in range(3):
        others = torch.cat([model.bank[bounds[g] : bounds[g + 1]] for g in range(3) if g != f])
        leave_one_out.append(patchcore_fitting.score_all(patchcore.PatchCore(extractor, others), new_features))
    assert torch.allclose(patchcore_fitting.score_all(model, new_features), torch.stack(leave_one_out).mean(0), rtol=1e-4)


def test_the_patch_scores_kept_out_of_fold_make_the_maps_scoring_makes():
    """A fit keeps patch scores (6 KB an image), not maps, and rebuilds the maps from them for the
    pixel threshold and the region areas: the very maps scoring gives."""
    model = _fitted()
    images = torch.cat([_batch("scratch", seed=5)[0], _batch(None, seed=6)[0]])
    with torch.no_grad():
        features, grid = model.embed(images)
    scores, maps = model.score_features(features, grid, (64, 64))
    kept = patchcore_fitting.scores_and_grids(model, features, with_grids=True)
    assert kept.grids.shape == (2, *grid) and torch.equal(kept.scores, scores)
    assert np.array_equal(np.concatenate(list(kept.maps(64, model.map_blur))), maps.numpy())
