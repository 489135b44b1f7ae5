"""A camera's frames judged and kept (workflows/camera_frames.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from anomalycli.data.pixel_formats import frame_image
from anomalycli.deploy.archive import Archive, ArchivePolicy
from anomalycli.deploy.line import Judged, Line
from anomalycli.deploy.scoring import scored_row
from anomalycli.workflows.camera_frames import keep


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
