#!/usr/bin/env python
"""Predict on PyTorch vs ONNX Runtime (issue 15), in one run, beside the floor 2 cores allow.

Makes 1024 x 1024 PNG copies of the first N images of DATA (default: 320 screws), fits the
default method on DATA (`--method auto`: the hybrid where DATA labels enough defects) or takes --model, then measures, median of --repeats:

  decode     reading and resizing the PNGs alone (predict's loader, default workers)
  backbone   the frozen extractor alone on PyTorch and on ONNX Runtime (batch 16, random input)
  search     the memory-bank search and score alone, on cached patch features
  predict    ``inference.iter_scores`` end to end on each engine (the in-memory export's time apart)
  process    the whole ``anomaly predict`` command on each engine, start-up included

    python benchmarks/engines.py --data ../shared/data/screws --out benchmarks/engines.md
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

from anomalycli import export, train
from anomalycli.data import discover, image_batches
from anomalycli.engines import OnnxModel, _session
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


def fit_default(data: Path, path: Path, image_size: int | None = None, fast: bool = False) -> AnomalyModel:
    samples = discover(data).samples
    options = train.TrainOptions(data=str(data), image_size=image_size, fast=fast)
    options.method = train.choose_method(samples, options.cv_folds)  # what --method auto picks
    options.validate()
    model, _, _ = train.fit(options, samples, [], show_progress=False)
    model.save(path)
    return AnomalyModel.load(path)


class DeepExtractor(torch.nn.Module):
    """The hybrid's extractor pass: PatchCore's maps and the later stages its head pools."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, x):
        return self.extractor(x, deep=True)


def scoring_parts(model: AnomalyModel):
    """(the backbone pass predict makes, the PatchCore whose bank it searches)."""
    if model.method == "hybrid":
        return DeepExtractor(model.net.patchcore.extractor), model.net.patchcore
    return model.net.extractor, model.net


def backbone_onnx(extractor: torch.nn.Module, batch: torch.Tensor):
    """The extractor alone as an ONNX Runtime session (what the exported graph spends in it)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(extractor, (batch,), buffer, dynamo=False, opset_version=export.OPSET, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return _session(buffer.getvalue())


def measure(model_path: Path, paths: list[Path], repeats: int, batch: int = 16) -> dict:
    model = AnomalyModel.load(model_path)
    size = model.config["image_size"]
    n = len(paths)
    out: dict = {"n_images": n, "method": model.method, "image_size": size, "bank": int(model.config["bank_size"]), "batch": batch}
    extractor, one_class = scoring_parts(model)

    def decode():
        for _ in image_batches(paths, size, 32):
            pass

    out["decode_s"] = median_time(decode, repeats) / n
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out["backbone_torch_s"] = median_time(lambda: extractor(x), repeats * 3) / batch
        session = backbone_onnx(extractor, x)
        out["backbone_onnx_s"] = median_time(lambda: session.run(None, {"x": x.numpy()}), repeats * 3) / batch
        features, grid = one_class.embed(x)
        out["search_s"] = median_time(lambda: one_class.score_features(features, grid), repeats * 3) / batch

    def predict(m):
        return lambda: sum(1 for _ in iter_scores(m, paths, batch_size=32, show_progress=False))

    out["predict_torch_s"] = median_time(predict(model), repeats) / n
    start = time.perf_counter()
    onnx_model = OnnxModel.from_model(model, with_maps=False)
    out["export_s"] = time.perf_counter() - start
    out["predict_onnx_s"] = median_time(predict(onnx_model), repeats) / n
    for engine in ("torch", "onnx"):
        def command(engine=engine):
            subprocess.run(["anomaly", "predict", str(model_path), str(paths[0].parent), "--engine", engine], check=True, capture_output=True)
        # Every process starts cold anyway; the files are in the page cache from the passes above.
        out[f"process_{engine}_s"] = median_time(command, repeats, warm_up=False) / n
    # Each stage alone already uses both cores, so the floor is their sum per image.
    out["floor_s"] = out["decode_s"] + out["backbone_onnx_s"] + out["search_s"]
    return out


def markdown(r: dict, command: str) -> str:
    per_s = {k: 1 / v for k, v in r.items() if k.endswith("_s") and k != "export_s"}
    rows = [
        ("decode + resize alone (loader, default workers)", "decode_s"),
        (f"backbone forward alone, PyTorch (batch {r['batch']})", "backbone_torch_s"),
        (f"backbone forward alone, ONNX Runtime (batch {r['batch']})", "backbone_onnx_s"),
        (f"memory-bank search and score alone ({r['bank']} patches)", "search_s"),
        ("**floor**: decode + ONNX backbone + search, per image", "floor_s"),
        ("predict, PyTorch (`iter_scores`)", "predict_torch_s"),
        ("predict, ONNX Runtime (`iter_scores`)", "predict_onnx_s"),
        ("whole `anomaly predict --engine torch` process", "process_torch_s"),
        ("whole `anomaly predict --engine onnx` process", "process_onnx_s"),
    ]
    lines = [f"`{command}`", "", f"{r['n_images']} PNGs of 1024 x 1024 px, {r.get('method', 'patchcore')} ({r['image_size']} px model), median of the repeats:", "",
             "| stage | ms per image | images/s |", "| --- | --- | --- |"]
    lines += [f"| {what} | {1000 * r[key]:.1f} | {per_s[key]:.1f} |" for what, key in rows]
    lines += ["", f"- ONNX Runtime / PyTorch, predict: **{per_s['predict_onnx_s'] / per_s['predict_torch_s']:.2f}x**; "
              f"whole process: {per_s['process_onnx_s'] / per_s['process_torch_s']:.2f}x",
              f"- predict on ONNX Runtime / floor: **{per_s['predict_onnx_s'] / per_s['floor_s']:.2f}**",
              f"- exporting the model in memory when predict starts: {r['export_s']:.1f} s (included in the whole-process rows)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "screws")
    parser.add_argument("--model", type=Path, default=None, help="model to time (default: fit the default method on DATA)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default: patchcore's)")
    parser.add_argument("--fast", action="store_true", help="time the model train --fast makes")
    parser.add_argument("--images", type=int, default=320, help="PNG copies to score")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        model_path = args.model or Path(tmp) / "model.safetensors"
        if args.model is None:
            fit_default(args.data, model_path, args.image_size, args.fast)
        folder = Path(tmp) / "pngs"
        folder.mkdir()
        paths = upscaled_copies([s.path for s in discover(args.data).samples][: args.images], folder)
        result = measure(model_path, paths, args.repeats)
    command = "python benchmarks/engines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(result, command.strip())
    print(text)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
