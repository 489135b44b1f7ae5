"""A whole scoring graph on ONNX Runtime behind ``AnomalyModel``'s interface: an ``anomaly export``
file, or the copy of that graph an int8 model file carries (``export.stored_graph``).

No PyTorch here: ``anomaly predict`` runs either with numpy, ONNX Runtime and Pillow only, and a
predict of one image then takes 0.8 s, whole process, where PyTorch's import alone took about 2 s
(BENCHMARKS.md). Writing the graph is ``export.py``; choosing where a model runs is ``engines.py``.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from anomalycli import modelfile
from anomalycli.deploy import engine_choice
from anomalycli.errors import UsageError, UserError
from anomalycli.judgement.calibration import Calibration
from anomalycli.onnx_runtime import INT8_KERNELS, REFERENCE_KERNELS, session
from anomalycli.runtime import available_cores

SUFFIX = ".onnx"
# The graph's input and outputs, and the metadata keys the file carries.
INPUT = "images"
SCORE, RAW_SCORE, ANOMALY_MAP, DEFECT_MASK = "score", "raw_score", "anomaly_map", "defect_mask"
META_KEY = "anomalycli"  # the same JSON a model file keeps
PROBE_KEY = "probe"  # an int8 file's probe image and its raw score where it was exported (export._probe)
# Images per ONNX Runtime call. The exported search holds one (patches x bank rows) block of
# products per call (33 MB an image for a 320 px screws model, 215 MB at 512 px), and ONNX Runtime
# keeps an arena as large as its largest call: with 8 images a call a warm screws model held 924 MB
# after a burst, with one 237 MB, and scored faster too (26 against 30 ms an image; at 512 px 501
# against 2,648 MB, 116 against 104 ms). BENCHMARKS.md, "On the line".
ONNX_BATCH = 1
# Calls in flight where a batch job (predict) or a watch's burst scores several images at once, each
# on its share of the cores. One image's graph keeps two cores busy only part of the time (its
# layers are small): on 2 cores one call at a time took 23.9 ms an image, two at once on a thread
# each 17.6 ms, with the same CPU time. A single image still runs on every core: a watch's burst
# calls share a second session of one core a call, which a warm watch holds beside the first (206
# against 177 MB after 20,000 images, its bursts 0.98x batch predict's rate against 0.89x;
# BENCHMARKS.md, "On the line"). serve and the station judge one image a call.
CALLS_IN_FLIGHT = 2
# An int8 file's probe image scored on another machine: within this share of the calibration's
# score range of the export machine's score (the same kernels give the same score to the bit);
# on the reference kernels, within REFERENCE_SCORE_TOL (a screws model's probe: 0.75 %, while the
# verdicts of held-out folds flipped 0.0-0.3 %: "What int8 changes in the scores" in BENCHMARKS.md).
PROBE_SCORE_TOL, REFERENCE_SCORE_TOL = 0.01, 0.03


def is_exported(path: Path) -> bool:
    return path.suffix.lower() == SUFFIX


def whole_graph_session(model: bytes | str, kernels: str = INT8_KERNELS, threads: int = 0):
    """``session`` for a whole scoring graph, or one line saying how to install ONNX Runtime."""
    if not engine_choice.onnxruntime_installed():
        raise UserError(f"an .onnx model runs on ONNX Runtime, which is not installed; run: {engine_choice.ONNX_INSTALL_HINT}")
    return session(model, kernels, threads)


def threads_a_call(calls_in_flight: int) -> int:
    """ONNX Runtime threads of each call where ``calls_in_flight`` calls share this process's cores
    (0: ONNX Runtime's choice, one a core, for one call at a time)."""
    calls = min(calls_in_flight, available_cores())
    return available_cores() // calls if calls > 1 else 0


@dataclass
class OnnxModel:
    """An exported scoring graph behind ``AnomalyModel``'s interface (method, config, calibration, score)."""

    method: str
    config: dict
    calibration: Calibration
    session: object = field(repr=False)  # onnxruntime.InferenceSession
    # An int8 graph's check: an image (uint8 3 x S x S) and the raw score the graph gave it where it was exported.
    probe: tuple[np.ndarray, float] | None = field(default=None, repr=False)
    # The graph (bytes or a file's path) the session runs, to open it again on other kernels.
    source: bytes | str | None = field(default=None, repr=False)
    kernels: str = INT8_KERNELS
    calls_in_flight: int = 1  # images scored at once when given several (CALLS_IN_FLIGHT for a batch job)
    threads: int = 0  # each call's ONNX Runtime threads in ``session`` (threads_a_call)
    _mismatch: float | None = field(default=None, init=False, repr=False)
    # For several images: a session whose calls run on a share of the cores, and the threads that call it.
    _in_flight: tuple | None = field(default=None, init=False, repr=False)

    @property
    def has_maps(self) -> bool:
        return ANOMALY_MAP in {o.name for o in self.session.get_outputs()}

    def score(self, images, with_maps: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 N x 3 x S x S (a numpy array or a CPU tensor) -> raw scores [N] and maps [N, S, S]
        (or None), as numpy arrays: ``AnomalyModel.score``'s results, without PyTorch."""
        wanted = [RAW_SCORE, ANOMALY_MAP] if with_maps and self.has_maps else [RAW_SCORE]
        pixels = np.asarray(images)
        starts = range(0, len(pixels), ONNX_BATCH)
        run, over = self.session.run, map
        if len(starts) > 1 and self.source is not None and min(self.calls_in_flight, available_cores()) > 1:
            shared, callers = self._calls_in_flight()
            run, over = shared.run, callers.map
        runs = list(over(lambda i: run(wanted, {INPUT: pixels[i : i + ONNX_BATCH]}), starts))
        raw = np.concatenate([r[0] for r in runs])
        maps = np.concatenate([r[1] for r in runs]) if len(wanted) > 1 else None
        return raw, maps

    def _calls_in_flight(self) -> tuple:
        """(a session of the same graph and kernels whose calls run on their share of the cores, and
        ``calls_in_flight`` threads to call it), made on first use: a single image never needs them."""
        if self._in_flight is None:
            threads = threads_a_call(self.calls_in_flight)
            # A model loaded for a batch job has its session so already: one graph's session less to make (0.1 s) and hold.
            shared = self.session if self.threads == threads else session(self.source, self.kernels, threads)
            self._in_flight = shared, ThreadPoolExecutor(min(self.calls_in_flight, available_cores()), thread_name_prefix="onnx-call")
        return self._in_flight

    def probe_mismatch(self) -> float:
        """How far this machine's raw score of an int8 graph's probe image lies from the export
        machine's, as a share of the calibration's score range (0.0 for a graph without a probe);
        scored once."""
        if self._mismatch is None:
            self._mismatch = 0.0
            if self.probe is not None:
                image, expected = self.probe
                raw, _ = self.score(image[None], with_maps=False)
                self._mismatch = abs(float(raw[0]) - expected) / max(self.calibration.high - self.calibration.low, 1e-12)
        return self._mismatch

    def describe(self) -> str:
        """Where this model scores, in words: an int8 graph's kernels and this CPU's class (an int8
        graph is one with a probe, or one already moved to the reference kernels)."""
        if self.probe is None and self.kernels == INT8_KERNELS:
            return "ONNX Runtime"
        return f"ONNX Runtime, int8 graph on {self.kernels} kernels ({engine_choice.cpu_class()})"

    def probe_holds(self) -> bool:
        return self.probe_mismatch() <= (REFERENCE_SCORE_TOL if self.kernels == REFERENCE_KERNELS else PROBE_SCORE_TOL)

    def where_probe_holds(self) -> tuple["OnnxModel", str]:
        """This model on the kernels that score its probe image here as where it was made, and a line
        where those are not the int8 kernels ("" where they are). Raises ``UserError`` where none do:
        its verdicts would not hold on this CPU."""
        if self.probe_holds():
            return self, ""
        mismatch = self.probe_mismatch()
        reference = replace(self, session=whole_graph_session(self.source, REFERENCE_KERNELS, self.threads), kernels=REFERENCE_KERNELS)
        if reference.probe_holds():
            return reference, (
                f"this CPU's int8 kernels score the model's probe image {mismatch:.1%} of the score range away from the machine "
                "that made it, so its int8 network runs in float32 here (within a rounding step of the same scores, slower); "
                "training the model again, on any PC, gives it an int8 graph whose kernels run here"
            )
        raise UserError(
            f"this CPU scores the model's probe image {reference.probe_mismatch():.1%} of the score range away from the machine that "
            "made it, even with the int8 network in float32, so its verdicts would not hold here; train the model on this PC "
            "(or with --precision fp32) and export it again"
        )


def load(path: str | Path, engine: str = "auto", calls_in_flight: int = 1) -> OnnxModel:
    """An exported file, to score ``calls_in_flight`` images at once where given several. Opening it
    runs no Python code from it: ONNX Runtime reads the graph only."""
    path = Path(path)
    if engine == "torch":
        raise UsageError(f"{path.name} is an exported ONNX model, which runs on ONNX Runtime only; drop --engine torch or pass the .safetensors model")
    not_a_model = f"{path} is not an anomalycli model file (or it is damaged)"
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; pass the .onnx file that anomaly export wrote")
    threads = threads_a_call(calls_in_flight)
    try:
        graph = whole_graph_session(str(path), threads=threads)
    except UserError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf
        raise UserError(f"{not_a_model}: {str(exc).splitlines()[0][:160] or type(exc).__name__}") from None
    properties = graph.get_modelmeta().custom_metadata_map
    if properties.get(META_KEY) is None:
        raise UserError(f"{not_a_model}: it has no anomalycli metadata")
    try:
        meta = json.loads(properties[META_KEY])
        modelfile.check_version(path, meta)
        model = OnnxModel(
            meta["method"],
            meta["config"],
            Calibration(**meta["calibration"]),
            graph,
            source=str(path),
            calls_in_flight=calls_in_flight,
            threads=threads,
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise UserError(f"{not_a_model}: its metadata is incomplete") from None
    if PROBE_KEY in properties:
        try:
            probe = json.loads(properties[PROBE_KEY])
            model.probe = probe_image(probe), float(probe["raw_score"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UserError("the .onnx file's probe is damaged; export the model again") from None
    return model


def in_bursts(model, calls_in_flight: int):
    """``model`` (loaded for one image at a time: every core a call) scoring a batch of several images
    ``calls_in_flight`` at once, each on its share of the cores, in a second session made on the
    first such batch; a model that is no scoring graph, or ``calls_in_flight`` 1, as it is."""
    return replace(model, calls_in_flight=calls_in_flight) if isinstance(model, OnnxModel) and calls_in_flight > 1 else model


def stored_in(path: Path, calls_in_flight: int = 1) -> OnnxModel | None:
    """The scoring graph a model file carries (``export.stored_graph``), loaded without PyTorch to
    score ``calls_in_flight`` images at once where given several;
    None where it carries none, where its network's tensors are not those the graph was exported
    from (the file was changed since), or where ONNX Runtime is not installed."""
    meta = modelfile.read_meta(path)
    check = meta.get(modelfile.GRAPH_KEY)
    if not isinstance(check, dict) or not engine_choice.onnxruntime_installed():
        return None
    try:
        raw = modelfile.raw_tensors(path)
        graph = bytes(raw[modelfile.GRAPH_TENSOR][2])
        if not modelfile.carried_graph_holds(check, modelfile.file_digest(raw), graph):
            return None
        probe = None  # an fp32 graph's: its kernels agree on every CPU
        if "probe_tensor" in check:
            _, shape, pixels = raw[check["probe_tensor"]]
            probe = np.frombuffer(pixels, np.uint8).reshape(shape).copy(), float(check["probe_raw_score"])  # a copy: the file's bytes go
        calibration = Calibration(**meta["calibration"])
    except (KeyError, TypeError, ValueError, struct.error):  # a damaged file is loading's to say, on PyTorch
        return None
    threads = threads_a_call(calls_in_flight)
    return OnnxModel(
        meta["method"],
        meta["config"],
        calibration,
        whole_graph_session(graph, threads=threads),
        probe,
        source=graph,
        calls_in_flight=calls_in_flight,
        threads=threads,
    )


def probe_image(probe: dict) -> np.ndarray:
    """The probe image of ``export._probe``'s dict, uint8 3 x S x S; ValueError where it is damaged."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(base64.b64decode(probe["image_png_base64"]))).convert("RGB")
    except (KeyError, TypeError, OSError) as exc:
        raise ValueError(f"damaged probe image ({type(exc).__name__})") from None
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))
