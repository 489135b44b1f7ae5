"""Where a model scores images: PyTorch, or ONNX Runtime running the exported graph.

A model fitted with an int8 backbone (``int8_backbone.py``, the default on a CPU) carries its whole
scoring graph in its file (``export.stored_graph``: the int8 backbone, the bank search in int8,
the score and maps), and ``auto`` and ``onnx`` run that graph on ONNX Runtime: ``anomaly predict``
then never imports PyTorch (``cli/predict.py``, ``onnx_model.stored_in``). Where the graph does
not score the file's probe image as where it was trained (another CPU's int8 kernels), the same
graph runs its quantised network in float32 (``onnx_runtime.REFERENCE_KERNELS``), and where even
that fails, the model refuses to predict: its int8 bank is never scored with fp32 features.
``torch`` runs an int8 model's backbone on ONNX Runtime and the rest on PyTorch; ``onnx-fp32``
runs fp32 models only.

A model with an fp32 backbone (older files, ``--precision fp32``, fitted on a GPU) runs, under
``auto``, on ONNX Runtime, 1.2x PyTorch's speed from 1024 px PNGs (the fp32 rows of BENCHMARKS.md's
Speed section), when there are enough images to pay for exporting the model in
memory (under a second, plus tracing's warm-up);
an exported ``.onnx`` file runs as it is (``onnx_model.py``, which needs no PyTorch).
"""

from __future__ import annotations

from pathlib import Path

from anomalycli import project
from anomalycli.deploy import engine_choice, export, onnx_model
from anomalycli.deploy.onnx_model import INT8_KERNELS, OnnxModel, whole_graph_session
from anomalycli.detection import int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UsageError


def in_memory(model: AnomalyModel, with_maps: bool = True) -> OnnxModel:
    """``model`` exported in memory, its int8 layers on the kernels its backbone runs on; without
    maps the graph skips them (predict without --heatmaps)."""
    int8 = int8_backbone.int8_of(model.net)
    kernels = int8.kernels if int8 is not None else INT8_KERNELS
    graph = export.onnx_bytes(model, with_maps)
    return OnnxModel(model.method, model.config, model.calibration, whole_graph_session(graph, kernels), source=graph, kernels=kernels)


def load_model(path: str | Path, engine: str = "auto") -> AnomalyModel | OnnxModel:
    """The model at ``path``: a model file or run folder (on PyTorch until ``on_engine``), or an exported ``.onnx``."""
    engine_choice.resolve_engine(engine)  # the option's mistakes first, whatever the file
    path = project.model_file(path)
    return onnx_model.load(path, engine) if onnx_model.is_exported(path) else AnomalyModel.load(path)


def on_engine(model: AnomalyModel | OnnxModel, engine: str, n_images: int, with_maps: bool = True) -> tuple[AnomalyModel | OnnxModel, str]:
    """``model`` where ``engine`` says it runs for ``n_images`` images, and one line for the user
    where that is not the fast path the model was fitted for (else "").

    An int8 model runs the scoring graph its file carries (``export.stored_graph``), or its int8
    backbone on ONNX Runtime with the rest on PyTorch, on the kernels that reproduce its training
    here (``OnnxModel.where_probe_holds``, ``Int8Extractor.hold_probe``): never its fp32 backbone,
    whose features its bank was not fitted on. An fp32 model runs the graph its file carries too;
    a file without one (the classifier's, one from before) keeps PyTorch under ``auto`` for fewer
    than ``engine_choice.AUTO_ONNX_MIN_IMAGES`` images: exporting costs more than ONNX Runtime saves.
    """
    if isinstance(model, OnnxModel):
        return model.where_probe_holds()
    chosen = engine_choice.resolve_engine(engine)
    int8 = int8_backbone.int8_of(model.net)
    if int8 is None:
        note = engine_choice.fp32_note(model.method, model.config) if engine == "auto" else ""
        if chosen != "torch" and model.stored is not None:
            return stored_graph_model(model), note
        if chosen != "torch" and (engine != "auto" or n_images >= engine_choice.AUTO_ONNX_MIN_IMAGES):
            return in_memory(model, with_maps), note
        return model, note
    if chosen == "onnx-fp32":
        raise UsageError(
            "--engine onnx-fp32 would score this model's int8 bank with fp32 features, which flips 7-15 % of verdicts; "
            "use --engine onnx or auto (or train with --precision fp32 for an fp32 model)"
        )
    if chosen == "onnx" and model.stored is not None:
        return stored_graph_model(model).where_probe_holds()
    note = int8.hold_probe()
    return (in_memory(model, with_maps) if engine == "onnx" else model), note


def stored_graph_model(model: AnomalyModel) -> OnnxModel:
    """The scoring graph ``model``'s file carried (``AnomalyModel.stored``), on ONNX Runtime, with an int8 graph's probe check."""
    int8 = int8_backbone.int8_of(model.net)
    probe = (int8.probe.numpy(), float(model.stored["probe_raw_score"])) if int8 is not None else None
    graph = model.stored["graph"]
    return OnnxModel(model.method, model.config, model.calibration, whole_graph_session(graph), probe, source=graph)


def describe(model: AnomalyModel | OnnxModel) -> str:
    """Where ``model`` scores, in words (predict's start, eval's report)."""
    if isinstance(model, OnnxModel):
        return model.describe()
    int8 = int8_backbone.int8_of(model.net)
    if int8 is None:
        return "PyTorch, fp32 backbone"
    return f"PyTorch, int8 backbone on ONNX Runtime's {int8.kernels} kernels ({engine_choice.cpu_class()})"
