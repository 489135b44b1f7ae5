"""Which engine scores a model: the ``--engine`` names and what ``auto`` resolves to.

No PyTorch here: the verbs' options are built from these names, and ``anomaly predict`` starts
decoding its images before PyTorch is imported (``decoding.py``). Running a model on the
engine chosen is ``engines.py``.
"""

from __future__ import annotations

import importlib.util

from anomalycli.errors import UsageError

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
