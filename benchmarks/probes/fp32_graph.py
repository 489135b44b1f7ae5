"""Probe (a record, not a topic): an fp32 model's whole predict on the scoring graph its file now
carries, against the code of git revision REV (PyTorch imported, the graph exported in memory from
64 images), with the int8 model's predict beside them; on a folder and on one image, the three run
in turn round after round: medians of wall and CPU seconds, and each one's peak memory.

    python -m benchmarks.probes.fp32_graph REV FP32_MODEL INT8_MODEL FOLDER ONE_IMAGE_FOLDER [ROUNDS]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, anomaly_command, interleaved_process_seconds, machine, worktree_of


def main(revision: str, fp32_model: str, int8_model: str, folder: str, one: str, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="probe-fp32-graph-") as tmp:
        tmp = Path(tmp)
        with worktree_of(revision, tmp / "tree") as tree:
            for what, images in (("the folder", folder), ("one image", one)):
                commands = {}
                for name, code, model in (
                    ("fp32, this tree", REPO, fp32_model),
                    (f"fp32, {revision}", tree, fp32_model),
                    ("int8, this tree", REPO, int8_model),
                ):
                    project = tmp / f"project-{what[:3]}-{len(commands)}"
                    project.mkdir()
                    command = anomaly_command("predict", model, images, "--output", str(project / "rows.csv"), "--overwrite")
                    commands[name] = (command, project, {**os.environ, "PYTHONPATH": str(code)})
                measured = interleaved_process_seconds(commands, rounds)
                print(f"{machine()}; {what}, {rounds} rounds in turn:")
                for name, (seconds, peak, cpu) in measured.items():
                    print(f"  {name}: {seconds:.2f} s wall (median), {cpu:.2f} s CPU, peak {peak:.0f} MiB", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6], int(sys.argv[6]) if len(sys.argv) > 6 else 5)
