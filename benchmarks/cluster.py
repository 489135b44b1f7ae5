#!/usr/bin/env python
"""fit and predict in one process vs on a local Ray instance with 2 workers (issue 17), one run.

For each N of --images: a training folder of N good images (DATA's good images over and over,
hard links) plus DATA's defective ones, and a list of N paths over all of DATA's images. Then:

  fit        ``train.train`` of the default patchcore at --image-size, in this process and
             with --ray on the local instance (its start-up timed apart, once)
  predict    the model fitted on the smallest N scores the N paths: ``inference.iter_scores``
             here, ``cluster.score_paths`` on Ray; engine auto (ONNX Runtime) in both

    python benchmarks/cluster.py --data ../shared/data/magtiles --out /tmp/cluster.md
    python benchmarks/cluster.py --unit-costs      # what the 100-machine plan in BENCHMARKS.md multiplies

One process uses torch's 2 threads; Ray runs 2 single-thread workers (so the banks may differ:
the JSON's same_bank; with one thread here they are equal, tests/test_cluster.py). Repeated
images embed to the same features, which changes nothing of the work the fit does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from anomalycli import cluster, modelfile
from anomalycli.data import discover
from anomalycli.engines import load_model, on_engine
from anomalycli.inference import iter_scores
from anomalycli.train import TrainOptions, train

REPO = Path(__file__).resolve().parent.parent


def training_folder(samples, n_good: int, folder: Path) -> Path:
    good = [s.path for s in samples if s.label == 0]
    for name in ("good", "defect"):
        (folder / name).mkdir(parents=True)
    for i in range(n_good):
        source = good[i % len(good)]
        (folder / "good" / f"{i:06d}{source.suffix}").hardlink_to(source)
    for i, sample in enumerate(s for s in samples if s.label == 1):
        (folder / "defect" / f"{sample.defect_type or 'defect'}{i:04d}{sample.path.suffix}").hardlink_to(sample.path)
    return folder


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def same_bank(a: Path, b: Path) -> bool:
    return modelfile.load(a)[0]["bank"].equal(modelfile.load(b)[0]["bank"])


def run(data: Path, sizes: list[int], image_size: int, work: Path) -> dict:
    samples = discover(data).samples
    ray, start_up = timed(lambda: cluster.connect(cluster.LOCAL))
    out = {"data": str(data), "image_size": image_size, "workers": cluster.workers(ray), "ray_start_s": start_up, "rows": []}
    model_path = None
    for n in sizes:
        folder = training_folder(samples, n, work / f"data-{n}")
        options = dict(data=str(folder), method="patchcore", image_size=image_size)
        row = {"n": n}
        here, row["fit_here_s"] = timed(lambda: train(TrainOptions(**options, run_dir=str(work / f"here-{n}")), show_progress=False))
        there, row["fit_ray_s"] = timed(lambda: train(TrainOptions(**options, run_dir=str(work / f"ray-{n}"), ray=cluster.LOCAL), show_progress=False))
        row["bank"] = int(here.model.config["bank_size"])
        row["same_bank"] = same_bank(here.model_path, there.model_path)
        model_path = model_path or here.model_path
        paths = [samples[i % len(samples)].path for i in range(n)]
        model, _ = on_engine(load_model(model_path), "auto", n, with_maps=False)
        _, row["predict_here_s"] = timed(lambda: list(iter_scores(model, paths, show_progress=False)))
        _, row["predict_ray_s"] = timed(lambda: cluster.score_paths(ray, model_path, paths, show_progress=False))
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    out["predict_bank"] = int(modelfile.read_meta(model_path)["config"]["bank_size"])
    return out


def unit_costs() -> dict:
    """What the 100-machine plan multiplies: one greedy coreset part, and the bank search per 320 px
    image against banks of two sizes (random features: the cost depends on the shapes only)."""
    from anomalycli import backbones
    from anomalycli.coreset import PART_SIZE, ApproximateGreedyCoresetSampler
    from anomalycli.methods.patchcore import PatchCore

    extractor = backbones.FeatureExtractor("efficientnet_lite1", backbones.build("efficientnet_lite1", "none"))
    queries = torch.randn(8, 1600, 152)
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        features = torch.randn(PART_SIZE, 152).half()
        for ratio in (0.01, 0.001):
            _, out[f"greedy_part_ratio{ratio}_threads{threads}_s"] = timed(lambda: ApproximateGreedyCoresetSampler(ratio).run_part(features))
        for bank in (5120, 51200):
            model = PatchCore(extractor, torch.randn(bank, 152), part_sizes=[bank // 5] * 5)
            model.score_features(queries, (40, 40))
            _, seconds = timed(lambda: model.score_features(queries, (40, 40)))
            out[f"search_bank{bank}_threads{threads}_ms_per_image"] = 1000 * seconds / len(queries)
    return out


def markdown(out: dict) -> str:
    lines = [
        f"Data {out['data']}, patchcore at {out['image_size']} px, {out['workers']} Ray workers; "
        f"Ray start-up {out['ray_start_s']:.1f} s (once, not in the rows). predict uses the model fitted on "
        f"the smallest N (bank {out['predict_bank']} patches).",
        "",
        "| images | fit, one process | fit, Ray | Ray / one | predict, one process | predict, Ray | Ray / one |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['fit_here_s']:.1f} s ({r['n'] / r['fit_here_s']:.0f} img/s) | {r['fit_ray_s']:.1f} s "
            f"({r['n'] / r['fit_ray_s']:.0f} img/s) | {r['fit_ray_s'] / r['fit_here_s']:.2f} "
            f"| {r['predict_here_s']:.1f} s ({r['n'] / r['predict_here_s']:.0f} img/s) | {r['predict_ray_s']:.1f} s "
            f"({r['n'] / r['predict_ray_s']:.0f} img/s) | {r['predict_ray_s'] / r['predict_here_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "magtiles")
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=128, help="model input size (the 320 px default fits 10,000 images in hours here)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here (and the JSON beside it)")
    parser.add_argument("--unit-costs", action="store_true", help="only time one coreset part and the bank search (the plan's inputs)")
    args = parser.parse_args(argv)
    if args.unit_costs:
        print(json.dumps(unit_costs(), indent=2))
        return 0
    logging.getLogger("anomalycli").setLevel(logging.WARNING)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as work:
        out = run(args.data, sorted(args.images), args.image_size, Path(work))
    text = markdown(out)
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
