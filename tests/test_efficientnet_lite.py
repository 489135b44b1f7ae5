import torch

from anomalycli.detection import backbones
from anomalycli.detection.efficientnet_lite import BN_MOMENTUM, EfficientNetLite


def test_batchnorm_uses_pytorch_momentum():
    model = EfficientNetLite("efficientnet_lite0")
    assert all(m.momentum == BN_MOMENTUM == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_eval_mode_tracks_train_mode_after_a_short_finetune():
    """With TF's momentum (0.01) running statistics lag and eval-mode outputs drift from train mode."""
    torch.manual_seed(0)
    model = backbones.replace_head("efficientnet_lite0", backbones.build("efficientnet_lite0", "imagenet"), 2)
    # Data far from ImageNet statistics, like grey screws: the BN statistics must adapt.
    x = torch.rand(16, 3, 64, 64) * 0.3 + 0.6
    y = torch.tensor([0, 1] * 8)
    x[y == 1, :, 20:40, 20:40] = 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(10):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        model.train()
        train_pred = model(x).argmax(1)
        model.eval()
        eval_pred = model(x).argmax(1)
    assert (train_pred == eval_pred).float().mean() >= 0.85
