"""The classifier's training loop, in the shape of torchvision's reference train.py."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from anomalycli.detection import backbones
from anomalycli.judgement.metrics import binary_report
from anomalycli.runtime import progress_bar


@dataclass
class ClassifierSettings:
    backbone: str
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-3
    weighted_loss: bool = False
    sampler: str = "shuffle"  # shuffle | balanced
    select: str = "auroc"  # auroc | f1 | loss
    patience: int = 10
    seed: int = 0


def augmentation():
    from torchvision.transforms import v2  # here, not above: torchvision takes about 3 s to import, and only the classifier augments

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(10),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
        ]
    )


class AugmentedImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def make_loaders(settings: ClassifierSettings, train_images, train_labels, val_images, val_labels):
    generator = torch.Generator().manual_seed(settings.seed)
    train_set = AugmentedImages(train_images, train_labels, augmentation())
    if settings.sampler == "balanced":
        counts = torch.bincount(train_labels, minlength=2).float()
        weights = (1.0 / counts.clamp_min(1))[train_labels]
        sampler = WeightedRandomSampler(weights, num_samples=len(train_labels), replacement=True, generator=generator)
        train_loader = DataLoader(train_set, batch_size=settings.batch_size, sampler=sampler)
    else:
        train_loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(TensorDataset(val_images, val_labels), batch_size=settings.batch_size)
    return train_loader, val_loader


def make_criterion(settings: ClassifierSettings, train_labels: torch.Tensor, device) -> nn.Module:
    weight = None
    if settings.weighted_loss:
        balanced = compute_class_weight("balanced", classes=np.array([0, 1]), y=train_labels.numpy())
        weight = torch.tensor(balanced, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight)


def train_one_epoch(model, criterion, optimizer, loader, device, backbone: str, epoch: int, show_progress=True) -> dict:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in progress_bar(loader, desc=f"epoch {epoch}", leave=False, shown=show_progress, unit="batch"):
        images, labels = backbones.preprocess(images.to(device), backbone), labels.to(device)
        logits = model(images)
        loss = criterion(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return {"train_loss": total_loss / seen, "train_acc": correct / seen}


@torch.no_grad()
def evaluate(model, criterion, loader, device, backbone: str, class_names: tuple[str, str]) -> tuple[dict, np.ndarray]:
    """Validation loss, accuracy (overall and per class), AUROC, F1; and the anomaly scores."""
    model.eval()
    total_loss, scores, labels_seen = 0.0, [], []
    for images, labels in loader:
        images, labels = backbones.preprocess(images.to(device), backbone), labels.to(device)
        logits = model(images)
        total_loss += criterion(logits, labels).item() * len(labels)
        scores.append(logits.softmax(1)[:, 1].cpu())
        labels_seen.append(labels.cpu())
    scores_np = torch.cat(scores).numpy()
    labels_np = torch.cat(labels_seen).numpy()
    predicted = (scores_np >= 0.5).astype(int)
    report = binary_report(labels_np, scores_np, predicted, n_boot=0)
    row = {
        "val_loss": total_loss / len(labels_np),
        "val_acc": report["accuracy"],
        f"val_acc_{class_names[0]}": float(np.mean(predicted[labels_np == 0] == 0)) if (labels_np == 0).any() else float("nan"),
        f"val_acc_{class_names[1]}": float(np.mean(predicted[labels_np == 1] == 1)) if (labels_np == 1).any() else float("nan"),
        "val_auroc": report["auroc"] if report["auroc"] is not None else float("nan"),
        "val_f1": report["f1"],
    }
    return row, scores_np


def selection_value(row: dict, select: str) -> float:
    """Higher is better, whatever the metric."""
    return -row["val_loss"] if select == "loss" else row[f"val_{select}"]


def fit_classifier(
    model: nn.Module,
    settings: ClassifierSettings,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    device: torch.device,
    class_names: tuple[str, str],
    state: dict | None = None,
    on_epoch=None,
    show_progress: bool = True,
) -> dict:
    """Train, keep the best epoch by ``settings.select``, stop early; returns the final checkpoint dict.

    ``state`` is a checkpoint dict from an interrupted run to continue; ``on_epoch(checkpoint)``
    is called after every epoch so the caller can save it.
    """
    torch.manual_seed(settings.seed)
    model.to(device)
    train_loader, val_loader = make_loaders(settings, train_images, train_labels, val_images, val_labels)
    criterion = make_criterion(settings, train_labels, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    checkpoint = {"epoch": 0, "history": [], "best_epoch": 0, "best_value": float("-inf"), "best_model": None}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        checkpoint = {k: state[k] for k in checkpoint}
    for epoch in range(checkpoint["epoch"] + 1, settings.epochs + 1):
        if epoch - checkpoint["best_epoch"] > settings.patience and checkpoint["best_epoch"] > 0:
            break
        start = time.perf_counter()
        row = {"epoch": epoch}
        row.update(train_one_epoch(model, criterion, optimizer, train_loader, device, settings.backbone, epoch, show_progress))
        metrics, _ = evaluate(model, criterion, val_loader, device, settings.backbone, class_names)
        row.update(metrics)
        row["seconds"] = time.perf_counter() - start
        value = selection_value(row, settings.select)
        checkpoint["history"].append(row)
        checkpoint["epoch"] = epoch
        if value > checkpoint["best_value"] or checkpoint["best_model"] is None:
            checkpoint.update(best_epoch=epoch, best_value=value, best_model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        checkpoint.update(model=model.state_dict(), optimizer=optimizer.state_dict(), rng=torch.get_rng_state())
        if on_epoch:
            on_epoch(checkpoint, row)
    model.load_state_dict(checkpoint["best_model"])
    return checkpoint
