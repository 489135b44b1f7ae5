"""Benchmarks as an AVX2-only CPU runs them, on a machine with AVX-512, VNNI or AMX.

``python -m benchmarks --avx2-only --topics speed`` runs again under ``avx2_only.c`` (built here
with the system's C compiler): every process of the run sees a CPU without AVX-512, VNNI or AMX,
and ONNX Runtime, PyTorch and anomalycli choose and run the kernels such a line PC gets, natively.
Its timings are AVX2 kernels on this machine's cores, not another CPU's: its results are kept
as a CPU class of their own (``CPU_CLASS_NOTE``), beside a real AVX2 machine's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("avx2_only.c")
CPU_CLASS_NOTE = "AVX-512, VNNI and AMX hidden from CPUID"


REFUSED = "AVX2_ONLY_REFUSED"  # set by the library where the kernel refused it CPUID faulting


def active() -> bool:
    """Whether this process runs under the library and its CPUID hides those instruction sets."""
    loaded = any(Path(entry).name.startswith("avx2_only") for entry in os.environ.get("LD_PRELOAD", "").split())
    return loaded and REFUSED not in os.environ


def refused() -> str | None:
    """Why the library, loaded, could not hide them (the kernel's error); None where it did or is not loaded."""
    return os.environ.get(REFUSED)


def problem() -> str | None:
    """Why this machine cannot run it, in one line (None where it can)."""
    if sys.platform != "linux":
        return "--avx2-only needs Linux (CPUID faulting)"
    if "cpuid_fault" not in Path("/proc/cpuinfo").read_text():
        return "--avx2-only needs a CPU and kernel with CPUID faulting (cpuid_fault in /proc/cpuinfo)"
    if shutil.which("cc") is None:
        return "--avx2-only builds benchmarks/avx2_only.c: install a C compiler (cc)"
    return None


def library() -> Path:
    """The built library, kept per source version in the temporary folder."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    built = Path(tempfile.gettempdir()) / f"avx2_only-{digest}.so"
    if not built.exists():
        partial = built.with_suffix(f".{os.getpid()}.part")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE), "-ldl"], check=True)
        partial.replace(built)
    return built


def run_hidden(argv: list[str]) -> None:
    """Run ``python -m benchmarks ARGV`` again in this process, under the library (never returns)."""
    env = dict(os.environ, LD_PRELOAD=" ".join(filter(None, [str(library()), os.environ.get("LD_PRELOAD", "")])))
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *argv], env)
