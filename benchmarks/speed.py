"""Speed and engines: fit, predict's stages one by one, and the whole predict process.

On each data set: ``anomaly train DATA`` (the default method, all images), the same with
``--precision fp32``, and both with ``--fast``, each a whole process timed with its peak memory; then
the images a line gives it: a camera's own 1024 px images where ``../shared/data/screws-1024`` has
them for the set (its 64 repeated to the count), else the set's own images at their own sizes; and
beside them 1024 x 1024 PNG copies upscaled from the set's images (smooth, so they decode faster
than a camera's: the whole default predict is timed on them too, to say how much). Median of the repeats:

  decode     reading and resizing the PNGs alone (predict's loader, default workers)
  backbone   the frozen extractor alone, batch 16, every map the model reads: PyTorch fp32 (the
             raw forward, batch norm folded), ONNX Runtime fp32, and the model's int8 graph,
             timed in turn, round after round
  search     the memory-bank search and score alone on those maps, its products in float32,
             bfloat16 (PyTorch) and int8 (ONNX Runtime)
  process    the whole ``anomaly predict MODEL FOLDER`` command: the default model (also on the
             images saved as JPEG at quality 90, with how far its scores move), the fp32 one,
             the same two with ``--fast``, and the default model's ``anomaly export`` file; with
             ``--baseline REV`` also the code of git revision REV on the fp32 models (its default
             then) and on the file it exports from the fp32 model; each repeat runs them all in turn
  one image  the default model's, the exported file's (and the baseline's) whole predict of one
             image: the start-up a line program calling predict per part waits for
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalycli.data.decoding import decode
from anomalycli.deploy import onnx_model
from anomalycli.runtime import available_cores
from benchmarks.common import (
    CAMERA,
    QUICK_IMAGE_SIZE,
    anomaly_command,
    interleaved_median_times,
    interleaved_process_seconds,
    median_time,
    run_measured,
    samples_of,
    worktree_of,
)
from benchmarks.precision import forced_search

TITLE = "Speed: fit, predict stage by stage, the whole process"
BATCH = 16
# The whole processes also timed on one image (what a line program calling predict per part waits).
ONE_IMAGE = ("default", "export", "baseline", "export_baseline")
ONE_IMAGE_REPEATS = 5
SEARCH_KINDS = ("float32", "bfloat16", "int8")


def line_images(data: Path, own: list[Path], folder: Path, n: int, quick: bool) -> tuple[list[Path], str]:
    """``n`` images as the line gives them, copied into ``folder``: the camera's own where there are
    such for ``data`` (repeated to ``n``), else ``own`` (the set's images, at their own sizes); and what they are."""
    camera = CAMERA.get(data.name)
    if camera is not None and camera.is_dir() and not quick:
        sources, what = sorted(camera.glob("*.png")), "camera images, 1024 x 1024 px"
    else:
        sources, what = own, "the set's own images at their own sizes"
    copies = []
    for i in range(n):
        source = sources[i % len(sources)]
        copies.append(folder / f"{i:04d}{source.suffix}")
        shutil.copy(source, copies[-1])
    return copies, what + (f" ({len(sources)} repeated)" if len(sources) < n else "")


def upscaled_copies(paths: list[Path], folder: Path, size: int = 1024) -> list[Path]:
    copies = []
    for i, path in enumerate(paths):
        copy = folder / f"{i:04d}.png"
        with Image.open(path) as image:  # the file's own mode: grey stays grey, as a camera writes it
            image.resize((size, size), Image.BICUBIC).save(copy)
        copies.append(copy)
    return copies


JPEG_QUALITY = 90


def jpeg_copies(paths: list[Path], folder: Path) -> list[Path]:
    """The line's images saved as JPEG at ``JPEG_QUALITY`` (as a camera program may save them), same names."""
    folder.mkdir()
    copies = []
    for path in paths:
        copies.append(folder / (path.stem + ".jpg"))
        with Image.open(path) as image:
            image.save(copies[-1], quality=JPEG_QUALITY)
    return copies


def jpeg_scores(model: Path, pngs: Path, jpegs: Path, tmp: Path) -> dict:
    """How far the default model's 0..1 scores of the JPEG copies lie from the PNGs', and how many verdicts differ."""
    import csv

    rows = {}
    for name, folder in (("png", pngs), ("jpeg", jpegs)):
        out = tmp / f"scores-{name}.csv"
        subprocess.run(anomaly_command("predict", str(model), str(folder), "--output", str(out)), check=True, capture_output=True)
        with open(out, newline="") as handle:
            rows[name] = {Path(r["path"]).stem: r for r in csv.DictReader(handle)}
    both = [stem for stem in rows["png"] if stem in rows["jpeg"]]
    moved = [abs(float(rows["png"][s]["score"]) - float(rows["jpeg"][s]["score"])) for s in both]
    flipped = sum(rows["png"][s]["verdict"] != rows["jpeg"][s]["verdict"] for s in both)
    return {"jpeg_score_change_median": statistics.median(moved), "jpeg_score_change_max": max(moved), "jpeg_verdicts_changed": flipped, "jpeg_n": len(both)}


def fit_process(data: Path, run_dir: Path, *options: str) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of a whole ``anomaly train DATA`` process; the model lands in ``run_dir``."""
    return run_measured(anomaly_command("train", str(data), "--run-dir", str(run_dir), *options))


def scoring_parts(model):
    """(the backbone pass predict makes, whether it reads the later stages, the net whose ``score_maps`` follows it)."""
    if model.method == "hybrid":
        return model.net.patchcore.extractor, model.net.deep, model.net
    return model.net.extractor, False, model.net


def stages(model_path: Path, paths: list[Path], repeats: int) -> dict:
    """Seconds per image of each stage alone, in this process."""
    from anomalycli.data.tensors import image_batches
    from anomalycli.detection import backbones, bank_search, int8_backbone
    from anomalycli.detection.methods import AnomalyModel

    model = AnomalyModel.load(model_path)
    size, n = model.config["image_size"], len(paths)
    extractor, deep, net = scoring_parts(model)
    int8 = int8_backbone.int8_of(model.net)
    out = {"method": model.method, "image_size": size, "bank": int(model.config["bank_size"]), "precision": model.config.get("precision", "fp32")}
    out["decode"] = median_time(lambda: sum(1 for _ in image_batches(paths, size, 32)), repeats) / n
    images, _, _ = next(image_batches(paths[:BATCH], size, BATCH))
    x = backbones.preprocess(images, model.config["backbone"])
    with torch.inference_mode():
        fp32_extractor = int8.fp32 if int8 is not None else extractor
        session = int8_backbone.session(int8_backbone.fp32_graph(fp32_extractor, size, deep))  # what train quantises
        pixels = x.contiguous().numpy()
        backbones_alone = {
            "backbone_torch": lambda: fp32_extractor(x, deep=deep),
            "backbone_onnx_fp32": lambda: session.run(None, {int8_backbone.INPUT: pixels}),
        }
        if int8 is not None:
            backbones_alone["backbone_int8"] = lambda: int8(x, deep=deep)
        out.update({key: seconds / BATCH for key, seconds in interleaved_median_times(backbones_alone, repeats * 5).items()})
        maps = extractor(x, deep=deep)
        # bfloat16 emulated (no AVX512-BF16 or AMX) is 40x float32's time, and never chosen there.
        for kind in (k for k in SEARCH_KINDS if k != "bfloat16" or bank_search.bfloat16_native()):
            with forced_search(kind):
                net.score_maps(maps)  # a new search kind indexes the bank on its first call
                out[f"search_{kind}"] = median_time(lambda: net.score_maps(maps), repeats * 3) / BATCH
    out["search_default"] = bank_search.search_kind(torch.device("cpu"))
    return out


class CoreTimes:
    """The stages' core time an image, measured once a round beside the whole processes (this
    machine's speed drifts by a third within minutes: the limit measured before the processes ran
    put one run's predict at 107 % of it): decoding's CPU time (one core) and the scoring graph's
    (its threads' together, its calls as predict makes them). The limit they allow is their sum
    over the cores: whole predict runs both at once."""

    def __init__(self, model_path: Path, paths: list[Path], size: int):
        self.size, self.few = size, paths[:BATCH]
        self.decoded = np.stack([decode(p, self.size)[0].transpose(2, 0, 1) for p in self.few])
        self.graph = onnx_model.stored_in(model_path, onnx_model.CALLS_IN_FLIGHT)  # loaded as predict loads it
        if self.graph is not None:
            self.graph.score(self.decoded, with_maps=False)  # its first call sets up what later calls reuse
        self.cores = available_cores()  # what predict splits its calls over
        self.rounds: list[tuple[float, float | None]] = []

    def measure(self) -> None:
        def cpu_an_image(fn) -> float:
            return median_time(fn, 1, warm_up=False, clock=time.process_time) / len(self.few)

        decoding = cpu_an_image(lambda: [decode(p, self.size) for p in self.few])
        scoring = None if self.graph is None else cpu_an_image(lambda: self.graph.score(self.decoded, with_maps=False))
        self.rounds.append((decoding, scoring))

    def medians(self) -> dict:
        out = {"cores": self.cores, "decode_core": statistics.median(d for d, _ in self.rounds)}
        if self.graph is not None:
            out["model_core"] = statistics.median(s for _, s in self.rounds)
            out["core_limit"] = statistics.median((d + s) / self.cores for d, s in self.rounds)
        return out


# The models fitted on each set: name -> ``anomaly train`` options.
FITS = {"default": (), "fp32": ("--precision", "fp32"), "fast": ("--fast",), "fast_fp32": ("--fast", "--precision", "fp32")}


def run(data_sets: list[Path], quick: bool, images: int = 320, repeats: int = 3, baseline: str | None = None, log=print) -> dict:
    runs = []
    for data in data_sets:
        with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
            tmp = Path(tmp)
            size = ("--image-size", str(QUICK_IMAGE_SIZE)) if quick else ()
            own = [s.path for s in samples_of(data, False)]
            out = {"data": data.name, "n_images": len(own)}
            for name, options in FITS.items():
                out[f"fit_{name}"], out[f"fit_{name}_rss"] = fit_process(data, tmp / name, *options, *size)
            log(f"  {data.name}: fit {out['fit_default']:.1f} s (fp32 {out['fit_fp32']:.1f} s, --fast {out['fit_fast']:.1f} s)")
            models = {name: tmp / name / "model.safetensors" for name in FITS}
            folder, upscaled = tmp / "line", tmp / "upscaled"
            folder.mkdir()
            upscaled.mkdir()
            paths, out["images"] = line_images(data, own, folder, 8 if quick else images, quick)
            upscaled_copies(own[: len(paths)], upscaled)
            jpeg_copies(paths, tmp / "jpeg")
            out["n_predicted"] = len(paths)
            out.update(stages(models["default"], paths, 1 if quick else repeats))
            with contextlib.ExitStack() as stack:
                commands = {name: (anomaly_command("predict", str(model), str(folder)), None, None) for name, model in models.items()}
                commands["export"] = (anomaly_command("predict", str(exported(models["default"], tmp / "default.onnx")), str(folder)), None, None)
                commands["default_upscaled"] = (anomaly_command("predict", str(models["default"]), str(upscaled)), None, None)
                commands["default_jpeg"] = (anomaly_command("predict", str(models["default"]), str(tmp / "jpeg")), None, None)
                if baseline:
                    out["baseline"] = baseline
                    tree = stack.enter_context(worktree_of(baseline, tmp / "baseline"))
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    # The baseline's default was the fp32 model.
                    commands["baseline"] = (anomaly_command("predict", str(models["fp32"]), str(folder)), tree, env)
                    commands["fast_baseline"] = (anomaly_command("predict", str(models["fast_fp32"]), str(folder)), tree, env)
                    baseline_onnx = exported(models["fp32"], tmp / "baseline.onnx", tree, env)
                    commands["export_baseline"] = (anomaly_command("predict", str(baseline_onnx), str(folder)), tree, env)
                core_times = CoreTimes(models["default"], paths, out["image_size"])
                measured = interleaved_process_seconds(commands, 1 if quick else repeats, each_round=core_times.measure)
                out.update(core_times.medians())
                for name, (seconds, peak, _) in measured.items():
                    out[f"process_{name}"], out[f"predict_{name}_rss"] = seconds / len(paths), peak
                # Whether the whole process keeps the cores busy: where it runs under the core-time limit
                # with the cores busy, its stages cost more CPU together than alone.
                seconds, _, cpu = measured["default"]
                out["process_default_cores_busy"] = cpu / (seconds * out["cores"])
                one = tmp / "one"
                one.mkdir()
                shutil.copy(paths[0], one)
                starts = {name: ([*commands[name][0][:-1], str(one)], *commands[name][1:]) for name in ONE_IMAGE if name in commands}
                for name, (seconds, _, _) in interleaved_process_seconds(starts, 1 if quick else ONE_IMAGE_REPEATS).items():
                    out[f"one_image_{name}"] = seconds
            out.update(jpeg_scores(models["default"], folder, tmp / "jpeg", tmp))
            log(f"  {data.name}: predict {1000 * out['process_default']:.1f} ms an image, whole process")
            runs.append(out)
    return {"runs": runs}


def exported(model: Path, out: Path, cwd: Path | None = None, env: dict | None = None) -> Path:
    """``anomaly export MODEL --out OUT`` (with the code at ``cwd``, as ``env`` says): the ONNX file."""
    subprocess.run(anomaly_command("export", str(model), "--out", str(out)), cwd=cwd, env=env, check=True, capture_output=True)
    return out


PREDICT_ROW = "predict, whole process, on the line's images (screws: camera images, 1024 px; magtiles: their own sizes)"
LIMIT_ROW = "predict against the limit the stages' core time allows ((decode + model CPU time) / cores)"
OTHER_CPU_HEADLINE = (PREDICT_ROW, LIMIT_ROW)  # the headline's rows from the last run on each other CPU class


def headline(result: dict, data: str) -> dict:
    r = next((r for r in result["runs"] if r["data"] == data), None)
    if r is None:
        return {}
    return {
        "fit on every image (whole `anomaly train`)": f"{r['fit_default']:.1f} s, peak {r['fit_default_rss']:.0f} MiB",
        PREDICT_ROW: f"{1000 * r['process_default']:.1f} ms an image "
        f"({1 / r['process_default']:.1f} images/s), {r['backbone_torch'] / r['process_default']:.2f} of the raw PyTorch forward"
        + (f"; on 1024 px upscaled copies {1000 * r['process_default_upscaled']:.1f} ms" if "process_default_upscaled" in r else ""),
        **(
            {LIMIT_ROW: f"{1000 * r['core_limit']:.1f} ms an image: predict at {r['core_limit'] / r['process_default']:.0%} of it"} if "core_limit" in r else {}
        ),
        "predict stages: decode / backbone / bank search, ms an image": f"{1000 * r['decode']:.1f} / {1000 * r.get('backbone_int8', r['backbone_onnx_fp32']):.1f} / {1000 * r['search_' + r['search_default']]:.1f}",
        "predict peak memory (whole process)": f"{r['predict_default_rss']:.0f} MiB",
        **(
            {
                "predict one image, whole process (the start a line program waits for)": f"{r['one_image_default']:.2f} s"
                + (f" (revision {r['baseline']}: {r['one_image_baseline']:.2f} s)" if "one_image_baseline" in r else "")
            }
            if "one_image_default" in r
            else {}
        ),
    }


ROWS = [  # key, what
    ("decode", "decode + resize alone (loader, default workers)"),
    ("decode_core", "decode + resize, CPU time an image (one core)"),
    ("model_core", "the scoring graph, CPU time an image (its threads together; its calls as predict makes them: one image each, two in flight)"),
    ("core_limit", "the limit the stages' core time allows: (decode + scoring graph CPU time) / cores"),
    ("backbone_torch", f"backbone alone, PyTorch fp32, batch norm folded (the raw forward; batch {BATCH})"),
    ("backbone_onnx_fp32", f"backbone alone, ONNX Runtime fp32 (batch {BATCH})"),
    ("backbone_int8", f"backbone alone, the model's int8 graph on ONNX Runtime (batch {BATCH})"),
    ("search_float32", "bank search and score alone, float32 products"),
    ("search_bfloat16", "bank search and score alone, bfloat16 products (PyTorch; the default where native and int8 is not)"),
    ("search_int8", "bank search and score alone, int8 products (ONNX Runtime; the default where the CPU has VNNI)"),
    ("process_default", "whole `anomaly predict` process, default model (the scoring graph its file carries, on ONNX Runtime, no PyTorch)"),
    ("process_default_jpeg", f"whole `anomaly predict` process, default model, on the same images saved as JPEG (quality {JPEG_QUALITY})"),
    (
        "process_default_upscaled",
        "whole `anomaly predict` process, default model, on 1024 px copies upscaled from the set's images (smooth: they decode faster)",
    ),
    ("process_fp32", "whole `anomaly predict` process, the model fitted with `--precision fp32`"),
    ("process_baseline", "whole `anomaly predict` process, fp32 model, the baseline revision's code"),
    ("process_fast", "whole `anomaly predict` process, `--fast` model (Lite0 at 224 px; its file's scoring graph too)"),
    ("process_fast_fp32", "whole `anomaly predict` process, `--fast --precision fp32` model"),
    ("process_fast_baseline", "whole `anomaly predict` process, `--fast` fp32 model, the baseline revision's code"),
    ("process_export", "whole `anomaly predict` process, the default model's `anomaly export` file (int8 backbone and search)"),
    ("process_export_baseline", "whole `anomaly predict` process, the fp32 model's `anomaly export` file, both by the baseline revision's code"),
]


# Measured once, beside the topic's table (report.py prints it under the section, not under each CPU's).
RECORD = (
    "An fp32 model's file carries its scoring graph too (export.stored_graph), as an int8 model's does: its predict "
    "imported PyTorch and, from 64 images on, exported the same fp32 graph in memory at every start. The default screws "
    "model fitted with `--precision fp32` on the whole set, whole predict of the 320 camera screws: 13.2 against 17.9 s "
    "(**1.36x**), peak 324 against 971 MiB; of one camera image 0.68 against 3.40 s (**5.0x**), peak 191 against 818 MiB; "
    "the default int8 model in the same rounds 9.9 s and 0.70 s, so int8's whole predict is 1.33x fp32's (the table's "
    "rows, measured with the graph: screws 1.36x, magtiles 1.74x; before it, 1.63x and 2.05x). The decoding and the bank "
    "search cost the same in both precisions, so int8's backbone alone (1.8-2x) shows less in the whole process on the "
    "screws, whose 1024 px camera PNGs take longest to decode. `python -m benchmarks.probes.fp32_graph 62cbca5 FP32_MODEL INT8_MODEL "
    "FOLDER ONE_IMAGE_FOLDER 5`, 5 rounds in turn, medians, Intel Xeon (AMX), 2 cores, 2026-12-07 (a slower hour of this "
    "machine than the table's: the int8 model's 31 against 20 ms an image).\n\n"
    "The anomaly map's upsampling and blur as two small products: the map was the patch scores upsampled "
    "bilinearly to the input's size, then blurred by a Gaussian of sigma 8 px (49 taps an axis) over the full-size map, "
    "3.2 of the int8 screws graph's 33 ms CPU an image (ONNX Runtime's profile, one thread). Both steps are linear "
    "and act on each axis alone, so each axis's two are now one (input size x grid) matrix "
    "(`patchcore.maps_from_patches`): the same maps within 1.5e-6, image scores to the bit. The graph stored "
    "again by this tree against the file as it is, whole predict of the 64 camera screws repeated to 320: the "
    "default model 10.26 against 9.39 s (**1.09x**), one image a call 22.9 against 20.1 ms; the `--precision "
    "fp32` model 12.76 against 11.84 s (1.08x); every column of every row the same. `python -m "
    "benchmarks.probes.stored_again MODEL FOLDER`, 5 and 3 rounds in turn, medians. PyTorch's maps (the fit's "
    "out-of-fold maps for the pixel threshold and regions, eval) 6.8 against 0.05 ms a 320 px map; whole `anomaly "
    "train` of the screws 42.6 against 36.2 s (1.18x), peak 1993 against 1559 MiB (`python -m "
    "benchmarks.probes.against_revision 3783dff --rounds 2 train ../shared/data/screws`, the path made absolute). "
    "Intel Xeon (AMX), 2 cores, 2026-12-08.\n\n"
    "Every command's start: typer is held below 0.29 (pyproject.toml), whose option parsing through pydantic "
    "added 0.17 s to each one (the default screws model's whole predict of one camera image 1.15 against 0.99 s, "
    "medians of 6 alternated runs; AMD EPYC, AVX2, 2 cores, 2026-12-06).\n\n"
    "Two decoding workers on 2 cores instead of one (`data/decoding.default_workers`: at least two): whole predict "
    "of the 320 camera screws 7.1 against 7.8 s (1.09x; two workers at a lower priority 7.0 against 7.6 s; one worker "
    "at a lower priority 0.85x), its cores busy 96 % against 86 %, peak 276 against 247 MiB; the magnetic tiles' 320 "
    "JPEGs 6.1 against 6.1 s; one camera image 0.4 s either way (the default models). "
    "`python -m benchmarks.probes.against_revision HEAD predict MODEL FOLDER --output rows.csv --overwrite`, 5 "
    "alternated rounds, medians, Intel Xeon (AMX), 2 cores, 2026-12-07. Measured on 2026-11-30 and 2026-12-05 it "
    "had gained nothing; the scoring graph's search in blocks (below) came between.\n\n"
    "Why whole predict stays under the core-time limit where decoding is heavy (the screws' camera images): "
    "side by side, as whole predict runs them, each stage costs more CPU an image than alone. "
    "`python -m benchmarks.probes.stages_side_by_side MODEL FOLDER` (the default screws model, the 64 camera images), "
    "4 runs of 6 alternated rounds on Intel Xeon (AMX), 2 cores, 2026-12-06: the scoring graph +4 % to +23 % "
    "(46-50 ms CPU an image alone), decoding +4 % to +16 % (19-22 ms). With a tenth more CPU for each stage "
    "and the start (0.65 s of one image's whole predict, 4-5 % of 320 images'), about 85 % of the limit is what "
    "the cores allow; the cores were 94 % busy.\n\n"
    "Fitting on a camera's own images: `anomaly train` on the 64 camera screws (1024 px; the goods lie at any "
    "angle, so the bank learns each at 6 orientations) took 102.6 s, of which writing the 320 turned copies as "
    "full-size PNGs at zlib level 6 was more than half (68 of 116 s under cProfile). Each copy is now shrunk to twice the fit's input size "
    "before it is turned and written at level 1 (workflows/turned_goods.py): 42.5 s, 2.42x faster, peak memory "
    "unchanged (1.82 GiB). `python -m benchmarks.probes.against_revision 80c0e3b~1 train ../shared/data/screws-1024` (the path made absolute), "
    "3 alternated rounds, medians, Intel Xeon (AMX), 2 cores, 2026-12-06. The fitted models judged the 256 goods "
    "of the development set that are not among those 64, and its 50 defects, at AUROC 0.944 (shrunk copies) "
    "against 0.912 (full-size), one fit each. A grey good's copies are then written grey, not as RGB (a third of "
    "the bytes; the fitted model the same to the bit, 16 screws at 24 turns): 40.6 against 49.9 s, 1.23x, "
    "`python -m benchmarks.probes.against_revision 11af264~1 train ../shared/data/screws-1024`, the same protocol.\n\n"
    "Heat maps of a camera's own images: `anomaly predict MODEL ../shared/data/screws-1024/good --heatmaps hm` "
    "(a patchcore model of those 64 screws) took 41.7 s, where the same predict without `--heatmaps` takes about "
    "3 s: outlining the regions with Pillow's MinFilter took 195 ms a 1024 px image, and writing the overlay as a "
    "PNG at zlib level 6 205 ms. The outline is now SciPy's "
    "separable minimum filter (11 ms, the same pixels), the colours are blended only where there is heat, and the "
    "PNG is written at level 1 (files a fifth larger): 13.1 s, 3.19x faster, every heat map pixel for pixel the "
    "same (the 64 screws and 50 defects of a hybrid with a pixel head, side by side). `python -m "
    "benchmarks.probes.against_revision 80c0e3b predict MODEL FOLDER --heatmaps hm --output rows.csv --overwrite`, "
    "3 alternated rounds, medians, Intel Xeon (AMX), 2 cores, 2026-12-06.\n\n"
    "The bank search's products in blocks: the scoring graph a model file carries multiplied each image's "
    "patches by the whole bank at once, a matrix of 33 MB for a 320 px screws image, 61 MB for a magnetic tile "
    "and 215 MB for the 512 px screws model the resolution rule picks, two images in flight. It now searches "
    "an image's patch positions in blocks of at most 16 MB of products (bank_search.EXPORT_PRODUCTS_BYTES), each "
    "multiplied and reduced before the next. Whole predict, one block against 16 MB blocks: screws' camera "
    "images (the default model, 2 blocks) 7.90 against 7.75 s, peak 310 against 250 MiB; magnetic tiles (4 "
    "blocks) 6.87 against 6.44 s, 436 against 284 MiB; the 512 px model on the 373 screws-512 images (13 "
    "blocks) 24.3 against 20.0 s, 861 against 488 MiB; scores moved 1.2e-4 at most (the queries are quantised "
    "per block), no verdict changed. 8 MB blocks took less memory again (231, 263, 490 MiB) but were no faster. "
    "One image a call, as watch, serve and the station call the graph (40 images, 5 rounds in turn; a second run of "
    "the probe, whose whole predicts took 8.86 against 8.83 s and 8.16 against 7.29 s): screws 17.1 against 16.9 ms, "
    "magnetic tiles 22.7 against 21.4. "
    "`python -m benchmarks.probes.search_blocks MODEL FOLDER --budgets 1024 16 8` (it stores the model's graph "
    "afresh at each budget), 3 alternated rounds, medians, Intel Xeon (AMX), 2 cores, 2026-12-07.\n\n"
    "AVX2 kernels, measured two ways (the subsections below). On an AMD EPYC without AVX-512 (2026-12-06) whole "
    "predict came to 0.64 / 0.52 of the raw forward (screws / magtiles), and its int8 backbone ran slower than ONNX "
    "Runtime's fp32 one (36.2 against 33.2 ms). `python -m benchmarks --avx2-only --topics speed` runs the topic on "
    "this machine with AVX-512, VNNI and AMX hidden from every process's CPUID and /proc/cpuinfo "
    "(`benchmarks/avx2_only.c`, through the kernel's CPUID faulting): ONNX Runtime, PyTorch and anomalycli choose the "
    "kernels an AVX2-only line PC gets and run them natively (the 64 camera screws' scores equal the native run's within "
    "3e-7). There whole predict is 1.45 / 1.33 of the raw forward and 92 % / 91 % of the core-time limit, and the "
    "int8 backbone 1.18x / 1.16x ONNX Runtime's fp32 (2026-12-08; the run before: 1.05 / 0.99, 94 % / 93 %, 1.26x): with AVX2 kernels on this Intel Xeon's cores the bars hold, so the "
    "EPYC's shortfall is that processor's (its int8 products), not AVX2's as such; which other AVX2 processors share "
    "it is not measured here."
)


def section(result: dict) -> str:
    runs = result["runs"]
    lines = [
        "Images: " + "; ".join(f"{r['data']}, {r.get('images', '1024 px upscaled copies')}" for r in runs) + f" ({runs[0]['n_predicted']} a run); "
        f"the default model of each set ({runs[0]['method']}, "
        f"{runs[0]['image_size']} px, {runs[0]['precision']} backbone); ms per image, images/s in brackets, median of the repeats. "
        "Stages alone run in one process; whole processes start cold (files in the page cache).",
        "",
        "| stage | " + " | ".join(r["data"] for r in runs) + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    for key, what in ROWS:
        if any(key in r for r in runs):
            lines.append(f"| {what} | " + " | ".join(f"{1000 * r[key]:.1f} ({1 / r[key]:.1f})" if key in r else "-" for r in runs) + " |")
    lines.append(
        "| fit on every image, whole `anomaly train`: default / `--precision fp32` / `--fast` / `--fast --precision fp32`, s | "
        + " | ".join(" / ".join(f"{r[f'fit_{name}']:.1f}" if f"fit_{name}" in r else "-" for name in FITS) for r in runs)
        + " |"
    )
    if any("one_image_default" in r for r in runs):
        names = [name for name in ONE_IMAGE if f"one_image_{name}" in runs[0]]
        what = {
            "default": "default model",
            "export": "its exported file",
            "baseline": "the baseline's default",
            "export_baseline": "the baseline's exported file",
        }
        lines.append(
            f"| whole `anomaly predict` process on one image, s (median of {ONE_IMAGE_REPEATS}): "
            + " / ".join(what[n] for n in names)
            + " | "
            + " | ".join(" / ".join(f"{r[f'one_image_{n}']:.2f}" for n in names) for r in runs)
            + " |"
        )
    lines.append(
        "| peak memory, whole process: fit / predict, MiB | " + " | ".join(f"{r['fit_default_rss']:.0f} / {r['predict_default_rss']:.0f}" for r in runs) + " |"
    )
    lines.append("| bank patches | " + " | ".join(f"{r['bank']:,}" for r in runs) + " |")
    lines += ["", "Ratios, same run:", ""]
    for r in runs:
        ratios = [
            f"default / fp32 model, whole process: **{r['process_fp32'] / r['process_default']:.2f}x**",
            f"default whole process / the raw PyTorch forward alone: **{r['backbone_torch'] / r['process_default']:.2f}**",
        ]
        if "core_limit" in r:
            ratios.append(f"default whole process / the core-time limit: **{r['core_limit'] / r['process_default']:.0%}**")
        if "process_default_cores_busy" in r:
            ratios.append(f"the default whole process's CPU time over its wall time x cores (cores busy): {r['process_default_cores_busy']:.0%}")
        if "process_default_jpeg" in r:
            ratios.append(
                f"JPEG (quality {JPEG_QUALITY}) / PNG, whole process: **{r['process_default'] / r['process_default_jpeg']:.2f}x**; its 0..1 scores moved "
                f"{r['jpeg_score_change_median']:.3f} (median), {r['jpeg_score_change_max']:.3f} at most; verdicts changed {r['jpeg_verdicts_changed']} of {r['jpeg_n']}"
            )
        if "process_baseline" in r:
            ratios.insert(0, f"default / revision {r['baseline']}'s default: **{r['process_baseline'] / r['process_default']:.2f}x**")
        if "process_fast_baseline" in r:
            ratios.insert(1, f"`--fast` / revision {r['baseline']}'s `--fast`: **{r['process_fast_baseline'] / r['process_fast']:.2f}x**")
        if "process_export_baseline" in r:
            ratios.insert(2, f"exported file / revision {r['baseline']}'s exported file: **{r['process_export_baseline'] / r['process_export']:.2f}x**")
        if "backbone_int8" in r:
            ratios.append(
                f"int8 backbone / ONNX Runtime fp32: {r['backbone_onnx_fp32'] / r['backbone_int8']:.2f}x; "
                f"search: int8 / float32 {r['search_float32'] / r['search_int8']:.2f}x"
                + (f", bfloat16 / float32 {r['search_float32'] / r['search_bfloat16']:.2f}x" if "search_bfloat16" in r else ", bfloat16 not native here")
                + " "
                f"(the default here: {r['search_default']})"
            )
        lines.append(f"- {r['data']}: " + "; ".join(ratios))
    return "\n".join(lines)
