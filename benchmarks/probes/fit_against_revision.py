"""Probe (a record, not a topic): a whole ``anomaly train DATA`` with this tree's code against the
code of git revision REV, the two processes run in turn round after round (the ratio holds while
the machine's speed drifts); medians of wall and CPU seconds, and each run's peak memory.

    python -m benchmarks.probes.fit_against_revision REV DATA [ROUNDS]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, anomaly_command, interleaved_process_seconds, machine
from benchmarks.speed import worktree_of

ROUNDS = 3


def main(revision: str, data: Path, rounds: int = ROUNDS) -> None:
    with tempfile.TemporaryDirectory(prefix="probe-fit-") as tmp:
        tmp = Path(tmp)
        with worktree_of(revision, tmp / "tree") as tree:
            # Each code in a project folder of its own: every round's run is a new runs/train-N there.
            commands = {}
            for name, code in (("this tree", REPO), (revision, tree)):
                project = tmp / f"project-{len(commands)}"
                project.mkdir()
                commands[name] = (anomaly_command("train", str(data.resolve())), project, {**os.environ, "PYTHONPATH": str(code)})
            measured = interleaved_process_seconds(commands, rounds)
    print(f"{machine()}; anomaly train {data}, {rounds} rounds in turn:")
    for name, (seconds, peak, cpu) in measured.items():
        print(f"  {name}: {seconds:.1f} s wall (median), {cpu:.1f} s CPU, peak {peak:.0f} MiB")
    now, then = measured["this tree"][0], measured[revision][0]
    print(f"  {revision} / this tree: {then / now:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else ROUNDS)
