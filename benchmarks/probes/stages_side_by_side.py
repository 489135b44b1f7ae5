"""Probe (a record, not a topic): what the stages of a whole predict cost side by side. The speed
topic's core-time limit adds decoding's and the scoring graph's CPU time, each measured alone;
whole predict runs them at once, one decoding process beside the scoring calls. On a CPU whose
cores share caches or memory bandwidth, each then costs more CPU an image than alone, and the
limit cannot be reached.

Rounds alternate: the scoring graph (loaded as predict loads it, two calls in flight) scores 64
decoded images alone, then again with a process decoding the images in a loop beside it; that
process's decoding CPU an image, and the same decoding alone. Medians over the rounds.

    python -m benchmarks.probes.stages_side_by_side MODEL FOLDER
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from anomalycli.data.decoding import decode
from anomalycli.data.images import list_source
from anomalycli.deploy import onnx_model

ROUNDS, IMAGES = 6, 64


def decoding_beside(paths: list[Path], size: int, stop, out) -> None:
    """Decode ``paths`` in a loop until ``stop``; put the CPU seconds an image."""
    n, start = 0, time.process_time()
    while not stop.is_set():
        decode(paths[n % len(paths)], size)
        n += 1
    out.put((time.process_time() - start) / max(n, 1))


def cpu_an_image(fn, n: int) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / n


def main(model: Path, folder: Path) -> None:
    graph = onnx_model.stored_in(model, onnx_model.CALLS_IN_FLIGHT)
    if graph is None:
        sys.exit(f"{model} carries no scoring graph (an int8 model file has one)")
    size = graph.config["image_size"]
    paths = list_source(folder)[0][:IMAGES]
    images = np.stack([decode(p, size)[0].transpose(2, 0, 1) for p in paths])
    graph.score(images[:4], with_maps=False)  # warm
    context = multiprocessing.get_context("fork")
    rounds: dict[str, list[float]] = {"scoring alone": [], "scoring beside decoding": [], "decoding alone": [], "decoding beside scoring": []}
    for _ in range(ROUNDS):
        rounds["scoring alone"].append(cpu_an_image(lambda: graph.score(images, with_maps=False), len(images)))
        rounds["decoding alone"].append(cpu_an_image(lambda: [decode(p, size) for p in paths[:16]], 16))
        stop, out = context.Event(), context.Queue()
        decoder = context.Process(target=decoding_beside, args=(paths, size, stop, out))
        decoder.start()
        time.sleep(0.3)  # the decoder running before the scoring starts
        rounds["scoring beside decoding"].append(cpu_an_image(lambda: graph.score(images, with_maps=False), len(images)))
        stop.set()
        rounds["decoding beside scoring"].append(out.get())
        decoder.join()
    median = {key: 1000 * statistics.median(values) for key, values in rounds.items()}
    for stage in ("scoring", "decoding"):
        alone, beside = median[f"{stage} alone"], median[f"{stage} beside {'decoding' if stage == 'scoring' else 'scoring'}"]
        print(f"{stage}: {alone:.1f} ms CPU an image alone, {beside:.1f} side by side ({beside / alone - 1:+.0%})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
