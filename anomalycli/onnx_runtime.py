"""ONNX Runtime sessions on the CPU, for the int8 backbone (``detection``) and whole scoring graphs
(``deploy``): one place sets how they run. No PyTorch here; ONNX Runtime is imported when a
session is made.
"""

from __future__ import annotations

# How a graph's quantised layers run: ONNX Runtime's int8 kernels (fused QDQ, the fast path), or
# the same quantised network computed in float32 (``session.disable_quant_qdq``): every
# QuantizeLinear still rounds to the graph's int8 levels, so the features are those of the int8
# network on any CPU, without depending on its int8 instructions ("Precision on any CPU" in
# BENCHMARKS.md: within a rounding step of the int8 kernels' features; a screws model's whole
# graph 49 against 36 ms an image on an AVX-512 VNNI CPU).
INT8_KERNELS, REFERENCE_KERNELS = "int8", "reference"


def session(model: bytes | str, kernels: str = INT8_KERNELS):
    """An ONNX Runtime session on the CPU whose threads sleep between calls (spinning, they took the
    cores from PyTorch's bank search and the decoding worker: whole predict 14-16 % slower with an
    int8 backbone), its quantised layers run on ``kernels`` (``INT8_KERNELS`` or ``REFERENCE_KERNELS``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if kernels == REFERENCE_KERNELS:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
