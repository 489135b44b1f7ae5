"""Probe (a record, not a topic): the default model on images framed as a mirrored letterbox
instead of squashed, 5-fold: pixel AUROC, AUPRO and held-out image AUROC beside the shipped
squash, both measured in the squashed frame (the map's content box cropped and resized).

    python -m benchmarks.probes.letterbox ../shared/data/magtiles [squash|mirror|grey]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomalycli.data import images
from anomalycli.data.tensors import load_mask
from anomalycli.deploy.scoring import iter_scores
from anomalycli.judgement.localisation import aupro
from anomalycli.judgement.metrics import pixel_auroc
from benchmarks import folds
from benchmarks.common import samples_of, shipped_options


def content_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, content width, content height) of an image letterboxed into size x size."""
    scale = size / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return (size - w) // 2, (size - h) // 2, w, h


def letterboxed(mode: str):
    def resized_array(image: Image.Image, image_size: int) -> np.ndarray:
        image = images.to_grey_or_rgb(image)
        left, top, w, h = content_box(*image.size, image_size)
        pixels = np.array(image.resize((w, h), Image.BILINEAR, reducing_gap=3.0).convert("RGB"), dtype=np.uint8)
        pad = ((top, image_size - h - top), (left, image_size - w - left), (0, 0))
        if mode == "mirror":
            return np.pad(pixels, pad, mode="symmetric")
        return np.pad(pixels, pad, mode="constant", constant_values=int(pixels.mean()))

    return resized_array


def main(data: Path, mode: str) -> None:
    if mode != "squash":
        images.resized_array = letterboxed(mode)
    samples = samples_of(data, False)
    rows = []
    for fold in folds.cv_folds(samples, 5):
        start = time.perf_counter()
        model, _ = folds.fit(shipped_options(data, fold.training), fold.training)
        fit_s = time.perf_counter() - start
        size = model.config["image_size"]
        truth, maps, labels, raw = [], [], [], []
        for sample, scored in zip(fold.held_out, iter_scores(model, [s.path for s in fold.held_out], with_maps=True, show_progress=False)):
            labels.append(sample.label)
            raw.append(scored.raw)
            if sample.label == 1 and not sample.mask:
                continue
            m = torch.as_tensor(np.asarray(scored.map, dtype=np.float32))
            if mode != "squash":
                left, top, w, h = content_box(*Image.open(sample.path).size, size)
                m = F.interpolate(m[top : top + h, left : left + w][None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
            mask = load_mask(sample.mask, size).numpy() if sample.mask else np.zeros((size, size), bool)
            truth.append(mask[::2, ::2])
            maps.append(m.numpy()[::2, ::2])
        row = {
            "pixel_auroc": pixel_auroc(np.concatenate([t[::2, ::2].ravel() for t in truth]), np.concatenate([m[::2, ::2].ravel() for m in maps])),
            "aupro": aupro(truth, maps),
            "image_auroc": roc_auc_score(labels, raw),
            "fit_s": fit_s,
        }
        print(fold.name, json.dumps(row), flush=True)
        rows.append(row)
    print(mode, data.name, {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "mirror")
