"""Where a model scores images: PyTorch, or ONNX Runtime running the exported graph.

On a CPU, ONNX Runtime runs the same graph faster than PyTorch (1.2x for the default patchcore
from 1024 px PNGs, where the bank search costs the same on both; 2.4x at 64 px; BENCHMARKS.md), so
``auto`` picks it when it is installed and there are enough images to pay for exporting the model
in memory (under a second, plus tracing's warm-up); an exported ``.onnx`` file runs as it is.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalycli import export, modelfile, project
from anomalycli.errors import UsageError, UserError
from anomalycli.methods import AnomalyModel
from anomalycli.calibration import Calibration

ENGINES = ("auto", "torch", "onnx")
ONNX_SUFFIX = ".onnx"
# Images per ONNX Runtime call: the exported search holds one (patches x bank) distance block per
# call, about 33 MB an image at 320 px, so a few images at a time keep memory flat.
ONNX_BATCH = 8
# Exporting in memory takes about 2 s, which ONNX Runtime wins back after about this many images.
AUTO_ONNX_MIN_IMAGES = 64


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_engine(engine: str) -> str:
    """``torch`` or ``onnx`` for the ``--engine`` the user gave (``auto``: ONNX Runtime when installed).

    predict and eval load models on the CPU, where ONNX Runtime's CPU provider is the faster one.
    """
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)} (got {engine})")
    if engine == "onnx" and not onnxruntime_installed():
        raise UsageError(f"--engine onnx needs ONNX Runtime, which is not installed; run: {export.INSTALL_HINT} (or use --engine torch)")
    if engine == "auto":
        return "onnx" if onnxruntime_installed() else "torch"
    return engine


@dataclass
class OnnxModel:
    """An exported scoring graph behind ``AnomalyModel``'s interface (method, config, calibration, score)."""

    method: str
    config: dict
    calibration: Calibration
    session: object = field(repr=False)  # onnxruntime.InferenceSession

    @property
    def has_maps(self) -> bool:
        return export.ANOMALY_MAP in {o.name for o in self.session.get_outputs()}

    def score(self, images: torch.Tensor, with_maps: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 N x 3 x S x S -> raw scores [N] and maps [N, S, S] (or None), as ``AnomalyModel.score``."""
        wanted = [export.RAW_SCORE, export.ANOMALY_MAP] if with_maps and self.has_maps else [export.RAW_SCORE]
        pixels = images.cpu().numpy()
        runs = [self.session.run(wanted, {export.INPUT: pixels[i : i + ONNX_BATCH]}) for i in range(0, len(pixels), ONNX_BATCH)]
        raw = torch.from_numpy(np.concatenate([r[0] for r in runs]))
        maps = torch.from_numpy(np.concatenate([r[1] for r in runs])) if len(wanted) > 1 else None
        return raw, maps

    @classmethod
    def from_model(cls, model: AnomalyModel, with_maps: bool = True) -> "OnnxModel":
        """``model`` exported in memory; without maps the graph skips them (predict without --heatmaps)."""
        return cls(model.method, model.config, model.calibration, _session(export.onnx_bytes(model, with_maps)))

    @classmethod
    def load(cls, path: str | Path) -> "OnnxModel":
        """An exported file. Opening it runs no Python code from it: ONNX Runtime reads the graph only."""
        path = Path(path)
        not_a_model = f"{path} is not an anomalycli model file (or it is damaged)"
        if not path.is_file():
            raise UserError(f"model file {path} does not exist; pass the .onnx file that anomaly export wrote")
        try:
            session = _session(str(path))
        except UserError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf
            raise UserError(f"{not_a_model}: {str(exc).splitlines()[0][:160] or type(exc).__name__}") from None
        raw = session.get_modelmeta().custom_metadata_map.get(export.META_KEY)
        if raw is None:
            raise UserError(f"{not_a_model}: it has no anomalycli metadata")
        try:
            meta = json.loads(raw)
            modelfile.check_version(path, meta)
            return cls(meta["method"], meta["config"], Calibration(**meta["calibration"]), session)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{not_a_model}: its metadata is incomplete") from None


def _session(model: bytes | str):
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"an .onnx model runs on ONNX Runtime, which is not installed; run: {export.INSTALL_HINT}") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_model(path: str | Path, engine: str = "auto") -> AnomalyModel | OnnxModel:
    """The model at ``path``: a model file or run folder (on PyTorch until ``on_engine``), or an exported ``.onnx``."""
    resolve_engine(engine)  # the option's mistakes first, whatever the file
    path = project.model_file(path)
    if path.suffix.lower() == ONNX_SUFFIX:
        if engine == "torch":
            raise UsageError(f"{path.name} is an exported ONNX model, which runs on ONNX Runtime only; drop --engine torch or pass the .safetensors model")
        return OnnxModel.load(path)
    return AnomalyModel.load(path)


def on_engine(model: AnomalyModel | OnnxModel, engine: str, n_images: int, with_maps: bool = True) -> AnomalyModel | OnnxModel:
    """``model`` where ``engine`` says it runs for ``n_images`` images.

    ``auto`` keeps PyTorch for fewer than ``AUTO_ONNX_MIN_IMAGES``: exporting costs more than
    ONNX Runtime would save on them.
    """
    if isinstance(model, OnnxModel):
        return model
    chosen = resolve_engine(engine)
    if chosen == "onnx" and (engine == "onnx" or n_images >= AUTO_ONNX_MIN_IMAGES):
        return OnnxModel.from_model(model, with_maps)
    return model
