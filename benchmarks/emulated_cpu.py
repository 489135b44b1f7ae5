"""Features of an ONNX graph as another CPU's kernels compute them, under QEMU's user-mode emulator.

``python -m benchmarks.emulated_cpu GRAPH INPUTS.npy OUT.npz`` runs GRAPH on ONNX Runtime (numpy
only: no PyTorch, which would take minutes to import under emulation). Run under
``qemu-x86_64 -cpu Haswell``, ONNX Runtime sees an AVX2 CPU without AVX-512 or VNNI and picks
the kernels such a line PC runs (QEMU 7.2 emulates AVX2, not AVX-512): the precision topic's
"Precision on any CPU" table, where this machine has VNNI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

EMULATOR, EMULATED_CPU = "qemu-x86_64", "Haswell"


def available() -> bool:
    return shutil.which(EMULATOR) is not None


def features(graph: Path, inputs: Path, out: Path, emulated: bool) -> list[np.ndarray]:
    """GRAPH's outputs on INPUTS, here or on the emulated CPU (in a process of its own either way)."""
    command = [sys.executable, "-m", "benchmarks.emulated_cpu", str(graph), str(inputs), str(out)]
    if emulated:
        command = [EMULATOR, "-cpu", EMULATED_CPU, *command]
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    with np.load(out) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def here_and_there(graph: bytes, inputs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ONNX ``graph``'s outputs on ``inputs`` on this CPU and on the emulated one."""
    with tempfile.TemporaryDirectory(prefix="emulated-cpu-") as tmp:
        graph_path, inputs_path = Path(tmp) / "graph.onnx", Path(tmp) / "inputs.npy"
        graph_path.write_bytes(graph)
        np.save(inputs_path, inputs)
        here = features(graph_path, inputs_path, Path(tmp) / "here.npz", emulated=False)
        return here, features(graph_path, inputs_path, Path(tmp) / "there.npz", emulated=True)


def main(graph: str, inputs: str, out: str) -> None:
    from anomalycli.onnx_runtime import session

    model = session(graph)
    np.savez(out, *model.run(None, {model.get_inputs()[0].name: np.load(inputs)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
