"""ONNX Runtime sessions on the CPU, for the int8 backbone (``detection``) and whole scoring graphs
(``deploy``): one place sets how they run. No PyTorch here; ONNX Runtime is imported when a
session is made.
"""

from __future__ import annotations

import threading

# How a graph's quantised layers run: ONNX Runtime's int8 kernels (fused QDQ, the fast path), or
# the same quantised network computed in float32 (``session.disable_quant_qdq``): every
# QuantizeLinear still rounds to the graph's int8 levels, so the features are those of the int8
# network on any CPU, without depending on its int8 instructions ("Precision on any CPU" in
# BENCHMARKS.md: within a rounding step of the int8 kernels' features; a screws model's whole
# graph 49 against 36 ms an image on an AVX-512 VNNI CPU).
INT8_KERNELS, REFERENCE_KERNELS = "int8", "reference"
# The CPU features (as /proc/cpuinfo and ``torch.cpu.get_capabilities`` name them), best first, for
# which ONNX Runtime multiplies uint8 by int8 with dot-product instructions: its kernel library
# (MLAS, ``platform.cpp``) picks its AMX, AVX-512 VNNI or AVX-VNNI kernels by them. Without them its
# AVX2 and AVX-512 kernels add pairs of products in 16 bits, at about the float32 rate (BENCHMARKS.md, Speed).
INT8_DOT_PRODUCTS = (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"))
# How a model's config begins its precision note where training kept the fp32 backbone because the
# int8 graph's features disagreed (``detection.int8_backbone``); ``deploy`` reads it to say what
# would make such a model faster.
DISAGREED = "the int8 backbone's features disagreed with fp32 ones"


def has_int8_dot_products(features) -> bool:
    """Whether a CPU with ``features`` (the names of its CPU features) gets ONNX Runtime's int8 dot-product kernels."""
    return any(flag in features for flag, _ in INT8_DOT_PRODUCTS)


def session(model: bytes | str, kernels: str = INT8_KERNELS, threads: int = 0):
    """An ONNX Runtime session on the CPU whose threads sleep between calls (spinning, they took the
    cores from PyTorch's bank search and the decoding worker: whole predict 14-16 % slower with an
    int8 backbone), its quantised layers run on ``kernels`` (``INT8_KERNELS`` or ``REFERENCE_KERNELS``),
    each call on ``threads`` threads (0: ONNX Runtime's choice, one a core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.use_env_allocators", "1")
    _share_one_arena(onnxruntime)
    if kernels == REFERENCE_KERNELS:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _share_one_arena(onnxruntime) -> None:
    """Register, once a process, the CPU arena every session here allocates from. Each session
    kept an arena of its own as large as its largest call: a second session of the same graph
    (two calls in flight) added 160 MB, a shared one 68 MB; five screws models judging in turn (a
    station's recipes) held 676 MB, sharing one 283 MB (README, "How fast and how safe")."""
    global _arena_shared
    with _arena_lock:  # a station loads its recipes' models in threads
        if not _arena_shared:
            memory = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT)
            onnxruntime.create_and_register_allocator(memory, onnxruntime.OrtArenaCfg(0, -1, -1, -1))
            _arena_shared = True


# ONNX Runtime's environment is one a process: so is its registered arena.
_arena_shared, _arena_lock = False, threading.Lock()
