"""``anomaly inspect`` without the terminal: the facts about a data set, as a plain dict."""

from __future__ import annotations

from collections import Counter, defaultdict

from PIL import Image

from anomalycli.data import Dataset, ImageError, file_sha256, load_image


def imbalance_verdict(ratio: float | None) -> str:
    if ratio is None:
        return "only one class: a classifier cannot be trained; patchcore can"
    if ratio < 1.5:
        return "balanced"
    if ratio < 5:
        return "moderately imbalanced: use --weighted-loss or --sampler balanced for the classifier"
    return "heavily imbalanced: prefer patchcore, or the classifier with --weighted-loss / --sampler balanced"


def inspect_dataset(dataset: Dataset) -> dict:
    counts: dict[str, Counter] = defaultdict(Counter)
    defect_types: Counter = Counter()
    sizes: Counter = Counter()
    modes: Counter = Counter()
    unreadable = []
    by_hash: dict[str, list] = defaultdict(list)
    for s in dataset.samples:
        split = s.split or "all"
        counts[split][s.class_name] += 1
        if s.label:
            defect_types[s.defect_type] += 1
        try:
            with Image.open(s.path) as im:
                sizes[f"{im.width}x{im.height}"] += 1
                modes[im.mode] += 1
            load_image(s.path)  # a full decode: truncated files fail only here
        except ImageError as exc:
            unreadable.append({"path": str(s.path), "error": str(exc)})
            continue
        except Exception as exc:  # Image.open's own errors carry no path; load_image says it better
            unreadable.append({"path": str(s.path), "error": f"{s.path}: {exc}"})
            continue
        by_hash[file_sha256(s.path)].append(s)
    n_normal = sum(1 for s in dataset.samples if s.label == 0)
    n_anomaly = len(dataset.samples) - n_normal
    ratio = (max(n_normal, n_anomaly) / min(n_normal, n_anomaly)) if n_normal and n_anomaly else None
    duplicates = []
    for digest, group in by_hash.items():
        if len(group) > 1:
            splits = sorted({s.split or "all" for s in group})
            duplicates.append(
                {
                    "sha256": digest,
                    "paths": [str(s.path) for s in group],
                    "splits": splits,
                    "leak": len(splits) > 1,
                    "conflicting_labels": len({s.label for s in group}) > 1,
                }
            )
    return {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "normal_class": dataset.normal_class,
        "n_images": len(dataset.samples),
        "n_normal": n_normal,
        "n_anomaly": n_anomaly,
        "counts": {split: dict(sorted(c.items())) for split, c in sorted(counts.items())},
        "imbalance_ratio": ratio,
        "imbalance_verdict": imbalance_verdict(ratio),
        "defect_types": dict(sorted(defect_types.items())),
        "image_sizes": dict(sizes.most_common()),
        "image_modes": dict(modes.most_common()),
        "masks": sum(1 for s in dataset.samples if s.mask),
        "unreadable": unreadable,
        "duplicates": duplicates,
        "skipped_files": [str(p) for p in dataset.skipped],
    }
