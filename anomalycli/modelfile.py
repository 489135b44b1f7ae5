"""One model file: safetensors tensors plus JSON metadata. Opening it never runs code from it.

Reading the metadata imports no PyTorch: ``anomaly predict`` reads the model's input size before
PyTorch has loaded, to start decoding its images.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError, safe_open

from anomalycli import __version__, project
from anomalycli.data.bit_depth import FLOAT_WINDOW_KEY, WINDOW_KEY
from anomalycli.errors import UserError
from anomalycli.files import atomic_path

# The newest format this anomalycli reads. 2: the file carries its scoring graph (GRAPH_TENSOR),
# which an anomalycli before it would refuse as a mismatched part. 3: its 16-bit images are read on
# a window on an offset, or its float ones on one window (data/bit_depth.py), which one before it
# would read from 0 or each on its own scale, judging every part on other grey levels. Each is written only where the file has what it names, so files
# without either stay at 1 (BASE_FORMAT_VERSION), which every version reads, as do exported files.
FORMAT_VERSION = 3
WINDOW_FORMAT_VERSION = 3
GRAPH_FORMAT_VERSION = 2
BASE_FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_META_KEY = "anomalycli"
# A model file may carry its exported scoring graph beside the network's tensors (export.stored_graph):
# the graph's bytes under this tensor name, and under this metadata key what it is checked by.
GRAPH_TENSOR = "scoring_graph"
GRAPH_KEY = "scoring_graph"

if TYPE_CHECKING:
    import torch


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict, overwrite: bool = True) -> Path:
    from safetensors.torch import save_file  # imports PyTorch (see the module's doc)

    meta = {**meta, "format_version": format_version(meta.get("config", {}), GRAPH_TENSOR in tensors), "package_version": __version__}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    return Path(path)


def read_meta(path: str | Path) -> dict:
    return _open(path, with_tensors=False)[1]


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    return _open(path, with_tensors=True)


def _open(path: str | Path, with_tensors: bool):
    path = project.model_file(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; pass the model.safetensors that train printed")
    not_a_model = f"{path} is not an anomalycli model file (or it is damaged)"
    try:
        with safe_open(str(path), framework="pt" if with_tensors else "numpy") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{not_a_model}: {reason}") from None
    if raw is None:
        raise UserError(f"{not_a_model}: it has no anomalycli metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise UserError(f"{not_a_model}: its metadata is not valid JSON") from None
    check_version(path, meta)
    return tensors, meta


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names and bytes, in name order: ``file_digest`` of the file they are
    saved to. Their bytes are read through numpy, so this module never imports PyTorch itself."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name].detach().cpu().numpy()).reshape(-1).view(np.uint8))
    return h.hexdigest()


def carried_graph_holds(check, network_digest: str, graph: bytes) -> bool:
    """Whether the scoring graph a file carries (``check``: its GRAPH_KEY metadata) was exported
    from the network whose tensors give ``network_digest`` (``digest``, ``file_digest``) and is intact."""
    return isinstance(check, dict) and check.get("digest") == network_digest and check.get("graph_digest") == graph_digest(graph)


def graph_digest(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


def raw_tensors(path: str | Path) -> dict[str, tuple[str, list[int], memoryview]]:
    """name -> (dtype, shape, bytes) of every tensor in a model file, read without PyTorch (the
    safetensors layout: an 8-byte header length, the JSON header, then the tensors' bytes)."""
    blob = memoryview(Path(path).read_bytes())
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(bytes(blob[8 : 8 + length]))
    data = blob[8 + length :]
    return {
        name: (entry["dtype"], entry["shape"], data[entry["data_offsets"][0] : entry["data_offsets"][1]])
        for name, entry in header.items()
        if name != "__metadata__"
    }


def file_digest(raw: dict[str, tuple[str, list[int], memoryview]], skip: str = GRAPH_TENSOR) -> str:
    """``digest`` of the tensors in ``raw_tensors``' result, but ``skip``."""
    h = hashlib.sha256()
    for name in sorted(raw):
        if name != skip:
            h.update(name.encode())
            h.update(raw[name][2])
    return h.hexdigest()


def format_version(config: dict, with_graph: bool) -> int:
    """The oldest format that holds a model of ``config`` (and its scoring graph, ``with_graph``)."""
    if WINDOW_KEY in config or FLOAT_WINDOW_KEY in config:
        return WINDOW_FORMAT_VERSION
    return GRAPH_FORMAT_VERSION if with_graph else BASE_FORMAT_VERSION


def check_version(path: Path, meta: dict) -> None:
    """Refuse metadata of a format newer than this anomalycli reads (model files and ONNX exports alike)."""
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path} has model format version {version}, newer than this anomalycli reads ({FORMAT_VERSION}); upgrade anomalycli (pip install -U anomalycli)"
        )
