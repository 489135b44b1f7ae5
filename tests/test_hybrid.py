"""The hybrid's network (detection/methods/hybrid.py): older model files' patch heads load and
score as they did; how it is fitted: test_hybrid_fitting.py."""

import torch

from anomalycli.detection.methods import hybrid, patchcore, patchcore_fitting
from tests.test_hybrid_fitting import lite0_extractor, synthetic_batch


def test_older_hybrid_files_with_patch_heads_still_load(tmp_path):
    """Files from before the global head: fold heads on patch features, and before those one head."""
    from anomalycli.detection.methods import AnomalyModel
    from anomalycli.judgement.calibration import Calibration

    torch.manual_seed(0)
    extractor = lite0_extractor()
    images = synthetic_batch([None, "spot", None, "scratch"], seed=6)
    bank = patchcore_fitting.embed_all(extractor, [images], 4)[0][0].float()
    channels = bank.shape[1]

    def patch_head():
        head = hybrid.PatchHead(channels)
        head.mean.copy_(torch.randn(channels))
        head.std.copy_(torch.rand(channels) + 0.5)
        return head

    calibration = Calibration(threshold=0.5, low=0.0, high=1.0, rule="test")
    config = {
        "backbone": "efficientnet_lite0",
        "image_size": 64,
        "normal_class": "good",
        "class_names": ["good", "bad"],
        "bank_size": int(bank.shape[0]),
        "batch_norm_folded": True,
    }
    for head, extra in ((hybrid.FoldHeads([patch_head(), patch_head()]), {"head_folds": 2}), (patch_head(), {})):
        old = hybrid.Hybrid(patchcore.PatchCore(extractor, bank, score_blur=0.0), head, torch.tensor([1.0, 2.0, 0.5, 3.0]), 0.5)
        AnomalyModel("hybrid", old, {**config, **extra}, calibration).save(tmp_path / "old.safetensors")
        loaded = AnomalyModel.load(tmp_path / "old.safetensors")
        with torch.no_grad():
            assert torch.allclose(loaded.net(images, False)[0], old(images, False)[0], rtol=1e-4)


def test_patch_head_folds_standardisation_into_its_weights():
    torch.manual_seed(0)
    features = torch.randn(5, 300, 12) * 3 + 1
    head = hybrid.PatchHead(12)
    head.mean.copy_(torch.randn(12))
    head.std.copy_(torch.rand(12) + 0.5)
    plain = head.linear((features - head.mean) / head.std).squeeze(-1)
    assert torch.allclose(head.patch_logits(features), plain, atol=1e-4)
    assert torch.allclose(head(features), plain.topk(3, dim=1).values.mean(1), atol=1e-4)
