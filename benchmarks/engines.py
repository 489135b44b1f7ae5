#!/usr/bin/env python
"""Predict's stages and the whole process, int8 against fp32, in one run (issues 15 and 25).

Makes 1024 x 1024 PNG copies of the first N images of DATA (default: 320 screws), fits the
default method on DATA twice (the default int8 backbone, and ``--precision fp32``: the path every
model took before), or takes --model and --fp32-model, then measures, median of --repeats:

  decode     reading and resizing the PNGs alone (predict's loader, default workers)
  backbone   the frozen extractor alone (batch 16, every map the model reads): PyTorch fp32 (the
             raw forward, batch norm folded), ONNX Runtime fp32, and the model's int8 graph
  search     the memory-bank search and score alone on those maps, float32 and bfloat16
  predict    ``inference.iter_scores`` end to end: the default, and the fp32 model on ONNX Runtime
  process    the whole ``anomaly predict`` command: the default, the fp32 model as before
             (``--engine auto``: ONNX Runtime, fp32), and with --baseline REV the code of git
             revision REV predicting the fp32 model (today's default before this change)

    python benchmarks/engines.py --data ../shared/data/screws --baseline 9dcc967 --out engines.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from anomalycli import backbones, coreset, quantize, train
from anomalycli.data import discover, image_batches
from anomalycli.engines import on_engine
from anomalycli.inference import iter_scores
from anomalycli.methods import AnomalyModel

REPO = Path(__file__).resolve().parent.parent


def median_time(fn, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def upscaled_copies(paths: list[Path], folder: Path, size: int = 1024) -> list[Path]:
    copies = []
    for i, path in enumerate(paths):
        copy = folder / f"{i:04d}.png"
        with Image.open(path) as image:  # the file's own mode: grey stays grey, as a camera writes it
            image.resize((size, size), Image.BICUBIC).save(copy)
        copies.append(copy)
    return copies


def fit_default(data: Path, path: Path, image_size: int | None = None, fast: bool = False, precision: str = "auto") -> float:
    """Fit the default method on ``data`` into ``path``; the seconds the fit took."""
    samples = discover(data).samples
    options = train.TrainOptions(data=str(data), image_size=image_size, fast=fast, precision=precision, device="cpu")
    options.method = train.choose_method(samples, options.cv_folds)  # what --method auto picks
    options.validate()
    start = time.perf_counter()
    model, _, _ = train.fit(options, samples, [], show_progress=False)
    seconds = time.perf_counter() - start
    model.save(path)
    return seconds


def scoring_parts(model: AnomalyModel):
    """(the backbone pass predict makes, whether it reads the later stages, the net whose ``score_maps`` follows it)."""
    if model.method == "hybrid":
        return model.net.patchcore.extractor, model.net.deep, model.net
    return model.net.extractor, False, model.net


def process_seconds(args: list[str], repeats: int, cwd: Path | None = None, env: dict | None = None) -> float:
    """The median wall time of a whole ``anomaly`` process (every process starts cold anyway; the
    files are in the page cache from the passes before)."""
    command = [sys.executable, "-m", "anomalycli", *args]
    return median_time(lambda: subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=env), repeats, warm_up=False)


def measure(model_path: Path, fp32_path: Path, paths: list[Path], repeats: int, baseline: Path | None = None, batch: int = 16) -> dict:
    model = AnomalyModel.load(model_path)
    size = model.config["image_size"]
    n = len(paths)
    out: dict = {"n_images": n, "method": model.method, "image_size": size, "bank": int(model.config["bank_size"]), "batch": batch,
                 "precision": model.config.get("precision", "fp32")}
    extractor, deep, net = scoring_parts(model)
    int8 = quantize.int8_of(model.net)

    def decode():
        for _ in image_batches(paths, size, 32):
            pass

    out["decode_s"] = median_time(decode, repeats) / n
    images, _, _ = next(image_batches(paths[:batch], size, batch))
    x = backbones.preprocess(images, model.config["backbone"])
    with torch.inference_mode():
        fp32_extractor = int8.fp32 if int8 is not None else extractor
        out["backbone_torch_s"] = median_time(lambda: fp32_extractor(x, deep=deep), repeats * 3) / batch
        session = quantize.session(quantize.fp32_graph(fp32_extractor, size, deep))  # what train quantises
        pixels = x.contiguous().numpy()
        out["backbone_onnx_s"] = median_time(lambda: session.run(None, {quantize.INPUT: pixels}), repeats * 3) / batch
        if int8 is not None:
            out["backbone_int8_s"] = median_time(lambda: int8(x, deep=deep), repeats * 3) / batch
        maps = extractor(x, deep=deep)
        native = coreset.bfloat16_native
        for name, switch in (("search_fp32_s", lambda: False), ("search_bf16_s", native)):
            coreset.bfloat16_native = switch
            out[name] = median_time(lambda: net.score_maps(maps), repeats * 3) / batch
        coreset.bfloat16_native = native
    out["bfloat16_native"] = native()

    def predict(m):
        return lambda: sum(1 for _ in iter_scores(m, paths, batch_size=32, show_progress=False))

    out["predict_default_s"] = median_time(predict(on_engine(model, "auto", n, with_maps=False)[0]), repeats) / n
    out["predict_fp32_onnx_s"] = median_time(predict(on_engine(AnomalyModel.load(fp32_path), "onnx", n, with_maps=False)[0]), repeats) / n
    folder = str(paths[0].parent)
    out["process_default_s"] = process_seconds(["predict", str(model_path), folder], repeats) / n
    out["process_fp32_s"] = process_seconds(["predict", str(fp32_path), folder], repeats) / n
    if baseline is not None:
        env = {**os.environ, "PYTHONPATH": str(baseline)}
        out["process_baseline_s"] = process_seconds(["predict", str(fp32_path), folder], repeats, cwd=baseline, env=env) / n
    return out


def markdown(r: dict, command: str) -> str:
    per_s = {k: 1 / v for k, v in r.items() if k.endswith("_s") and isinstance(v, float)}
    rows = [
        ("decode + resize alone (loader, default workers)", "decode_s"),
        (f"backbone alone, PyTorch fp32, batch norm folded (the raw forward; batch {r['batch']})", "backbone_torch_s"),
        (f"backbone alone, ONNX Runtime fp32 (batch {r['batch']})", "backbone_onnx_s"),
        (f"backbone alone, the model's int8 graph on ONNX Runtime (batch {r['batch']})", "backbone_int8_s"),
        (f"bank search and score alone, float32 ({r['bank']} patches)", "search_fp32_s"),
        ("bank search and score alone, bfloat16 products" + ("" if r["bfloat16_native"] else " (not native here: float32)"), "search_bf16_s"),
        ("predict, default (`iter_scores`)", "predict_default_s"),
        ("predict, fp32 model on ONNX Runtime (`iter_scores`)", "predict_fp32_onnx_s"),
        ("whole `anomaly predict` process, default", "process_default_s"),
        ("whole `anomaly predict` process, fp32 model (`--engine auto`: ONNX Runtime, as before)", "process_fp32_s"),
        ("whole `anomaly predict` process, fp32 model, the baseline revision's code", "process_baseline_s"),
    ]
    lines = [f"`{command}`", "", f"{r['n_images']} PNGs of 1024 x 1024 px, {r['method']} ({r['image_size']} px model, {r['precision']} backbone), median of the repeats:", "",
             "| stage | ms per image | images/s |", "| --- | --- | --- |"]
    lines += [f"| {what} | {1000 * r[key]:.1f} | {per_s[key]:.1f} |" for what, key in rows if key in r]
    default = per_s["process_default_s"]
    lines += ["", f"- whole process, default / fp32 model on this code: **{default / per_s['process_fp32_s']:.2f}x**"]
    if "process_baseline_s" in r:
        lines += [f"- whole process, default / the baseline revision's default: **{default / per_s['process_baseline_s']:.2f}x**"]
    lines += [f"- whole process, default / the raw PyTorch fp32 forward alone: **{default / per_s['backbone_torch_s']:.2f}**",
              f"- int8 backbone / ONNX Runtime fp32: {per_s['backbone_int8_s'] / per_s['backbone_onnx_s']:.2f}x; "
              f"bfloat16 search / float32: {per_s['search_bf16_s'] / per_s['search_fp32_s']:.2f}x" if "backbone_int8_s" in r else ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "screws")
    parser.add_argument("--model", type=Path, default=None, help="model to time (default: fit the default method on DATA)")
    parser.add_argument("--fp32-model", type=Path, default=None, help="the same model fitted with --precision fp32 (default: fit it)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default: the method's)")
    parser.add_argument("--fast", action="store_true", help="time the model train --fast makes")
    parser.add_argument("--images", type=int, default=320, help="PNG copies to score")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="git revision whose code predicts the fp32 model too (today's default before a change)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        tmp = Path(tmp)
        model_path, fp32_path = args.model or tmp / "model.safetensors", args.fp32_model or tmp / "fp32.safetensors"
        fits = {}
        if args.model is None:
            fits["fit_default_s"] = fit_default(args.data, model_path, args.image_size, args.fast)
        if args.fp32_model is None:
            fits["fit_fp32_s"] = fit_default(args.data, fp32_path, args.image_size, args.fast, precision="fp32")
        folder = tmp / "pngs"
        folder.mkdir()
        paths = upscaled_copies([s.path for s in discover(args.data).samples][: args.images], folder)
        baseline = None
        if args.baseline:
            baseline = tmp / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline], check=True, capture_output=True)
        try:
            result = {**measure(model_path, fp32_path, paths, args.repeats, baseline), **fits}
        finally:
            if baseline is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], capture_output=True)
    command = "python benchmarks/engines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(result, command.strip())
    if fits:
        text += "".join(f"- fit on DATA, {name[4:-2]}: {seconds:.1f} s\n" for name, seconds in fits.items())
    print(text)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
