"""Loading a model to score with, as ``predict``, ``watch`` and ``serve`` all do.

No PyTorch here: an exported file, and the scoring graph an int8 model file carries, load
without it (``onnx_model``), which spares its import: most of the start of a predict. Other
models load on PyTorch (``engines``), imported only then.
"""

from __future__ import annotations

from pathlib import Path

from anomalycli import project
from anomalycli.deploy import engine_choice, onnx_model


def load(model_path: Path, engine: str, calls_in_flight: int = 1):
    """The model at ``model_path`` (a file or a run folder), a scoring graph's to score
    ``calls_in_flight`` images at once where given several (``onnx_model.CALLS_IN_FLIGHT`` for a
    batch job). Where an int8 graph does not score its probe image here as where it was trained,
    ``on_engine`` moves it to the kernels that do."""
    path = project.model_file(model_path)
    if onnx_model.is_exported(path):
        return onnx_model.load(path, engine, calls_in_flight)
    if engine in ("auto", "onnx"):
        graph = onnx_model.stored_in(path, calls_in_flight)
        if graph is not None:
            return graph
    from anomalycli.deploy.engines import load_model

    return load_model(path, engine)


def on_engine(model, engine: str, n_images: int, with_maps: bool) -> tuple[object, list[str]]:
    """``engines.on_engine`` here (without PyTorch for a graph on ONNX Runtime): the model where it
    runs, and the lines to print: where that is, and why where it is not the model's fast path."""
    if isinstance(model, onnx_model.OnnxModel):
        model, note = model.where_probe_holds()
        note = note or (engine_choice.fp32_note(model.method, model.config) if engine == "auto" else "")
        where = model.describe()
    else:
        from anomalycli.deploy.engines import describe
        from anomalycli.deploy.engines import on_engine as placed

        model, note = placed(model, engine, n_images, with_maps)
        where = describe(model)
    return model, [f"runs on: {where}", *([note] if note else [])]
