import numpy as np
import torch

from anomalycli.data.synthetic import make_part
from anomalycli.detection import backbones
from anomalycli.detection.methods import patchcore, patchcore_fitting


def _batch(defect=None, n=1, seed=0):
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        image, mask = make_part(64, rng, defect)
        images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
        masks.append(torch.from_numpy(np.array(mask) > 0))
    return backbones.preprocess(torch.stack(images), "efficientnet_lite0"), torch.stack(masks)


def _fitted(reweight=False):
    extractor = backbones.FeatureExtractor("efficientnet_lite0", backbones.build("efficientnet_lite0", "imagenet"))
    good, _ = _batch(n=20, seed=1)
    return patchcore_fitting.fit(extractor, [good[:10], good[10:]], 20, coreset_ratio=0.25, reweight=reweight).eval()


def test_obvious_defect_scores_above_every_normal_and_map_peaks_on_it():
    model = _fitted()
    normal, _ = _batch(n=10, seed=2)
    defective, masks = _batch("spot", n=4, seed=3)
    with torch.no_grad():
        normal_scores, _ = model(normal)
        defect_scores, maps = model(defective)
    assert defect_scores.min() > normal_scores.max()
    for anomaly_map, mask in zip(maps, masks):
        peak = np.unravel_index(anomaly_map.argmax().item(), anomaly_map.shape)
        assert mask[max(peak[0] - 4, 0) : peak[0] + 5, max(peak[1] - 4, 0) : peak[1] + 5].any()


def test_reweighting_keeps_the_ranking_on_an_obvious_defect():
    model = _fitted(reweight=True)
    normal, _ = _batch(n=10, seed=2)
    defective, _ = _batch("scratch", n=4, seed=3)
    with torch.no_grad():
        assert model(defective)[0].min() > model(normal)[0].max()


def test_maps_are_made_only_when_asked_and_scores_do_not_depend_on_them():
    model = _fitted()
    images, _ = _batch("spot", n=3, seed=4)
    with torch.no_grad():
        scores, maps = model(images)
        scores_only, no_maps = model(images, with_maps=False)
    assert maps.shape == (3, 64, 64) and no_maps is None
    assert torch.equal(scores, scores_only)


def test_blurred_score_ranks_a_patch_cluster_above_one_stray_patch_and_old_files_keep_the_plain_max():
    # One zero vector in the bank: a patch's score is its feature norm.
    grid = torch.zeros(2, 6, 6, 4)
    grid[0, 2, 2, 0] = 1.0  # one stray far patch
    grid[1, 1:4, 1:4, 0] = 1.0  # a 3x3 cluster as far away
    features = grid.reshape(2, 36, 4)
    blurred = patchcore.PatchCore(None, torch.zeros(1, 4))
    plain = patchcore.PatchCore(None, torch.zeros(1, 4), score_blur=0.0)
    stray, cluster = blurred.score_features(features, (6, 6))[0]
    assert blurred.score_blur == patchcore.SCORE_BLUR > 0
    assert cluster > stray and cluster < 1.0
    assert torch.equal(plain.score_features(features, (6, 6))[0], torch.ones(2))
    # A config written before the blurred score (no "score_blur") rebuilds the plain maximum.
    config = {"backbone": "efficientnet_lite0", "bank_size": 1, "batch_norm_folded": True}
    assert patchcore.build_net(config).score_blur == 0.0
    assert patchcore.build_net({**config, "score_blur": 1.0}).score_blur == 1.0


def test_the_bank_index_follows_the_bank_and_the_model_pickles(exact_search):
    import pickle

    model = _fitted()
    x, _ = _batch("scratch", n=2, seed=5)
    with torch.no_grad():
        before, _ = model(x, with_maps=False)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.bank.mul_(2.0)  # changed in place, as loading a model file copies its bank in
        changed, _ = model(x, with_maps=False)
        model.load_state_dict(state)
        again, _ = model(x, with_maps=False)
        copied, _ = pickle.loads(pickle.dumps(model))(x, with_maps=False)
    assert not torch.allclose(before, changed)
    assert torch.equal(before, again) and torch.equal(before, copied)


def test_with_bank_keeps_every_setting_and_shares_the_extractor():
    from anomalycli.detection import backbones
    from anomalycli.detection.methods.patchcore import PatchCore

    extractor = backbones.FeatureExtractor("efficientnet_lite0", backbones.build("efficientnet_lite0", "none")).eval()
    net = PatchCore(extractor, torch.randn(40, 152), reweight=True, neighbours=5, score_blur=2.0)
    twin = net.with_bank(torch.randn(30, 152), [10, 20])
    assert twin.extractor is net.extractor and twin.bank.shape == (30, 152) and net.bank.shape == (40, 152)
    assert (twin.reweight, twin.neighbours, twin.score_blur, twin.part_sizes) == (True, 5, 2.0, [10, 20])
    assert set(twin.state_dict()) == set(net.state_dict())


def test_maps_from_patches_upsample_then_blur_as_the_two_steps_do_on_any_grid():
    # The composed matrices must give what bilinear upsampling and then the reflect-padded Gaussian
    # blur give; a wrong axis, padding or scale moves values by far more than float rounding.
    torch.manual_seed(0)
    for grid, size, sigma in [((40, 40), (320, 320), 8.0), ((6, 9), (48, 72), 4.0), ((5, 5), (40, 40), 1.5)]:
        patch_scores = torch.rand(3, grid[0] * grid[1]) * 3
        upsampled = torch.nn.functional.interpolate(patch_scores.view(3, 1, *grid), size=size, mode="bilinear", align_corners=False)
        expected = patchcore._gaussian_blur(upsampled, sigma).squeeze(1)
        made = patchcore.maps_from_patches(patch_scores, grid, size, sigma)
        assert made.shape == expected.shape == (3, *size)
        assert torch.allclose(made, expected, atol=1e-5, rtol=0)
