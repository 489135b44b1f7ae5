"""The frozen backbone in int8, on ONNX Runtime: 1.8-2x its fp32 speed there on a CPU (BENCHMARKS.md, "Speed").

EfficientNet-Lite was designed to be quantised (ReLU6, no squeeze-excite). ``quantize`` exports
the feature extractor to ONNX and quantises it statically (QDQ, per-channel int8 weights, uint8
activations whose ranges are percentiles of what a few good training images give them). A model fitted this way takes its
patch features from the int8 graph in ``fit`` as in ``predict``: the memory bank, the
out-of-fold scores and the threshold all come from the features predict computes, so the
quantisation noise is calibrated for instead of shifting the scores (measured on fp32 banks,
int8 queries scored good parts 0.2 standard deviations higher; BENCHMARKS.md).

One graph gives the same features on every CPU ("Precision on any CPU" in BENCHMARKS.md):
- its weights use 7 bits (-64..64, ``reduce_range``): on x86-64 CPUs without VNNI, ONNX
  Runtime's uint8 x int8 kernels add pairs of products in 16 bits (VPMADDUBSW), which
  255 x 127 x 2 overflows and 255 x 64 x 2 does not, so AVX2, AVX-512 and VNNI kernels compute
  the same integers (8-bit weights gave features at median cosine 0.52 to fp32 on an AVX2 CPU);
- every block that begins at stride 4 or finer stays in fp32 (``FP32_LEADING_CONVS``, 15 of
  Lite1's 63 convolutions): the stem's batch-norm-folded filters nearly cancel on flat
  backgrounds, where 7-bit weights alone took the screws' cosine to 0.87, and the early blocks'
  int8 steps are as coarse as sensor noise and JPEG blocks, where int8 lost up to 0.11 AUROC to
  fp32 with the stem and first block alone in fp32. With the fifteen the cosine is 0.999 on both
  development sets (0.986 / 0.992 with three) and AVX2 kernels still give the same features to
  the bit; whole predict is 2 % slower (BENCHMARKS.md, "int8 on a changed line").

Two checks keep a wrong int8 path from scoring silently:
- at training, the int8 patch features must agree with the fp32 ones on the calibration images
  (median cosine at least ``MIN_COSINE``), or the model is fitted in fp32;
- on every machine that predicts, the graph must reproduce, on a probe image stored with it, the
  features it gave at training; where ONNX Runtime's int8 kernels do not (a file from before the
  7-bit graph moved to a CPU without VNNI, another architecture), the same quantised network runs
  in float32 (``onnx_runtime.REFERENCE_KERNELS``), and where even that fails, predict refuses: an
  int8 bank is never scored with fp32 features (7-15 % of verdicts flipped that way).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomalycli.detection import backbones
from anomalycli.errors import UserError
from anomalycli.onnx_runtime import INT8_KERNELS, REFERENCE_KERNELS, session

# Good training images whose activations set the int8 ranges (and on which the check runs).
CALIBRATION_IMAGES = 16
CALIBRATION_BATCH = 2
RUN_BATCH = 8
# Median cosine between int8 and fp32 patch features below which a model is fitted in fp32
# (0.97-0.99 on both development sets; a broken quantisation gives well under 0.9).
MIN_COSINE = 0.9
# The probe's pooled features on another machine: each within this relative difference of
# training's (the same int8 kernels give them to the bit).
PROBE_RTOL = 1e-3
# On the reference kernels, whose float rounding moves some activations by one int8 level: the
# features' distance to training's, relative to their norm (0.014-0.027 on both development sets'
# probes, where fp32 features lie 0.07-0.10 away).
REFERENCE_RTOL = 0.04
# Convolutions (in the graph's order) kept in fp32: the blocks at stride 4 or finer (see above).
FP32_LEADING_CONVS = 15
# How each activation's int8 range is taken from the calibration images: "percentile", the 99.999th
# percentile of its magnitude, never beyond its extremes (ONNX Runtime's percentile calibration), so
# that a few outlying activations cannot stretch the steps for all the rest; or "minmax", its
# extremes (the recipe before, for the benchmarks). Percentile ranges kept int8 within a refit's
# noise of fp32 on a changed line where min-max lost 0.004 AUROC near the training images
# (BENCHMARKS.md, "int8 on a changed line").
CALIBRATION = "percentile"
OPSET = 17
INPUT = "x"


class Int8Extractor(nn.Module):
    """A ``backbones.FeatureExtractor`` whose maps come from its int8 ONNX graph.

    ``kernels`` says how ONNX Runtime runs the graph (``INT8_KERNELS``, or ``REFERENCE_KERNELS``
    where this CPU's int8 kernels fail the probe check: ``hold_probe``). It keeps the fp32
    extractor beside the graph (``fp32``), whose features no bank of this model was fitted on. The
    graph, the probe image and the probe's features are buffers, so they travel in the model file's
    tensors; the ONNX Runtime session is made on first use and never pickled.
    """

    def __init__(self, fp32: backbones.FeatureExtractor, graph: torch.Tensor, probe: torch.Tensor, probe_features: torch.Tensor):
        super().__init__()
        self.fp32 = fp32
        self.name, self.channels, self.folded = fp32.name, fp32.channels, fp32.folded
        self.register_buffer("graph", graph)  # the int8 ONNX model's bytes, uint8
        self.register_buffer("probe", probe)  # uint8 3 x S x S
        self.register_buffer("probe_features", probe_features)  # backbones.pooled of the probe's maps
        self.kernels = INT8_KERNELS
        self._session = None

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def deep(self) -> bool:
        """Whether the graph gives the later stages' maps too (a hybrid's), not only strides 8 and 16."""
        return len(self.output_names) > 2

    @property
    def session(self):
        if self._session is None:
            self._session = session(self.graph.numpy().tobytes(), self.kernels)
        return self._session

    def forward(self, x: torch.Tensor, deep: bool = False) -> list[torch.Tensor]:
        if deep and not self.deep:
            return self.fp32(x, deep)  # the classifier-style descriptor of a patchcore graph: no bank depends on it
        pixels = np.ascontiguousarray(x.detach().float().cpu().numpy())
        # ONNX Runtime keeps an arena as large as its largest call: runs of RUN_BATCH images bound it.
        runs = [self.session.run(None, {INPUT: pixels[i : i + RUN_BATCH]}) for i in range(0, len(pixels), RUN_BATCH)]
        maps = [torch.from_numpy(np.concatenate(parts)) if len(runs) > 1 else torch.from_numpy(parts[0]) for parts in zip(*runs)]
        return maps if deep else maps[:2]

    def probe_mismatch(self) -> float:
        """The largest relative difference between the probe's pooled features here and at training."""
        here = self._probe_features_here()
        return float(((here - self.probe_features).abs() / self.probe_features.abs().clamp_min(1e-3)).max())

    def probe_distance(self) -> float:
        """The distance of the probe's pooled features here to training's, relative to their norm."""
        here = self._probe_features_here()
        return float((here - self.probe_features).norm() / self.probe_features.norm().clamp_min(1e-12))

    def _probe_features_here(self) -> torch.Tensor:
        x = backbones.preprocess(self.probe.unsqueeze(0), self.name)
        return backbones.pooled(self.forward(x, deep=self.deep))[0]

    def hold_probe(self) -> str:
        """Run on the kernels that reproduce training's features here: the int8 ones (""), else the
        reference ones (a line saying so). Raises ``UserError`` where neither does."""
        mismatch = self.probe_mismatch()
        if mismatch <= PROBE_RTOL:
            return ""
        self.kernels, self._session = REFERENCE_KERNELS, None
        reference = self.probe_distance()
        if reference <= REFERENCE_RTOL:
            return (
                f"this CPU's int8 kernels give features up to {mismatch:.1%} away from training's on the model's probe image, so the "
                "int8 network runs in float32 here (the same features within a rounding step, slower); "
                "training the model again, on any PC, gives it an int8 graph whose kernels run here"
            )
        raise UserError(
            f"this CPU gives features {reference:.1%} away from the model's training even with the int8 network in "
            "float32, so its verdicts would not hold here; train the model on this PC (or with --precision fp32)"
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state


class _ExtractorPass(nn.Module):
    """An extractor's pass with or without the later stages' maps, as one module to trace."""

    def __init__(self, extractor: backbones.FeatureExtractor, deep: bool):
        super().__init__()
        self.extractor, self.deep = extractor, deep

    def forward(self, x):
        return tuple(self.extractor(x, deep=self.deep))


def fp32_graph(extractor: backbones.FeatureExtractor, image_size: int, deep: bool) -> bytes:
    """The extractor as an ONNX model: preprocessed images N x 3 x S x S -> its maps, any batch size."""
    buffer = io.BytesIO()
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        names = [f"map{i}" for i in range(len(extractor(x, deep=deep)))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on baked-in shapes; the checks judge the graph
        torch.onnx.export(
            _ExtractorPass(extractor.eval(), deep),
            (x,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in [INPUT, *names]},
        )
    return buffer.getvalue()


def median_cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Median over positions of the cosine between two extractors' stride-8 and stride-16 feature vectors."""
    cosines = [torch.nn.functional.cosine_similarity(ma.float(), mb.float(), dim=1).flatten() for ma, mb in zip(a[:2], b[:2])]
    return float(torch.cat(cosines).median())


def extractor_for(config: dict) -> backbones.FeatureExtractor | Int8Extractor:
    """The extractor a saved patchcore or hybrid model's weights load into: its int8 graph's
    buffers sized from ``config["int8"]`` where it has one."""
    fp32 = backbones.extractor_for(config)
    sizes = config.get("int8")
    if not sizes:
        return fp32
    size = config["image_size"]
    return Int8Extractor(
        fp32, torch.zeros(sizes["graph_bytes"], dtype=torch.uint8), torch.zeros(3, size, size, dtype=torch.uint8), torch.zeros(sizes["probe_features"])
    )


def int8_of(net: nn.Module) -> Int8Extractor | None:
    """The int8 extractor of a patchcore or hybrid net, None for any other."""
    extractor = getattr(getattr(net, "patchcore", net), "extractor", None)
    return extractor if isinstance(extractor, Int8Extractor) else None


def require_training_features(net: nn.Module, consequence: str) -> None:
    """One line refusing to go on where this CPU's int8 kernels fail ``net``'s probe check: its
    bank and threshold rest on training's int8 features, and ``consequence`` says what would go wrong.
    (predict falls back to the fp32 backbone instead; adapt and calibrate would mix the two.)"""
    int8 = int8_of(net)
    if int8 is not None and int8.probe_mismatch() > PROBE_RTOL:
        raise UserError(
            f"this CPU's int8 kernels give other features than the model's training did, so {consequence}; "
            "run it on the machine that trained the model, or train with --precision fp32"
        )


def config_of(extractor) -> dict:
    """What a model's config records of its extractor's int8 graph (nothing for fp32)."""
    if not isinstance(extractor, Int8Extractor):
        return {}
    return {"int8": {"graph_bytes": extractor.graph.numel(), "probe_features": extractor.probe_features.numel()}}


@contextlib.contextmanager
def _quantizer_advice_dropped():
    """While inside, drop the records ONNX Runtime's quantiser logs on the root logger (it advises
    pre-processing the graph; the checks after quantising judge it): those records only, where
    ``logging.disable`` would silence every logger of the process."""

    def not_the_quantisers(record: logging.LogRecord) -> bool:
        return f"onnxruntime{os.sep}quantization" not in record.pathname

    root = logging.getLogger()
    root.addFilter(not_the_quantisers)
    try:
        yield
    finally:
        root.removeFilter(not_the_quantisers)


def _leading_nodes(graph, convs_kept: int) -> list[str]:
    """The nodes before the ``graph``'s (an ONNX model) ``convs_kept + 1``-th convolution, kept in fp32
    (with the activations and paddings between them, which would otherwise take the float outputs' ranges)."""
    nodes = graph.graph.node
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    return [node.name for node in nodes[: convs[convs_kept]]] if 0 < convs_kept < len(convs) else []


def _weight_scales(graph, excluded: list[str], seven_bit_weights: bool) -> dict[str, list[dict]]:
    """Every quantised convolution's (of the ONNX model ``graph``) per-channel weight scales and zero points, as ONNX Runtime's
    quantiser computes them (symmetric int8, each channel's largest magnitude over the int8 span, in
    float64 then stored in float32), given to it as ``TensorQuantOverrides``: its own loop over the
    channels in Python took 2.2 of a deep Lite1 graph's 5.2 s of quantising. The graph is the same
    to the bit as the installed ONNX Runtime makes alone (tests/test_int8_backbone.py checks it;
    1.17's quantiser computes these scales the same way too)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    weights = {tensor.name: tensor for tensor in graph.graph.initializer}
    qmin, qmax = get_qmin_qmax_for_qType(onnx.TensorProto.INT8, reduce_range=seven_bit_weights, symmetric=True)
    zero_point = np.round((np.float64(qmin) + np.float64(qmax)) / 2.0).astype(np.int8)
    overrides = {}
    for node in graph.graph.node:
        if node.op_type != "Conv" or node.name in excluded or node.input[1] not in weights:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        rows = weight.reshape(len(weight), -1)
        largest = np.maximum(np.abs(np.minimum(rows.min(1), 0)), np.abs(np.maximum(rows.max(1), 0)))
        scale = (largest.astype(np.float64) * 2) / (np.float64(qmax) - np.float64(qmin))
        tiny = scale < np.finfo(np.float32).tiny  # an all-zero channel: ONNX Runtime's scale 1, zero point 0
        scales = np.where(tiny, 1.0, scale).astype(np.float32)
        points = np.where(tiny, 0, zero_point).astype(np.int8)
        overrides[node.input[1]] = [{"axis": 0, "scale": s, "zero_point": z} for s, z in zip(scales, points)]
    return overrides


def quantize(
    extractor: backbones.FeatureExtractor,
    images: torch.Tensor,
    deep: bool,
    stretch: bool = False,
    seven_bit_weights: bool = True,
    fp32_leading_convs: int = FP32_LEADING_CONVS,
    calibration: str = CALIBRATION,
) -> tuple[Int8Extractor, float]:
    """``extractor`` in int8, its activation ranges taken from ``images`` (uint8 N x 3 x S x S, good
    parts; their levels stretched first where the model does: ``stretch``), and the median cosine of
    its patch features to the fp32 ones on those images. The last three options are the recipe's (see
    above); the benchmarks set them to measure the graph before it. The probe is preprocessed
    without a stretch, here and on every machine that checks it: it checks the kernels, not the model."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    x = backbones.preprocess(images, extractor.name, stretch=stretch)
    # The calibration keeps every intermediate tensor of a batch until it takes their ranges: batches
    # of 2 bound its peak memory (min and max do not depend on the batching; the percentile's
    # histogram bins do, slightly).
    batches = [{INPUT: x[i : i + CALIBRATION_BATCH].numpy()} for i in range(0, len(x), CALIBRATION_BATCH)]

    class Reader(CalibrationDataReader):
        """The batches from ``start`` to ``end``: the quantiser collects each range in turn (its stride)."""

        start, end = 0, len(batches)

        def __len__(self):
            return len(batches)

        def set_range(self, start_index: int, end_index: int):
            self.start, self.end = start_index, end_index

        def get_next(self):
            if self.start >= min(self.end, len(batches)):
                return None
            self.start += 1
            return batches[self.start - 1]

    with tempfile.TemporaryDirectory(prefix="anomalycli-int8-") as tmp:
        traced_path, fp32_path, int8_path = Path(tmp) / "traced.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        traced_path.write_bytes(fp32_graph(extractor, images.shape[-1], deep))
        # ONNX Runtime's basic rewrites first, as its quantiser's documentation advises: they fold the
        # strided convolutions' "same" padding into the convolutions, where the quantised graph
        # otherwise ran each Pad in float between a dequantise and a quantise (the int8 backbone 2-3x
        # faster, the same features to the bit: that quantise gave the padded zeros back unchanged;
        # BENCHMARKS.md, "Speed").
        quant_pre_process(traced_path, fp32_path, skip_symbolic_shape=True)
        fp32_model = onnx.load(fp32_path)  # read once: the nodes kept in fp32 and the weight scales both come from it
        fp32_nodes = _leading_nodes(fp32_model, fp32_leading_convs)
        # The percentile calibration prints its progress: a train's output is not the place.
        with _quantizer_advice_dropped(), contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                fp32_path,
                int8_path,
                Reader(),
                calibrate_method={"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax}[calibration],
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=seven_bit_weights,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=fp32_nodes,
                extra_options={
                    "TensorQuantOverrides": _weight_scales(fp32_model, fp32_nodes, seven_bit_weights),
                    # One batch collected at a time (despite the name, for any method): all at once,
                    # the percentile calibration held 3.3 GB at its peak, one at a time 1.3 GB.
                    "CalibStridedMinMax": 1,
                },
            )
        graph = torch.frombuffer(bytearray(int8_path.read_bytes()), dtype=torch.uint8)
    probe = images.float().mean(0).round().to(torch.uint8)
    int8 = Int8Extractor(extractor, graph, probe, torch.zeros(0))
    with torch.no_grad():
        int8.probe_features = backbones.pooled(int8(backbones.preprocess(probe.unsqueeze(0), extractor.name), deep=deep))[0]
        cosine = median_cosine(int8(x, deep=False), extractor(x, deep=False))
    return int8.eval(), cosine
