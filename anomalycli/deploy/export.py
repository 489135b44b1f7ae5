"""ONNX export: one self-contained file that scores uint8 images with no anomalycli or PyTorch.

The graph holds all that scoring a batch takes: preprocessing, the frozen backbone, the patch
features, the nearest-neighbour search against the memory bank (part by part, as the PyTorch
model scores) and the calibrated score. The model file's metadata travels in the ONNX metadata
properties, so the exported file alone is a model that ``predict`` and ``eval`` accept.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from anomalycli import __version__, modelfile
from anomalycli.data.bit_depth import FULL_WINDOW, windows_of
from anomalycli.data.framing import LETTERBOX, framing_of
from anomalycli.data.levels import levels_of, stretched
from anomalycli.deploy import onnx_model
from anomalycli.deploy.engine_choice import ONNX_INSTALL_HINT
from anomalycli.deploy.onnx_model import ANOMALY_MAP, DEFECT_MASK, INPUT, META_KEY, PROBE_KEY, RAW_SCORE, SCORE
from anomalycli.detection import backbones, ignore, int8_backbone
from anomalycli.detection.methods import AnomalyModel
from anomalycli.detection.methods.patchcore import PatchCore
from anomalycli.errors import UserError
from anomalycli.files import atomic_path
from anomalycli.judgement.calibration import calibrated_score
from anomalycli.judgement.size_rule import describe as describe_size_rule

OPSET = 17
INT8_OPSETS = {"com.microsoft": 1}  # the int8 search's DynamicQuantizeMatMul


class Preprocess(nn.Module):
    """uint8 images -> the backbone's input, as ``backbones.preprocess`` (a module, so that it is traced)."""

    def __init__(self, backbone: str, keep=None, stretch: bool = False):
        super().__init__()
        self.stretch = stretch  # each image's levels stretched first (data/levels.py)
        mean, std = backbones.normaliser(backbone)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("keep", None if keep is None else torch.as_tensor(keep))  # the don't-care mask's 0s (ignore.keep_of), or None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        x = (backbones.stretch_levels(x) if self.stretch else x) / 255.0
        x = (x - self.mean) / self.std
        return x if self.keep is None else x * self.keep


class ScoringGraph(nn.Module):
    """uint8 images N x 3 x S x S (RGB) -> calibrated score [N], raw score [N] and, where the
    method has them, anomaly maps [N, S, S] in raw units."""

    def __init__(self, model: AnomalyModel, with_maps: bool = True):
        super().__init__()
        self.net = model.net.eval()
        self.with_maps = with_maps and model.has_maps
        self.preprocess = Preprocess(model.config["backbone"], ignore.keep_of(model.config), stretched(model.config))
        cal = model.calibration
        self.low, self.threshold, self.high = float(cal.low), float(cal.threshold), float(cal.high)

    def calibrated(self, raw: torch.Tensor) -> torch.Tensor:
        """Calibration.normalise inside the graph: the threshold maps to 0.5."""
        return calibrated_score(raw, self.low, self.threshold, self.high, xp=torch)

    def outputs(self, raw: torch.Tensor, maps: torch.Tensor | None):
        """The graph's outputs (``output_names``) from the method's raw scores and maps."""
        return (self.calibrated(raw), raw, maps) if self.with_maps else (self.calibrated(raw), raw)

    def forward(self, images: torch.Tensor):
        return self.outputs(*self.net(self.preprocess(images), self.with_maps))


def output_names(model: AnomalyModel, with_maps: bool = True) -> list[str]:
    return [SCORE, RAW_SCORE, ANOMALY_MAP] if with_maps and model.has_maps else [SCORE, RAW_SCORE]


class AfterBackbone(nn.Module):
    """``ScoringGraph`` from the backbone's maps on: what an int8 backbone's graph is joined to."""

    def __init__(self, model: AnomalyModel, with_maps: bool = True):
        super().__init__()
        self.scoring = ScoringGraph(model, with_maps)
        self.image_size = model.config["image_size"]

    def forward(self, *maps: torch.Tensor):
        size = (self.image_size, self.image_size) if self.scoring.with_maps else None
        return self.scoring.outputs(*self.scoring.net.score_maps(list(maps), size))


def _traced(module: nn.Module, inputs: tuple, input_names: list[str], output_names: list[str], custom_opsets: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    # The tracer warns about every Python int it bakes in (shapes fixed by the image size); the
    # parity tests, not those warnings, say whether the graph scores as the model does.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            inputs,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            custom_opsets=custom_opsets,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in [*input_names, *output_names]},
        )
    return buffer.getvalue()


def onnx_bytes(model: AnomalyModel, with_maps: bool = True) -> bytes:
    """The model's scoring graph as a serialised ONNX model (no metadata), any batch size: with its
    int8 backbone where it has one, and then the bank
    search's products in int8 too (``PatchCore.searching``); else all in fp32."""
    int8 = int8_backbone.int8_of(model.net)
    if int8 is not None:
        return _joined_to_int8(_searching_in_int8(model), int8, with_maps).SerializeToString()
    size = model.config["image_size"]
    device = next(model.net.parameters()).device
    images = torch.zeros(2, 3, size, size, dtype=torch.uint8, device=device)
    return _traced(ScoringGraph(model, with_maps), (images,), [INPUT], output_names(model, with_maps))


def _searching_in_int8(model: AnomalyModel) -> AnomalyModel:
    """``model`` whose exported bank search multiplies in int8: a copy, the model is unchanged."""
    net = model.net
    if isinstance(net, PatchCore):
        return dataclasses.replace(model, net=net.searching("int8"))
    twin = copy.copy(net)  # a hybrid: its own module table, holding the searching patchcore
    twin._modules = dict(net._modules)
    twin.patchcore = net.patchcore.searching("int8")
    return dataclasses.replace(model, net=twin)


def _joined_to_int8(model: AnomalyModel, int8: int8_backbone.Int8Extractor, with_maps: bool):
    """Preprocessing, the int8 backbone's own graph and ``AfterBackbone``, joined into one ONNX model."""
    import onnx
    from onnx import compose

    size = model.config["image_size"]
    images = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    preprocess = Preprocess(int8.name, ignore.keep_of(model.config), stretched(model.config))
    maps = tuple(int8(preprocess(images), deep=int8.deep))
    map_names = int8.output_names
    parts = [
        onnx.load_from_string(_traced(preprocess, (images,), [INPUT], [int8_backbone.INPUT])),
        compose.add_prefix(onnx.load_from_string(int8.graph.numpy().tobytes()), "backbone/"),
        compose.add_prefix(
            onnx.load_from_string(_traced(AfterBackbone(model, with_maps), maps, map_names, output_names(model, with_maps), INT8_OPSETS)),
            "after/",
            rename_inputs=False,
            rename_outputs=False,
        ),
    ]
    ir_version = max(p.ir_version for p in parts)
    for part in parts:
        part.ir_version = ir_version
    joined = compose.merge_models(parts[0], parts[1], io_map=[(int8_backbone.INPUT, "backbone/" + int8_backbone.INPUT)])
    return compose.merge_models(joined, parts[2], io_map=[("backbone/" + name, name) for name in map_names])


def metadata(model: AnomalyModel) -> dict[str, str]:
    """The ONNX metadata properties: anomalycli's own JSON, and the facts a line program needs, readable."""
    cal = model.calibration
    own = {
        "method": model.method,
        "config": model.config,
        "calibration": cal.to_dict(),
        "format_version": modelfile.format_version(model.config, with_graph=False),
        "package_version": __version__,
    }
    size, windows = model.config["image_size"], windows_of(model.config)
    window, floats = windows.sixteen_bit, windows.floats
    pixel = model.config.get("pixel_threshold") if model.has_maps else None
    # What a line program needs to make regions and apply the size rule (connected components,
    # which ONNX has no operator for): the anomaly map above pixel_threshold, its areas in the
    # original image's pixels (the map scaled back to the image's size).
    regions = {}
    if pixel:
        regions["pixel_threshold"] = repr(float(pixel["value"]))
        regions["verdict"] = "anomaly where score >= 0.5" + (
            f", unless the map has regions above pixel_threshold and every one is under min_area_px ({describe_size_rule(cal.min_area_px)})"
            if cal.min_area_px
            else ""
        )
    if cal.min_area_px:
        regions["min_area_px"] = repr(float(cal.min_area_px))
    return {
        META_KEY: json.dumps(own),
        **regions,
        "method": model.method,
        "input": f"{INPUT}: uint8 N x 3 x {size} x {size}, RGB ("
        + (
            f"letterboxed: resize so the longer side is {size}, centre it and fill the rest with the image mirrored at its edges; "
            f"{ANOMALY_MAP} and {DEFECT_MASK} are in that frame"
            if framing_of(model.config) == LETTERBOX
            else f"resize to {size} x {size} first"
        )
        + ("; the graph stretches each image's grey levels itself" if stretched(model.config) else "")
        + (f"; a 16-bit image's values scaled to 8 bits from {window.low}..{window.high}, not 0..65535" if window != FULL_WINDOW else "")
        + (f"; a float or 32-bit image's values from {floats.low:g}..{floats.high:g}" if floats else "")
        + ")",
        "framing": framing_of(model.config),
        "levels": levels_of(model.config),
        # A line program reads a 16-bit image as the model read its goods: (value - low) / (high - low) * 255.
        "sixteen_bit_window": f"{window.low} {window.high}",
        **({"significant_bits": str(window.bits)} if window.bits is not None else {}),
        **({"float_window": f"{floats.low!r} {floats.high!r}"} if floats else {}),
        "outputs": f"{SCORE} (0..1, anomaly at >= 0.5), {RAW_SCORE}"
        + (f", {ANOMALY_MAP} (N x {size} x {size}, raw units)" if model.has_maps else "")
        + (f", {DEFECT_MASK} (N x {size} x {size}, uint8: 1 where {ANOMALY_MAP} >= pixel_threshold)" if pixel else ""),
        "image_size": str(size),
        "raw_threshold": repr(float(cal.threshold)),
        "calibration": json.dumps(cal.summary()),
        "class_names": json.dumps(model.config["class_names"]),
        "package_version": __version__,
    }


def _probe(image: torch.Tensor, graph: bytes) -> dict:
    """An int8 file's check for the machine it runs on: its probe image (uint8 3 x S x S, as a
    PNG) and the raw score the file gives it here. int8 kernels differ between CPUs (those without
    VNNI can overflow), so another score there says the file's verdicts may differ too."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    raw = onnx_model.session(graph).run([RAW_SCORE], {INPUT: image.unsqueeze(0).numpy()})[0]
    return {"image_png_base64": base64.b64encode(buffer.getvalue()).decode("ascii"), "raw_score": float(raw[0])}


def save_model(model: AnomalyModel, path: str | Path, overwrite: bool = True) -> Path:
    """``model``'s file, which carries its scoring graph, exported afresh, where it is a patchcore
    or hybrid (``stored_graph``): what train, calibrate and adapt save."""
    return model.save(path, overwrite, stored_graph(model, model.net.state_dict()))


def stored_graph(model: AnomalyModel, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict] | None:
    """What a model file carries so that predict scores it without PyTorch (``onnx_model.stored_in``):
    the scoring graph (with maps) as a uint8 tensor, and what it is checked by: the digests of the
    network's ``tensors`` it was exported from and of the graph, and the raw score the graph gives
    an image (an int8 model's probe image, named by its tensor, which every machine scores again;
    an fp32 model's ``check_image``, whose fp32 kernels agree everywhere). An fp32 patchcore or hybrid
    carries one too: its predict otherwise imported PyTorch and, from 64 images, exported the same
    graph in memory (one image's whole predict 3.4 against 0.7 s; BENCHMARKS.md, "Speed"). None for the classifier, which predicts on
    PyTorch, and where the graph's score of the image lies over ``onnx_model.PROBE_SCORE_TOL`` of
    the score range from the model's own."""
    if model.method == "classifier":
        return None
    int8 = int8_backbone.int8_of(model.net)
    probe = int8.probe.unsqueeze(0) if int8 is not None else check_image(model.config["image_size"])
    try:
        graph = onnx_bytes(model, with_maps=True)
        raw = float(onnx_model.session(graph).run([RAW_SCORE], {INPUT: probe.numpy()})[0][0])
    except Exception:  # the graph only speeds predict up: a model it fails for is saved, and predicts on PyTorch
        return None
    spread = max(model.calibration.high - model.calibration.low, 1e-12)
    if abs(raw - float(model.score(probe, with_maps=False)[0][0])) > onnx_model.PROBE_SCORE_TOL * spread:
        return None
    check = {"digest": modelfile.digest(tensors), "graph_digest": modelfile.graph_digest(graph), "probe_raw_score": raw}
    if int8 is not None:
        check["probe_tensor"] = next(name for name, buffer in model.net.named_buffers() if buffer is int8.probe)
    return torch.frombuffer(bytearray(graph), dtype=torch.uint8), check


def check_image(size: int) -> torch.Tensor:
    """The image an fp32 model's stored graph is checked on when saved: grey noise, 1 x 3 x S x S uint8, the same every time."""
    grey = torch.randint(0, 256, (size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return grey.expand(1, 3, size, size).contiguous()


def _add_defect_mask(proto, pixel_threshold: float) -> None:
    """A ``defect_mask`` output: 1 where the anomaly map reaches the pixel threshold, the regions'
    pixels for a line program (their areas need connected components, which ONNX has none of).
    Only the exported file has it: predict makes regions from the map."""
    from onnx import TensorProto, helper

    level = helper.make_tensor(f"{DEFECT_MASK}/level", TensorProto.FLOAT, [], [pixel_threshold])
    proto.graph.initializer.append(level)
    proto.graph.node.extend(
        [
            helper.make_node("GreaterOrEqual", [ANOMALY_MAP, level.name], [f"{DEFECT_MASK}/bool"], name=f"{DEFECT_MASK}/compare"),
            helper.make_node("Cast", [f"{DEFECT_MASK}/bool"], [DEFECT_MASK], to=TensorProto.UINT8, name=f"{DEFECT_MASK}/cast"),
        ]
    )
    shape = next(o for o in proto.graph.output if o.name == ANOMALY_MAP).type.tensor_type.shape
    output = helper.make_tensor_value_info(DEFECT_MASK, TensorProto.UINT8, None)
    output.type.tensor_type.shape.CopyFrom(shape)
    proto.graph.output.append(output)


def export_onnx(model: AnomalyModel, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` as one ONNX file with its metadata, atomically."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"exporting to ONNX needs the onnx package; run: {ONNX_INSTALL_HINT}") from None
    graph = onnx_bytes(model)
    proto = onnx.load_from_string(graph)
    pixel = model.config.get("pixel_threshold") if model.has_maps else None
    if pixel:
        _add_defect_mask(proto, float(pixel["value"]))
    meta = metadata(model)
    int8 = int8_backbone.int8_of(model.net)
    if int8 is not None:
        meta[PROBE_KEY] = json.dumps(_probe(int8.probe, graph))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path, overwrite) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)
