"""The peer: anomalib's PatchCore on the same images, backbone and size as the default patchcore.

anomalib runs in a virtual environment of its own (``peer_anomalib.py`` is the script run there;
``--peer-python`` or ``$ANOMALIB_PYTHON`` names its Python). Its greedy coreset takes far too long
at the default ratio here, so it runs at two small ratios; each greedy step costs the same, and
the straight line through the two runs gives its coreset time at the default ratio (stated as
extrapolated). anomalib is timed inside its process (start excluded); anomalycli as the whole
``anomaly train`` and ``anomaly predict`` processes (start included).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from anomalycli.detection.defaults import DEFAULT_IMAGE_SIZE
from benchmarks.common import REPO, anomaly_command, run_measured, samples_of, shipped_options
from benchmarks.scale import path_list, training_folder

TITLE = "The peer: anomalib's PatchCore"
SCRIPT = Path(__file__).resolve().parent / "peer_anomalib.py"
DEFAULT_PYTHON = REPO.parent / "peer-venv" / "bin" / "python"
N_PREDICT = 96


def run(data: Path, python: Path, quick: bool, log=print) -> dict:
    samples = samples_of(data, quick)
    good = [s for s in samples if s.label == 0]
    options = shipped_options(data, samples, "patchcore", quick)
    n_fit, n_predict = (16, 8) if quick else (len(good), N_PREDICT)
    out = {"data": data.name, "backbone": options.backbone, "image_size": options.image_size, "coreset_ratio": options.coreset_ratio, "n_fit": n_fit}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        tmp = Path(tmp)
        folder = training_folder(good, n_fit, tmp / "good-only")
        runs = []
        for ratio in (0.01, 0.02) if quick else (0.001, 0.002):
            command = [
                str(python),
                str(SCRIPT),
                "--good-dir",
                str(folder / "good"),
                "--n-fit",
                str(n_fit),
                "--predict-dir",
                str(folder / "good"),
                "--n-predict",
                str(n_predict),
                "--image-size",
                str(options.image_size or DEFAULT_IMAGE_SIZE[options.method]),
                "--coreset-ratio",
                str(ratio),
                "--backbone",
                options.backbone,
                "--json",
                str(tmp / "peer.json"),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode == 3:
                return {**out, "skipped": f"{python} has no anomalib"}
            if done.returncode != 0:
                raise RuntimeError(f"peer run failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads((tmp / "peer.json").read_text()))
            log(f"  anomalib at coreset {ratio:g}: embed {runs[-1]['embed_s']:.1f} s, coreset {runs[-1]['coreset_s']:.1f} s, bank {runs[-1]['bank_size']}")
        a, b = runs
        per_centre = (b["coreset_s"] - a["coreset_s"]) / max(1, b["bank_size"] - a["bank_size"])
        target_bank = round(options.coreset_ratio * a["n_patches"])
        coreset_s = a["coreset_s"] + per_centre * (target_bank - a["bank_size"])
        out["anomalib"] = {
            "version": a["anomalib_version"],
            "runs": runs,
            "target_bank": target_bank,
            "fit_s": statistics.median([r["embed_s"] for r in runs]) + coreset_s,
            "predict_images_per_s": statistics.median([r["predict_images_per_s"] for r in runs]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        }
        size = ("--image-size", str(options.image_size or DEFAULT_IMAGE_SIZE[options.method]))
        out["ours_fit_s"], out["ours_fit_rss"] = run_measured(
            anomaly_command("train", str(folder), "--method", "patchcore", "--run-dir", str(tmp / "ours"), *size)
        )
        listing = path_list(good[:n_predict], n_predict, tmp / "predict.txt")
        seconds, out["ours_predict_rss"] = run_measured(anomaly_command("predict", str(tmp / "ours"), str(listing), "--output", str(tmp / "ours.csv")))
        out["ours_predict_images_per_s"] = n_predict / seconds
    log(f"  anomalib fit {out['anomalib']['fit_s']:.0f} s (extrapolated), anomalycli {out['ours_fit_s']:.1f} s")
    return out


def headline(result: dict, data: str) -> dict:
    if result["data"] != data or "anomalib" not in result:
        return {}
    peer = result["anomalib"]
    return {
        "anomalib's PatchCore, same images and backbone: fit / predict": f"fit {peer['fit_s'] / result['ours_fit_s']:.0f}x faster, predict {result['ours_predict_images_per_s'] / peer['predict_images_per_s']:.1f}x"
    }


def section(result: dict) -> str:
    if "anomalib" not in result:
        return f"Not measured: {result.get('skipped', 'no anomalib environment')}."
    peer = result["anomalib"]
    a, b = peer["runs"]
    return "\n".join(
        [
            f"anomalib {peer['version']} (`benchmarks/peer_anomalib.py`: its plain torch `PatchcoreModel`, random weights, "
            f"{result['backbone']} at {result['image_size']} px, layers at strides 8 and 16) on the same {result['n_fit']} good images "
            f"of {result['data']}. Its coreset ran at ratios {a['coreset_ratio']:g} and {b['coreset_ratio']:g} (banks of {a['bank_size']} "
            f"and {b['bank_size']}); at {result['coreset_ratio']:g} (bank {peer['target_bank']}) its time is **extrapolated**.",
            "",
            "| what | anomalib | anomalycli | ratio |",
            "| --- | --- | --- | --- |",
            f"| fit on {result['n_fit']} good images, s | {peer['fit_s']:.1f} (extrapolated; in process) | {result['ours_fit_s']:.1f} (whole process) "
            f"| {peer['fit_s'] / result['ours_fit_s']:.0f}x faster |",
            f"| predict from the files, images/s | {peer['predict_images_per_s']:.1f} (in process) | {result['ours_predict_images_per_s']:.1f} (whole process) "
            f"| {result['ours_predict_images_per_s'] / peer['predict_images_per_s']:.1f}x |",
            f"| peak memory, MiB | {peer['peak_rss_mib']:.0f} | fit {result['ours_fit_rss']:.0f}, predict {result['ours_predict_rss']:.0f} | |",
        ]
    )
