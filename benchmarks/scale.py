"""Scale and Ray: fit and predict on many images, in one process and on a local Ray instance.

For each N: a training folder of N good images (the data set's good images over and over, hard
links; repeated images cost the fit the same work as new ones) and a list of N paths. Then the
whole ``anomaly train --method patchcore`` and ``anomaly predict MODEL LIST`` processes (the model
fitted on the smallest N predicts every N), timed with their peak memory. With Ray installed,
the smallest N again with ``--ray`` (a local instance of 2 workers; its start is in the time).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import QUICK_IMAGE_SIZE, anomaly_command, run_measured, samples_of

TITLE = "Scale and Ray"
SIZES = (1000, 2000)
QUICK_SIZES = (24,)


def training_folder(samples, n_good: int, folder: Path) -> Path:
    good = [s.path for s in samples if s.label == 0]
    (folder / "good").mkdir(parents=True)
    for i in range(n_good):
        source = good[i % len(good)]
        (folder / "good" / f"{i:06d}{source.suffix}").hardlink_to(source)
    return folder


def path_list(samples, n: int, path: Path) -> Path:
    path.write_text("".join(f"{samples[i % len(samples)].path}\n" for i in range(n)))
    return path


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def run(data: Path, quick: bool, sizes=None, log=print) -> dict:
    samples = samples_of(data, quick)
    sizes = sorted(sizes or (QUICK_SIZES if quick else SIZES))
    size_option = ("--image-size", str(QUICK_IMAGE_SIZE)) if quick else ()
    out = {"data": data.name, "rows": [], "ray": None}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        tmp = Path(tmp)
        model = tmp / f"fit-{sizes[0]}" / "model.safetensors"
        for n in sizes:
            folder = training_folder(samples, n, tmp / f"data-{n}")
            row = {"n": n}
            row["fit_s"], row["fit_rss"] = run_measured(
                anomaly_command("train", str(folder), "--method", "patchcore", "--run-dir", str(tmp / f"fit-{n}"), *size_option)
            )
            listing = path_list(samples, n, tmp / f"paths-{n}.txt")
            row["predict_s"], row["predict_rss"] = run_measured(anomaly_command("predict", str(model), str(listing), "--output", str(tmp / f"scores-{n}.csv")))
            out["rows"].append(row)
            log(f"  {n} images: fit {row['fit_s']:.1f} s ({row['fit_rss']:.0f} MiB), predict {row['predict_s']:.1f} s ({row['predict_rss']:.0f} MiB)")
        if ray_installed() and not quick:  # --ray has tests of its own; its start would double a smoke run
            n = sizes[0]
            ray = {"n": n}
            ray["fit_s"], _ = run_measured(
                anomaly_command("train", str(tmp / f"data-{n}"), "--method", "patchcore", "--ray", "--run-dir", str(tmp / "fit-ray"), *size_option)
            )
            ray["predict_s"], _ = run_measured(
                anomaly_command("predict", str(model), str(tmp / f"paths-{n}.txt"), "--ray", "--output", str(tmp / "scores-ray.csv"))
            )
            out["ray"] = ray
            log(f"  Ray, {n} images: fit {ray['fit_s']:.1f} s, predict {ray['predict_s']:.1f} s")
    return out


def headline(result: dict, data: str) -> dict:
    if result["data"] != data:
        return {}
    last = result["rows"][-1]
    return {
        "fit / predict on many images (whole processes)": f"{last['n']:,} images: fit {last['fit_s']:.0f} s, predict {last['predict_s']:.0f} s, "
        f"peak {max(last['fit_rss'], last['predict_rss']):.0f} MiB"
    }


def section(result: dict) -> str:
    lines = [
        f"Data: {result['data']}'s good images over and over (hard links); patchcore at its default settings. Predict: the model "
        "fitted on the smallest N. One run each; peak memory of the largest process.",
        "",
        "| images | fit, s | fit, ms an image | fit peak MiB | predict, s | predict, ms an image | predict peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n']:,} | {r['fit_s']:.1f} | {1000 * r['fit_s'] / r['n']:.1f} | {r['fit_rss']:.0f} | {r['predict_s']:.1f} "
            f"| {1000 * r['predict_s'] / r['n']:.1f} | {r['predict_rss']:.0f} |"
        )
    ray = result["ray"]
    if ray:
        one = next(r for r in result["rows"] if r["n"] == ray["n"])
        lines += [
            "",
            f"On a local Ray instance (`--ray`, 2 workers on this machine's 2 cores; Ray's start is in the time), {ray['n']:,} images: "
            f"fit {ray['fit_s']:.1f} s ({ray['fit_s'] / one['fit_s']:.2f} of one process), "
            f"predict {ray['predict_s']:.1f} s ({ray['predict_s'] / one['predict_s']:.2f} of one process). "
            "On one machine Ray only adds its start; it pays where it spreads the work over machines (README, Ray).",
        ]
    else:
        lines += ["", "Ray: not measured in this run (not installed, or `--quick`)."]
    return "\n".join(lines)
