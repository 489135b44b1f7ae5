"""Probe (a record, not a topic): a model's scoring graph stored afresh with its bank search in blocks
of each budget (``bank_search.EXPORT_PRODUCTS_BYTES``, MB), then whole ``anomaly predict`` processes
of each file over FOLDER, run in turn round after round: medians of wall and CPU seconds, each one's
peak memory, and how far its scores lie from the first budget's; then each file's graph called on one
image at a time, as watch, serve and the station call it (ms a call, the files in turn, medians).

    python -m benchmarks.probes.search_blocks MODEL FOLDER [--rounds N] [--budgets MB ...]
    python -m benchmarks.probes.search_blocks runs/train-1 /abs/path/screws-1024/good --budgets 1024 16 8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from anomalycli.deploy.export import save_model
from anomalycli.detection import bank_search
from anomalycli.detection.methods import AnomalyModel
from anomalycli.project import model_file
from benchmarks.common import anomaly_command, csv_rows, interleaved_process_seconds, machine

ROUNDS, BUDGETS_MB = 3, (1024, 16)


def stored_with_blocks(model: AnomalyModel, path: Path, budget_mb: float) -> int:
    """``model`` (an int8 one, whose file carries a graph) saved to ``path`` with its graph's search
    blocked by ``budget_mb``; the number of blocks (the int8 products in the graph)."""
    shipped = bank_search.EXPORT_PRODUCTS_BYTES
    bank_search.EXPORT_PRODUCTS_BYTES = int(budget_mb * 2**20)
    try:
        save_model(model, path)
    finally:
        bank_search.EXPORT_PRODUCTS_BYTES = shipped
    import onnx

    from anomalycli import modelfile

    tensors, _ = modelfile.load(path)
    graph = onnx.load_from_string(tensors[modelfile.GRAPH_TENSOR].numpy().tobytes())
    return sum(node.op_type == "DynamicQuantizeMatMul" for node in graph.graph.node)


def main(model_path: str, folder: str, rounds: int, budgets: list[float]) -> None:
    model = AnomalyModel.load(model_file(model_path))
    with tempfile.TemporaryDirectory(prefix="probe-blocks-") as tmp:
        tmp = Path(tmp)
        commands, blocks, model_files, rows = {}, {}, {}, {}
        for budget in budgets:
            name = f"{budget:g} MB"
            model_files[name], rows[name] = tmp / f"{budget:g}.safetensors", tmp / f"{budget:g}.csv"
            blocks[name] = stored_with_blocks(model, model_files[name], budget)
            predict = anomaly_command("predict", str(model_files[name]), str(Path(folder).resolve()), "--output", str(rows[name]), "--overwrite")
            commands[name] = (predict, tmp, None)
        measured = interleaved_process_seconds(commands, rounds)
        one_image = one_image_ms(model_files, folder)
        scores = {name: {row["path"]: float(row["score"]) for row in csv_rows(rows[name])} for name in commands}
    first = next(iter(scores.values()))
    print(f"{machine()}; {model_path} ({model.config['image_size']} px, bank {model.config.get('bank_size')}), predict {folder}, {rounds} rounds in turn:")
    for name, (seconds, peak, cpu) in measured.items():
        moved = max(abs(scores[name][p] - s) for p, s in first.items())
        print(
            f"  {name} (an image's positions in {blocks[name]} blocks): {seconds:.2f} s wall (median), {cpu:.1f} s CPU, peak {peak:.0f} MiB; "
            f"scores moved {moved:.1e} at most; one image a call {one_image[name]:.1f} ms"
        )


def one_image_ms(files: dict[str, Path], folder: str, images: int = 40, rounds: int = 5) -> dict[str, float]:
    """ms a call of each file's stored graph on one image a call, over ``images`` of ``folder``, the files in turn."""
    import statistics
    import time

    from anomalycli.data.images import list_images, read_image_array
    from anomalycli.deploy.onnx_model import stored_in

    models = {name: stored_in(path) for name, path in files.items()}
    size = next(iter(models.values())).config["image_size"]
    pixels = [read_image_array(p, size).transpose(2, 0, 1)[None].copy() for p in list_images(folder)[0][:images]]
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.score(pixels[0])  # warm
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for image in pixels:
                model.score(image)
            times[name].append(1000 * (time.perf_counter() - start) / len(pixels))
    return {name: statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS_MB))
    args = parser.parse_args()
    main(args.model, args.folder, args.rounds, args.budgets)
