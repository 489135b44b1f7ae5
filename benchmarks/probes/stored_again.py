"""Probe (a record, not a topic): a model file as it is against the same model stored again by this
tree (``deploy.export.save_model``, which writes the scoring graph afresh), for a change to what the
graph computes: whole ``anomaly predict`` processes of both files over FOLDER, run in turn round after
round (medians of wall and CPU seconds, each one's peak memory), the columns of their rows that differ,
and each file's graph called on one image at a time, as watch, serve and the station call it.

    python -m benchmarks.probes.stored_again MODEL FOLDER [--rounds N]
    python -m benchmarks.probes.stored_again runs/train-1 /abs/path/screws-1024/good
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from anomalycli.deploy.export import save_model
from anomalycli.detection.methods import AnomalyModel
from anomalycli.project import model_file
from benchmarks.common import anomaly_command, csv_rows, interleaved_process_seconds, machine
from benchmarks.probes.search_blocks import one_image_ms

ROUNDS = 3


def main(model_path: str, folder: str, rounds: int) -> None:
    original = model_file(model_path)
    with tempfile.TemporaryDirectory(prefix="probe-stored-") as tmp:
        tmp = Path(tmp)
        files = {"as it is": original, "stored again": tmp / "again.safetensors"}
        save_model(AnomalyModel.load(original), files["stored again"])
        rows = {name: tmp / f"{index}.csv" for index, name in enumerate(files)}
        commands = {
            name: (anomaly_command("predict", str(path), str(Path(folder).resolve()), "--output", str(rows[name]), "--overwrite"), tmp, None)
            for name, path in files.items()
        }
        measured = interleaved_process_seconds(commands, rounds)
        one_image = one_image_ms(files, folder)
        before, after = ({row["path"]: row for row in csv_rows(rows[name])} for name in files)
    differing = sorted({column for path, row in before.items() for column, value in row.items() if after[path][column] != value})
    print(f"{machine()}; {model_path}, predict {folder} ({len(before)} images), {rounds} rounds in turn:")
    for name, (seconds, peak, cpu) in measured.items():
        print(f"  {name}: {seconds:.2f} s wall (median), {cpu:.1f} s CPU, peak {peak:.0f} MiB; one image a call {one_image[name]:.1f} ms")
    print(f"  as it is / stored again: {measured['as it is'][0] / measured['stored again'][0]:.2f}x; columns that differ: {', '.join(differing) or 'none'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    main(args.model, args.folder, args.rounds)
