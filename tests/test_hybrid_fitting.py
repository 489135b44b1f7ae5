"""Fitting the hybrid (detection/methods/hybrid_fitting.py): the image head, its cross-fitting,
the fusion, and a deployed head that scores as the fold heads did."""

import numpy as np
import torch

from anomalycli.data.synthetic import make_part
from anomalycli.detection import backbones
from anomalycli.detection.methods import hybrid_fitting, patchcore_fitting


def synthetic_batch(kinds, seed):
    """Preprocessed 64 px synthetic parts, one of each ``kinds`` (None: a good part)."""
    rng = np.random.default_rng(seed)
    batch = [torch.from_numpy(np.array(make_part(64, rng, kind)[0].convert("RGB"))).permute(2, 0, 1) for kind in kinds]
    return backbones.preprocess(torch.stack(batch), "efficientnet_lite0")


def lite0_extractor():
    """Lite0 with its ImageNet weights: small and quick for synthetic parts."""
    return backbones.FeatureExtractor("efficientnet_lite0", backbones.build("efficientnet_lite0", "imagenet")).eval()


def _fit(extractor, images, labels, folds):
    """hybrid_fitting.fit as train.py calls it: fold coresets, their out-of-fold scores, the descriptors."""
    features, descriptors = patchcore_fitting.embed_all(extractor, [images], len(images), with_descriptors=True)
    coresets = patchcore_fitting.fold_coresets(features, labels, folds, 0.25)
    one_class = patchcore_fitting.out_of_fold(extractor, features, folds, coresets).scores
    return hybrid_fitting.fit(extractor, coresets, one_class, descriptors, labels, folds)[:2]


def test_seen_defects_caught_and_unseen_kind_still_scored_above_normals():
    extractor = lite0_extractor()
    kinds = [None] * 24 + ["scratch"] * 8  # spots are never seen in training
    images = synthetic_batch(kinds, seed=0)
    labels = torch.tensor([int(k is not None) for k in kinds])
    model, out_of_fold = _fit(extractor, images, labels, np.arange(len(kinds)) % 4)
    assert 0.5 <= float(model.alpha) <= 1.0
    with torch.no_grad():
        normal = model(synthetic_batch([None] * 8, seed=1))[0]
        scratches = model(synthetic_batch(["scratch"] * 6, seed=2))[0]
        spots = model(synthetic_batch(["spot"] * 6, seed=3))[0]
    assert scratches.min() > normal.max()
    assert spots.min() > normal.max(), "a defect kind never seen in training must still stand out"


def test_descriptors_come_from_the_same_pass_as_the_patch_features():
    extractor = lite0_extractor()
    images = synthetic_batch([None, "spot", "scratch"], seed=4)
    features, descriptors = patchcore_fitting.embed_all(extractor, [images[:2], images[2:]], 3, with_descriptors=True)
    plain, none = patchcore_fitting.embed_all(extractor, [images[:2], images[2:]], 3)
    assert none is None and torch.equal(features, plain)
    with torch.no_grad():
        maps = extractor(images, deep=True)
    # Lite0: stride-16 stage (112 channels) and the two stride-32 stages (192, 320), each mean and max.
    assert descriptors.shape == (3, 2 * (112 + 192 + 320))
    assert torch.allclose(descriptors[:, :112], maps[1].mean((2, 3)), atol=1e-5)
    assert torch.allclose(descriptors[:, 112:224], maps[1].amax((2, 3)), atol=1e-5)


def test_cross_fitting_never_scores_an_image_with_a_head_fitted_on_it():
    torch.manual_seed(0)
    descriptors = torch.randn(30, 8)
    labels = torch.tensor([0] * 20 + [1] * 10)
    descriptors[20:, 3] += 2.0
    folds = np.arange(30) % 3
    supervised, heads, used = hybrid_fitting.cross_fit(descriptors, labels, folds)
    scored_all = np.concatenate([scored for _, scored in used])
    assert sorted(scored_all.tolist()) == list(range(30))
    for head, (fitted, scored) in zip(heads, used):
        assert not set(fitted.tolist()) & set(scored.tolist())
        with torch.no_grad():
            assert torch.allclose(head(descriptors[scored]), supervised[scored])
    # A fold's head is refitted from its training part alone: moving a scored image changes nothing.
    moved = descriptors.clone()
    moved[used[0][1]] += 100.0
    with torch.no_grad():
        assert torch.allclose(hybrid_fitting.cross_fit(moved, labels, folds)[1][0].weight, heads[0].weight)


def test_head_is_the_regressions_decision_function_with_the_standardisation_folded_in():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, [1.0, 5.0, 0.1, 2.0], size=(60, 4))
    y = np.array([0] * 45 + [1] * 15)
    x[45:, 1] += 30.0  # six of its standard deviations
    head = hybrid_fitting.train_global_head(torch.from_numpy(x).float(), torch.from_numpy(y))
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=hybrid_fitting.HEAD_C, class_weight="balanced", max_iter=1000).fit(scaler.transform(x), y)
    with torch.no_grad():
        ours = head(torch.from_numpy(x).float()).numpy()
    assert np.allclose(ours, reference.decision_function(scaler.transform(x)), atol=1e-3)
    assert ours[45:].min() > ours[:45].max()


def test_one_class_only_gives_a_head_that_scores_zero():
    head = hybrid_fitting.train_global_head(torch.randn(10, 5), torch.zeros(10, dtype=torch.long))
    with torch.no_grad():
        assert torch.equal(head(torch.randn(4, 5)), torch.zeros(4))


def test_the_deployed_head_scores_the_mean_of_the_fold_heads(tmp_path):
    from anomalycli.detection.methods import AnomalyModel
    from anomalycli.judgement.thresholds import calibrate

    extractor = lite0_extractor()
    kinds = [None] * 12 + ["spot"] * 6
    images = synthetic_batch(kinds, seed=5)
    labels = torch.tensor([int(k is not None) for k in kinds])
    folds = np.arange(len(kinds)) % 3
    model, out_of_fold = _fit(extractor, images, labels, folds)
    _, descriptors = patchcore_fitting.embed_all(extractor, [images], len(images), with_descriptors=True)
    _, heads, _ = hybrid_fitting.cross_fit(descriptors, labels, folds)
    with torch.no_grad():
        assert torch.allclose(model.head(descriptors), torch.stack([h(descriptors) for h in heads]).mean(0), atol=1e-4)
    calibration, _ = calibrate(labels.numpy(), out_of_fold.numpy())
    config = {
        "backbone": "efficientnet_lite0",
        "image_size": 64,
        "normal_class": "good",
        "class_names": ["good", "bad"],
        "bank_size": int(model.patchcore.bank.shape[0]),
        "bank_parts": model.patchcore.part_sizes,
        "score_blur": 1.0,
        "batch_norm_folded": True,
        "head": "global",
        "descriptor_size": int(descriptors.shape[1]),
    }
    AnomalyModel("hybrid", model, config, calibration).save(tmp_path / "m.safetensors")
    loaded = AnomalyModel.load(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded.net(images[:4], False)[0], model(images[:4], False)[0])
