"""Probe (a record, not a topic): a whole ``anomaly ARGS...`` process with this tree's code against
the same with the code of git revision REV, the two run in turn round after round (the ratio holds
while the machine's speed drifts); medians of wall and CPU seconds, and each one's peak memory.

Each code runs in a project folder of its own, so relative outputs (``runs/train-N``, ``--heatmaps
hm``) land apart; give paths to data as absolute ones, and ``--overwrite`` where a verb writes a file.

    python -m benchmarks.probes.against_revision REV [--rounds N] ARGS...
    python -m benchmarks.probes.against_revision 80c0e3b~1 train /abs/path/screws-1024
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, anomaly_command, interleaved_process_seconds, machine, worktree_of

ROUNDS = 3


def main(revision: str, args: list[str], rounds: int = ROUNDS) -> None:
    with tempfile.TemporaryDirectory(prefix="probe-revision-") as tmp:
        tmp = Path(tmp)
        with worktree_of(revision, tmp / "tree") as tree:
            commands = {}
            for name, code in (("this tree", REPO), (revision, tree)):
                project = tmp / f"project-{len(commands)}"
                project.mkdir()
                commands[name] = (anomaly_command(*args), project, {**os.environ, "PYTHONPATH": str(code)})
            measured = interleaved_process_seconds(commands, rounds)
    print(f"{machine()}; anomaly {' '.join(args)}, {rounds} rounds in turn:")
    for name, (seconds, peak, cpu) in measured.items():
        print(f"  {name}: {seconds:.1f} s wall (median), {cpu:.1f} s CPU, peak {peak:.0f} MiB")
    print(f"  {revision} / this tree: {measured[revision][0] / measured['this tree'][0]:.2f}x")


if __name__ == "__main__":
    argv = sys.argv[2:]
    rounds = ROUNDS
    if argv[:1] == ["--rounds"]:
        rounds, argv = int(argv[1]), argv[2:]
    main(sys.argv[1], argv, rounds)
