"""A camera's frames judged and kept (workflows/camera_frames.py)."""

from __future__ import annotations

import collections
import queue

import numpy as np
from PIL import Image

from anomalycli.data.bit_depth import ValueWindow
from anomalycli.data.pixel_formats import frame_image
from anomalycli.deploy.archive import Archive, ArchivePolicy
from anomalycli.deploy.camera.frames import Frame
from anomalycli.deploy.line import Judged, Line
from anomalycli.deploy.scoring import scored_row
from anomalycli.workflows.camera_frames import keep, next_frames


def test_frames_come_in_their_order_when_a_lost_frame_and_a_dropped_one_arrive_together():
    """The camera skipped frame 12: its marker takes frame 13's arrival time, and frame 13, coming
    while the queue holds that marker, is dropped. The lost 12 is judged before the dropped 13."""

    class Acquisition:
        def __init__(self):
            self.frames, self.dropped = queue.Queue(), collections.deque()

        def get(self, timeout):
            try:
                return self.frames.get(timeout=timeout)
            except queue.Empty:
                return None

    acquisition = Acquisition()
    acquisition.frames.put(Frame(None, 12, 0, "0", 5.0, "lost: the camera's frame never arrived"))
    acquisition.dropped.append(Frame(None, 13, 0, "0", 5.0, "dropped"))
    acquisition.frames.put(Frame(None, 14, 0, "0", 5.1, ""))
    acquisition.dropped.append(Frame(None, 15, 0, "0", 5.2, "dropped"))
    taken = [next_frames(acquisition, 0.01) for _ in range(3)]
    assert [[(f.frame_id, dropped) for f, dropped in batch] for batch in taken] == [[(12, False)], [(13, True), (14, False)], [(15, True)]]


def test_a_12_bit_frames_kept_heat_map_shows_the_part_as_its_8_bit_twin_does(patchcore_model, tmp_path):
    """A Mono12 frame is scaled by its own bits for its heat map, as for the model, not clipped to white."""
    line = Line(patchcore_model)
    grey = np.random.default_rng(0).integers(0, 4096, (64, 64))
    twelve, eight = frame_image(grey.astype(np.uint16), 64, 64, "Mono12"), frame_image((grey // 16).astype(np.uint8), 64, 64, "Mono8")
    pictures = []
    for name, frame in (("twelve", twelve), ("eight", eight)):
        judged = Judged(name, scored_row(tmp_path / f"{name}.png", 30.0, 0.9, "", 0.5, np.zeros((64, 64), np.float32)), 1.0)
        archive = Archive(ArchivePolicy(tmp_path / name))
        kept = keep(archive, frame, judged, line, heatmaps=True)
        (heat_map,) = (tmp_path / name).rglob("*.heatmap.png")
        assert kept and judged.scored.map is None
        pictures.append(np.asarray(Image.open(heat_map).convert("L"), dtype=float))
    assert np.abs(pictures[0] - pictures[1]).max() <= 2


def test_a_model_fitted_on_dark_low_bit_files_judges_the_cameras_frames_of_them_as_the_files(tmp_path):
    """Goods saved as a Mono12 camera's values in the low bits of 16-bit files, darker than 1024:
    the model reads files on 10 bits, and the camera's own frames of the same values the same way."""
    from anomalycli.data.synthetic import make_dataset
    from anomalycli.deploy.camera.frames import Frame
    from anomalycli.deploy.scoring import iter_scores
    from anomalycli.workflows.camera_frames import judge_frame
    from anomalycli.workflows.train import TrainOptions, train
    from tests.test_bit_depth import as_low_bits

    data = make_dataset(tmp_path / "data" / "dark", n_good=10, n_per_defect=2, size=48, masks=False)
    images = as_low_bits(data, bits=10)  # a 12-bit camera's values, none above 1023
    fitted = train(TrainOptions(data=str(data), run_dir=str(tmp_path / "run"), method="patchcore", image_size=48, coreset_ratio=0.2), show_progress=False)
    line = Line(fitted.model_path)
    assert line.windows.sixteen_bit == ValueWindow.of_bits(10)
    files = [r.raw for r in iter_scores(line.model, images, show_progress=False)]
    frames = []
    for i, path in enumerate(images):
        values = np.asarray(Image.open(path))
        frame = Frame(frame_image(values.ravel(), values.shape[1], values.shape[0], "Mono12"), i, 0, "cam", pixel_format="Mono12")
        frames.append(judge_frame(line, frame)[0].scored.raw)
    assert np.allclose(frames, files, atol=0.01 * (line.model.calibration.high - line.model.calibration.low))
