import numpy as np
import torch

from anomalycli import backbones
from anomalycli.methods import hybrid, patchcore
from anomalycli.synthetic import make_part


def _images(kinds, seed):
    rng = np.random.default_rng(seed)
    batch = [torch.from_numpy(np.array(make_part(64, rng, kind)[0].convert("RGB"))).permute(2, 0, 1) for kind in kinds]
    return backbones.preprocess(torch.stack(batch), "efficientnet_lite0")


def _extractor():
    return backbones.FeatureExtractor("efficientnet_lite0", backbones.build("efficientnet_lite0", "imagenet")).eval()


def test_seen_defects_caught_and_unseen_kind_still_scored_above_normals():
    extractor = _extractor()
    kinds = [None] * 24 + ["scratch"] * 8  # spots are never seen in training
    images = _images(kinds, seed=0)
    labels = torch.tensor([int(k is not None) for k in kinds])
    features = patchcore.embed_all(extractor, [images], len(images))
    folds = np.arange(len(kinds)) % 4
    model, out_of_fold = hybrid.fit(extractor, features, labels, folds, coreset_ratio=0.25)
    assert 0.25 <= float(model.alpha) <= 1.0
    with torch.no_grad():
        normal = model(_images([None] * 8, seed=1))[0]
        scratches = model(_images(["scratch"] * 6, seed=2))[0]
        spots = model(_images(["spot"] * 6, seed=3))[0]
    assert scratches.min() > normal.max()
    assert spots.min() > normal.max(), "a defect kind never seen in training must still stand out"


def test_cross_fitting_never_scores_an_image_with_a_model_fitted_on_it():
    extractor = _extractor()
    kinds = [None] * 12 + ["spot"] * 6
    images = _images(kinds, seed=4)
    labels = torch.tensor([int(k is not None) for k in kinds])
    features = patchcore.embed_all(extractor, [images], len(images))
    folds = np.arange(len(kinds)) % 3
    _, supervised, heads, used = hybrid.cross_fit(extractor, features, labels, folds, coreset_ratio=0.25)
    scored_all = np.concatenate([scored for _, scored in used])
    assert sorted(scored_all.tolist()) == list(range(len(kinds)))
    for head, (fitted, scored) in zip(heads, used):
        assert not set(fitted.tolist()) & set(scored.tolist())
        with torch.no_grad():
            assert torch.allclose(head(features[scored]), supervised[scored])


def test_the_deployed_head_is_the_mean_of_the_fold_heads_and_old_single_head_files_load(tmp_path):
    from anomalycli.methods import AnomalyModel
    from anomalycli.metrics import calibrate

    extractor = _extractor()
    kinds = [None] * 12 + ["spot"] * 6
    images = _images(kinds, seed=5)
    labels = torch.tensor([int(k is not None) for k in kinds])
    features = patchcore.embed_all(extractor, [images], len(images))
    model, out_of_fold = hybrid.fit(extractor, features, labels, np.arange(len(kinds)) % 3, coreset_ratio=0.25)
    with torch.no_grad():
        assert torch.allclose(model.head(features), torch.stack([h(features) for h in model.head.heads]).mean(0))
    calibration, _ = calibrate(labels.numpy(), out_of_fold.numpy())
    config = {"backbone": "efficientnet_lite0", "image_size": 64, "normal_class": "good", "class_names": ["good", "bad"],
              "bank_size": int(model.patchcore.bank.shape[0]), "batch_norm_folded": True}
    # A file from before the fold heads, bank parts and blurred score: one head, one bank, plain max.
    old = hybrid.Hybrid(patchcore.PatchCore(extractor, model.patchcore.bank, score_blur=0.0), model.head.heads[0], model.stats, float(model.alpha))
    AnomalyModel("hybrid", old, config, calibration).save(tmp_path / "old.safetensors")
    loaded = AnomalyModel.load(tmp_path / "old.safetensors")
    with torch.no_grad():
        assert torch.allclose(loaded.net(images[:4], False)[0], old(images[:4], False)[0], rtol=1e-4)


def test_head_folds_standardisation_into_its_weights():
    torch.manual_seed(0)
    features = torch.randn(5, 300, 12) * 3 + 1
    head = hybrid.PatchHead(12)
    head.mean.copy_(torch.randn(12))
    head.std.copy_(torch.rand(12) + 0.5)
    plain = head.linear((features - head.mean) / head.std).squeeze(-1)
    assert torch.allclose(head.patch_logits(features), plain, atol=1e-4)
    assert torch.allclose(head(features), plain.topk(3, dim=1).values.mean(1), atol=1e-4)


def test_head_learns_which_patches_make_an_image_defective():
    torch.manual_seed(0)
    features = torch.randn(40, 200, 6)
    labels = torch.tensor([0] * 30 + [1] * 10)
    features[30:, :3, 2] += 6.0  # a defect is a few unusual patches, not a whole image
    head = hybrid.train_head(features, labels)
    with torch.no_grad():
        scores = head(features)
    assert scores[30:].min() > scores[:30].max()
