"""Where a model scores images: PyTorch, or ONNX Runtime running the exported graph.

A model fitted with an int8 backbone (``quantize.py``, the default on a CPU) runs that backbone
on ONNX Runtime and the rest on PyTorch, except the bank search's products, which are int8 on
ONNX Runtime too where the CPU has VNNI (``coreset.BankIndex``): the backbone 1.6-1.7x as fast as
in fp32 on ONNX Runtime, and the scores its threshold was chosen on (BENCHMARKS.md). ``onnx`` runs
the whole graph ``anomaly export`` writes (int8 backbone and search included) in ONNX Runtime;
``onnx-fp32`` and ``torch`` run the fp32 backbone.

A model with an fp32 backbone (older files, ``--precision fp32``, fitted on a GPU) runs, under
``auto``, on ONNX Runtime, 1.2x PyTorch's speed from 1024 px PNGs (measured 2026-11-29, Engines in
`git show cf0a644:BENCHMARKS.md`), when there are enough images to pay for exporting the model in
memory (under a second, plus tracing's warm-up);
an exported ``.onnx`` file runs as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalycli import engine_choice, export, modelfile, project, quantize
from anomalycli.errors import UsageError, UserError
from anomalycli.methods import AnomalyModel
from anomalycli.calibration import Calibration

ONNX_SUFFIX = ".onnx"
# Images per ONNX Runtime call: the exported search holds one (patches x bank) distance block per
# call, about 33 MB an image at 320 px, so a few images at a time keep memory flat.
ONNX_BATCH = 8
# An int8 file's probe image scored on another machine: within this share of the calibration's
# score range of the export machine's score (the same kernels give the same score to the bit).
PROBE_SCORE_TOL = 0.01


@dataclass
class OnnxModel:
    """An exported scoring graph behind ``AnomalyModel``'s interface (method, config, calibration, score)."""

    method: str
    config: dict
    calibration: Calibration
    session: object = field(repr=False)  # onnxruntime.InferenceSession
    probe: dict | None = field(default=None, repr=False)  # an int8 file's (export._probe)

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

    def probe_mismatch(self) -> float:
        """How far this machine's raw score of an int8 file's probe image lies from the export
        machine's, as a share of the calibration's score range (0.0 for a file without a probe)."""
        if not self.probe:
            return 0.0
        try:
            image, expected = export.probe_image(self.probe), float(self.probe["raw_score"])
        except (KeyError, TypeError, ValueError):
            raise UserError("the .onnx file's probe is damaged; export the model again") from None
        raw, _ = self.score(image.unsqueeze(0), with_maps=False)
        spread = max(self.calibration.high - self.calibration.low, 1e-12)
        return abs(float(raw[0]) - expected) / spread

    def probe_note(self) -> str:
        """One line where this CPU scores the file's probe image differently from the export machine ("" where it agrees)."""
        mismatch = self.probe_mismatch()
        if mismatch <= PROBE_SCORE_TOL:
            return ""
        return (f"this CPU's int8 kernels score the file's probe image {mismatch:.1%} of the score range away from the machine that exported it, "
                "so its verdicts may differ too; for this PC, export the model with anomaly export --fp32")

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
            probe = session.get_modelmeta().custom_metadata_map.get(export.PROBE_KEY)
            return cls(meta["method"], meta["config"], Calibration(**meta["calibration"]), session, json.loads(probe) if probe else None)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{not_a_model}: its metadata is incomplete") from None


def _session(model: bytes | str):
    if not engine_choice.onnxruntime_installed():
        raise UserError(f"an .onnx model runs on ONNX Runtime, which is not installed; run: {engine_choice.ONNX_INSTALL_HINT}")
    return quantize.session(model, spinning=True)  # the whole graph runs in it: nothing else needs the cores


def load_model(path: str | Path, engine: str = "auto") -> AnomalyModel | OnnxModel:
    """The model at ``path``: a model file or run folder (on PyTorch until ``on_engine``), or an exported ``.onnx``."""
    engine_choice.resolve_engine(engine)  # the option's mistakes first, whatever the file
    path = project.model_file(path)
    if path.suffix.lower() == ONNX_SUFFIX:
        if engine == "torch":
            raise UsageError(f"{path.name} is an exported ONNX model, which runs on ONNX Runtime only; drop --engine torch or pass the .safetensors model")
        return OnnxModel.load(path)
    return AnomalyModel.load(path)


def on_engine(model: AnomalyModel | OnnxModel, engine: str, n_images: int, with_maps: bool = True) -> tuple[AnomalyModel | OnnxModel, str]:
    """``model`` where ``engine`` says it runs for ``n_images`` images, and one line for the user
    where that is not the fast path the model was fitted for (else "").

    An int8 model first checks, on its probe image, that this CPU's int8 kernels give the
    features they gave at training; if not, it runs its fp32 backbone. ``auto`` keeps PyTorch for
    fp32 models under ``engine_choice.AUTO_ONNX_MIN_IMAGES`` images: exporting costs more than ONNX Runtime saves.
    """
    if isinstance(model, OnnxModel):
        return model, model.probe_note()
    chosen = engine_choice.resolve_engine(engine)
    int8 = quantize.int8_of(model.net)
    if int8 is None:
        note = fp32_note(model) if engine == "auto" else ""
    elif chosen in ("torch", "onnx-fp32"):
        int8.active = False
        note = f"--engine {engine} runs this model's fp32 backbone; its threshold was chosen on its int8 backbone's scores, which may differ slightly"
    else:
        mismatch = int8.probe_mismatch()
        if mismatch <= quantize.PROBE_RTOL:
            return (OnnxModel.from_model(model, with_maps) if engine == "onnx" else model), ""
        int8.active = False
        note = (f"int8 kernels on this CPU give features up to {mismatch:.1%} away from training's on the model's probe image, so "
                "predict runs the fp32 backbone (about half the speed; scores may differ slightly from calibration)")
    if chosen != "torch" and (engine != "auto" or n_images >= engine_choice.AUTO_ONNX_MIN_IMAGES):
        return OnnxModel.from_model(model, with_maps), note
    return model, note


def fp32_note(model: AnomalyModel) -> str:
    """Why a patchcore or hybrid model runs its fp32 backbone, and how to get the int8 one ("" for the classifier)."""
    if model.method == "classifier":
        return ""
    why = model.config.get("precision_note", "the model file is from before int8 backbones")
    return f"this model runs its fp32 backbone ({why}); trained on a CPU with --precision auto (the default) it gets an int8 backbone and predicts about 1.5x as fast"


def describe(model: AnomalyModel | OnnxModel) -> str:
    """Where ``model`` scores, in words (eval's report)."""
    if isinstance(model, OnnxModel):
        return "ONNX Runtime"
    return "PyTorch, int8 backbone on ONNX Runtime" if quantize.int8_in_use(model.net) is not None else "PyTorch"
