import copy
import urllib.error

import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_images

from anomalycli.data.tensors import image_to_tensor
from anomalycli.detection import backbones
from anomalycli.errors import UserError


def test_bundled_lite0_weights_are_imagenet():
    """The flower photo sklearn ships is a daisy (ImageNet class 985) only with real weights and the right preprocessing."""
    model = backbones.build("efficientnet_lite0", "imagenet").eval()
    flower = Image.fromarray(load_sample_images().images[1])
    x = backbones.preprocess(image_to_tensor(flower, 224).unsqueeze(0), "efficientnet_lite0")
    with torch.no_grad():
        assert model(x).argmax(1).item() == 985


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_feature_maps_have_strides_8_and_16(name):
    extractor = backbones.FeatureExtractor(name, backbones.build(name, "none")).eval()
    with torch.no_grad():
        maps = extractor(torch.zeros(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == list(backbones.get(name).feature_channels)
    assert [m.shape[-1] for m in maps] == [8, 4]


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_folding_batch_norm_keeps_the_features(name):
    torch.manual_seed(0)
    model = backbones.build(name, "none").eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        # Statistics far from the identity, so a convolution paired with the wrong norm shows.
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    plain = backbones.FeatureExtractor(name, copy.deepcopy(model), fold=False)
    folded = backbones.FeatureExtractor(name, model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for expected, got in zip(plain(x), folded(x)):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_offline_download_failure_is_one_clear_message(monkeypatch):
    def no_network(self, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", no_network)
    with pytest.raises(UserError, match="--backbone efficientnet_lite0"):
        backbones.build("resnet18", "imagenet")


def test_weights_from_a_path(tmp_path):
    reference = backbones.build("resnet18", "none")
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    loaded = backbones.build("resnet18", str(tmp_path / "w.pt"))
    assert torch.equal(loaded.fc.weight, reference.fc.weight)
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not fit resnet18"):
        backbones.build("resnet18", str(tmp_path / "bad.pt"))


def test_unknown_backbone():
    with pytest.raises(UserError, match="unknown backbone"):
        backbones.get("vgg")


def test_wide_resnet_trains_offline_from_a_weights_file(parts, tmp_path):
    """The paper's backbone cannot be downloaded here: a state dict on disk is how an air-gapped PC gets it."""
    from conftest import run_cli

    from anomalycli.detection.methods import AnomalyModel

    torch.save(backbones.build("wide_resnet50_2", "none").state_dict(), tmp_path / "wrn.pt")
    run_cli(
        "train",
        parts,
        "--backbone",
        "wide_resnet50_2",
        "--weights",
        tmp_path / "wrn.pt",
        "--image-size",
        "64",
        "--coreset-ratio",
        "0.1",
        "--precision",  # its int8 graph is not this test's: quantising 69M weights was most of its minute
        "fp32",
        "--no-pixel-head",  # nor is the pixel head: fitting it on 6,144-wide descriptors took 27 of the 36 s left
        "--run-dir",
        tmp_path / "r",
    )
    model = AnomalyModel.load(tmp_path / "r")
    # The default method on labelled defects: the hybrid, whose head pools layers 3 and 4.
    assert model.config["backbone"] == "wide_resnet50_2" and model.method == "hybrid"
    assert model.net.patchcore.bank.shape[1] == 512 + 1024 and model.config["descriptor_size"] == 2 * (1024 + 2048)


def test_stretched_levels_take_away_exposure_and_leave_a_flat_image_flat():
    torch.manual_seed(0)
    surface = 100 + 20 * torch.randn(1, 1, 64, 64).expand(1, 3, 64, 64)
    dim, bright = (surface - 100) * 0.4 + 50, (surface - 100) * 1.5 + 170
    stretched = backbones.stretch_levels(torch.cat([surface, dim, bright]).clamp(0, 255))
    low, high = backbones.LEVELS_RANGE
    assert float((stretched[1] - stretched[0]).abs().mean()) < 2 and float((stretched[2] - stretched[0]).abs().mean()) < 4
    inner = stretched[0].flatten().sort().values[int(0.02 * stretched[0].numel()) : int(0.98 * stretched[0].numel())]
    assert low - 1 <= float(inner[0]) and float(inner[-1]) <= high + 1
    # A flat grey with a little noise: its range counts as LEVELS_LEAST_RANGE, not stretched to a surface.
    flat = 120 + torch.randn(1, 3, 64, 64)
    # Its 1st-99th percentile span is about 4.7 levels: stretched onto 200 it would spread by 43, floored at 8 by 25.
    assert float(backbones.stretch_levels(flat).std()) < 30
    x = backbones.preprocess(torch.cat([surface, dim]).round().to(torch.uint8), "efficientnet_lite0", stretch=True)
    assert float((x[0] - x[1]).abs().mean()) < 0.05
