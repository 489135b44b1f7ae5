"""Where a model scores images: PyTorch, or ONNX Runtime running the exported graph.

A model fitted with an int8 backbone (``quantize.py``, the default on a CPU) carries its whole
scoring graph in its file (``export.stored_graph``: the int8 backbone, the bank search in int8,
the score and maps), and ``auto`` and ``onnx`` run that graph on ONNX Runtime: ``anomaly predict``
then never imports PyTorch (``cli/predict.py``, ``onnx_model.stored_in``). Where the graph does
not score the file's probe image as where it was trained (another CPU's int8 kernels), the model
runs its int8 backbone on ONNX Runtime and the rest on PyTorch (the bank search's products in int8
on ONNX Runtime where the CPU has VNNI, ``coreset.BankIndex``), or its fp32 backbone where those
kernels give other features too. ``onnx-fp32`` and ``torch`` run the fp32 backbone.

A model with an fp32 backbone (older files, ``--precision fp32``, fitted on a GPU) runs, under
``auto``, on ONNX Runtime, 1.2x PyTorch's speed from 1024 px PNGs (measured 2026-11-29, Engines in
`git show cf0a644:BENCHMARKS.md`), when there are enough images to pay for exporting the model in
memory (under a second, plus tracing's warm-up);
an exported ``.onnx`` file runs as it is (``onnx_model.py``, which needs no PyTorch).
"""
from __future__ import annotations

from pathlib import Path

from anomalycli import engine_choice, export, onnx_model, project, quantize
from anomalycli.methods import AnomalyModel
from anomalycli.onnx_model import OnnxModel, whole_graph_session


def in_memory(model: AnomalyModel, with_maps: bool = True) -> OnnxModel:
    """``model`` exported in memory; without maps the graph skips them (predict without --heatmaps)."""
    return OnnxModel(model.method, model.config, model.calibration, whole_graph_session(export.onnx_bytes(model, with_maps)))


def load_model(path: str | Path, engine: str = "auto") -> AnomalyModel | OnnxModel:
    """The model at ``path``: a model file or run folder (on PyTorch until ``on_engine``), or an exported ``.onnx``."""
    engine_choice.resolve_engine(engine)  # the option's mistakes first, whatever the file
    path = project.model_file(path)
    return onnx_model.load(path, engine) if onnx_model.is_exported(path) else AnomalyModel.load(path)


def on_engine(model: AnomalyModel | OnnxModel, engine: str, n_images: int, with_maps: bool = True) -> tuple[AnomalyModel | OnnxModel, str]:
    """``model`` where ``engine`` says it runs for ``n_images`` images, and one line for the user
    where that is not the fast path the model was fitted for (else "").

    An int8 model runs the scoring graph its file carries (``export.stored_graph``) where that
    graph scores its probe image here as where it was trained; else it checks, on the same image,
    that this CPU's int8 kernels give the features they gave at training, and if not, it runs its
    fp32 backbone. ``auto`` keeps PyTorch for
    fp32 models under ``engine_choice.AUTO_ONNX_MIN_IMAGES`` images: exporting costs more than ONNX Runtime saves.
    """
    if isinstance(model, OnnxModel):
        return model, model.probe_note()
    chosen = engine_choice.resolve_engine(engine)
    int8 = quantize.int8_of(model.net)
    stored_note = ""
    if chosen == "onnx" and model.stored is not None:
        graph = stored_graph_model(model)
        if graph.probe_holds():
            return graph, ""
        stored_note = (f"the model file's int8 scoring graph scores its probe image {graph.probe_mismatch():.1%} of the score range away "
                       "from the machine that trained it, so it runs on PyTorch here (slower)")
    if int8 is None:
        note = fp32_note(model) if engine == "auto" else ""
    elif chosen in ("torch", "onnx-fp32"):
        int8.active = False
        note = f"--engine {engine} runs this model's fp32 backbone; its threshold was chosen on its int8 backbone's scores, which may differ slightly"
    else:
        mismatch = int8.probe_mismatch()
        if mismatch <= quantize.PROBE_RTOL:
            return (in_memory(model, with_maps) if engine == "onnx" else model), stored_note
        int8.active = False
        note = (f"int8 kernels on this CPU give features up to {mismatch:.1%} away from training's on the model's probe image, so "
                "predict runs the fp32 backbone (about half the speed; scores may differ slightly from calibration)")
    note = "; ".join(n for n in (stored_note, note) if n)
    if chosen != "torch" and (engine != "auto" or n_images >= engine_choice.AUTO_ONNX_MIN_IMAGES):
        return in_memory(model, with_maps), note
    return model, note


def stored_graph_model(model: AnomalyModel) -> OnnxModel:
    """The scoring graph ``model``'s file carried (``AnomalyModel.stored``), on ONNX Runtime, with its probe check."""
    probe = quantize.int8_of(model.net).probe.numpy(), float(model.stored["probe_raw_score"])
    return OnnxModel(model.method, model.config, model.calibration, whole_graph_session(model.stored["graph"]), probe)


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
