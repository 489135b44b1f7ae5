"""Which engine scores a model: the ``--engine`` names and what ``auto`` resolves to.

No PyTorch here: the verbs' options are built from these names, and ``anomaly predict`` starts
decoding its images before PyTorch is imported (``decoding.py``). Running a model on the
engine chosen is ``engines.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import platform

from anomalycli.errors import UsageError
from anomalycli.onnx_runtime import DISAGREED, INT8_DOT_PRODUCTS

ENGINES = ("auto", "torch", "onnx", "onnx-fp32")
# Exporting in memory takes about 2 s, which ONNX Runtime wins back after about this many images.
AUTO_ONNX_MIN_IMAGES = 64
ONNX_INSTALL_HINT = "pip install 'anomalycli[onnx]'"


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_engine(engine: str) -> str:
    """``torch``, ``onnx`` or ``onnx-fp32`` for the ``--engine`` the user gave (``auto``: ``onnx`` when installed).

    predict and eval load models on the CPU, where ONNX Runtime's CPU provider is the faster one.
    """
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)} (got {engine})")
    if engine.startswith("onnx") and not onnxruntime_installed():
        raise UsageError(f"--engine {engine} needs ONNX Runtime, which is not installed; run: {ONNX_INSTALL_HINT} (or use --engine torch)")
    if engine == "auto":
        return "onnx" if onnxruntime_installed() else "torch"
    return engine


def fp32_note(method: str, config: dict) -> str:
    """Why a patchcore or hybrid model (its ``method`` and ``config``) runs its fp32 backbone, and
    what would make it faster ("" for the classifier and an int8 model)."""
    if method == "classifier" or config.get("precision") == "int8":
        return ""
    why = config.get("precision_note", "the model file is from before int8 backbones")
    if why.startswith(DISAGREED):
        return f"this model runs its fp32 backbone ({why}); --fast would predict about twice as fast at some cost in accuracy"
    return f"this model runs its fp32 backbone ({why}); trained on a CPU with --precision auto (the default) it gets an int8 backbone and predicts about a third faster"


@functools.cache
def cpu_class() -> str:
    """This CPU's architecture and the instruction sets that choose ONNX Runtime's int8 kernels, in
    words (predict's first line and every timing in BENCHMARKS.md name it)."""
    return int8_class(platform.machine().lower(), cpu_flags())


def cpu_flags() -> list[str]:
    """This CPU's feature flags as /proc/cpuinfo names them; none where it has none (not Linux, not x86)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return []


def int8_class(machine: str, flags: list[str]) -> str:
    """``machine`` and the best of its int8 instruction sets among ``flags`` (/proc/cpuinfo's): int8
    dot products (AMX, AVX-512 VNNI, AVX-VNNI), else AVX-512 or AVX2, whose int8 kernels add pairs
    of products in 16 bits."""
    if not flags:
        return machine or "unknown CPU"
    without_dot_products = (("avx512bw", "AVX-512, no VNNI"), ("avx2", "AVX2, no VNNI"))
    best = next((name for flag, name in (*INT8_DOT_PRODUCTS, *without_dot_products) if flag in flags), "no AVX2")
    return f"{machine}, {best}"
