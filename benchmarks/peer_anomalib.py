"""Time anomalib's own PatchCore (its plain torch model, no Lightning Trainer) as a peer.

Runs in a separate venv that has anomalib (see BENCHMARKS.md), e.g.:

    /work/peer-venv/bin/python benchmarks/peer_anomalib.py --good-dir DIR --n-fit 320 \
        --predict-dir DIR --n-predict 64 --image-size 224 --coreset-ratio 0.01 \
        --backbone efficientnet_lite0 --json OUT.json

The backbone has random weights (pre_trained=False): nothing is downloaded, and speed does
not depend on the weights. Fit = decode + feature extraction in train mode (anomalib's
forward appends each batch's patch embeddings to ``embedding_store``), then anomalib's
``subsample_embedding`` (sparse random projection + KCenterGreedy). Predict = decode + the
eval-mode forward, which returns anomaly maps (upsampled, Gaussian-blurred) and the
num_neighbors-reweighted image scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # KCenterGreedy wraps its loop in tqdm; keep stderr quiet
warnings.filterwarnings("ignore", category=FutureWarning)  # timm/anomalib import-time deprecations
warnings.filterwarnings("ignore", category=DeprecationWarning)  # subsample_embedding warns even unasked

import torch
from PIL import Image
from torchvision import transforms

# timm features_only module names at stride 8 and 16 (checked with feature_info.reduction()).
LAYERS = {
    "efficientnet_lite0": ("blocks.2", "blocks.4"),
    "efficientnet_lite1": ("blocks.2", "blocks.4"),
    "efficientnet_lite2": ("blocks.2", "blocks.4"),
    "wide_resnet50_2": ("layer2", "layer3"),
    "resnet18": ("layer2", "layer3"),
}
BATCH = 32


def image_paths(folder: str, n: int) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    return paths[:n]


def batches(paths: list[Path], transform, stats: dict):
    """Yield decoded, resized, normalised batches; adds the decode time to stats['decode_s']."""
    for i in range(0, len(paths), BATCH):
        start = time.perf_counter()
        images = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + BATCH]])
        stats["decode_s"] = stats.get("decode_s", 0.0) + time.perf_counter() - start
        yield images


def rss_mib(field: str = "VmHWM") -> float:
    """VmHWM: this process's peak resident memory; VmRSS: its current one."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good-dir", required=True)
    parser.add_argument("--n-fit", type=int, required=True)
    parser.add_argument("--predict-dir", required=True)
    parser.add_argument("--n-predict", type=int, required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--num-neighbors", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()

    try:
        import anomalib
        import timm
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError:
        print("anomalib not installed")
        return 3

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # KCenterGreedy's start and most of the projection's draws (sklearn's part is unseeded)
    rss_after_import = rss_mib("VmRSS")
    transform = transforms.Compose(
        [
            transforms.Resize((args.image_size, args.image_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    model = PatchcoreModel(layers=list(LAYERS[args.backbone]), backbone=args.backbone, pre_trained=False, num_neighbors=args.num_neighbors)

    fit_paths = image_paths(args.good_dir, args.n_fit)
    fit_stats: dict = {}
    model.train()  # train mode: forward stores the embeddings (as Patchcore.training_step does)
    start = time.perf_counter()
    for images in batches(fit_paths, transform, fit_stats):
        model(images)
    embed_s = time.perf_counter() - start
    n_patches = sum(e.shape[0] for e in model.embedding_store)
    embed_dim = model.embedding_store[0].shape[1]
    start = time.perf_counter()
    model.subsample_embedding(args.coreset_ratio)  # as Patchcore.fit() does, after the epoch
    coreset_s = time.perf_counter() - start
    fit_s = embed_s + coreset_s

    predict_paths = image_paths(args.predict_dir, args.n_predict)
    predict_stats: dict = {}
    model.eval()
    scores = []
    start = time.perf_counter()
    with torch.inference_mode():  # what Lightning's predict/test loops use
        for images in batches(predict_paths, transform, predict_stats):
            out = model(images)
            scores.append(out.pred_score)
    predict_s = time.perf_counter() - start

    result = {
        "anomalib_version": anomalib.__version__,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "backbone": args.backbone,
        "layers": list(LAYERS[args.backbone]),
        "threads": torch.get_num_threads(),
        "n_fit": len(fit_paths),
        "n_predict": len(predict_paths),
        "image_size": args.image_size,
        "coreset_ratio": args.coreset_ratio,
        "n_patches": n_patches,
        "embed_dim": embed_dim,
        "bank_size": int(model.memory_bank.shape[0]),
        "embed_s": round(embed_s, 3),
        "fit_decode_s": round(fit_stats.get("decode_s", 0.0), 3),
        "coreset_s": round(coreset_s, 3),
        "fit_s": round(fit_s, 3),
        "predict_s": round(predict_s, 3),
        "predict_images_per_s": round(len(predict_paths) / predict_s, 2),
        "score_mean": round(torch.cat(scores).mean().item(), 4),
        "rss_after_import_mib": round(rss_after_import, 1),
        "peak_rss_mib": round(rss_mib(), 1),
    }
    print(json.dumps(result, indent=2))
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
