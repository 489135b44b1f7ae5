"""train's input size chosen from the data (workflows/input_size.py): each planned size fitted,
the rule applied to what was measured, the choice said, and the chosen model working downstream."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anomalycli.detection.methods import AnomalyModel
from anomalycli.workflows.input_size import Trial, _choose, recall_at
from tests.conftest import run_cli

SIZE = 416  # large enough to plan a second size (over 1.25 x 320), small enough for a quick fit


def _dotted_parts(root, n_good: int = 14, n_bad: int = 6, seed: int = 0):
    """Grey textured plates; a defect is a dark dot 4 px across (2.5 px at 320): a small defect on a large image."""
    rng = np.random.default_rng(seed)
    for folder in ("good", "dot"):
        (root / folder).mkdir(parents=True)
    (root / "ground_truth" / "dot").mkdir(parents=True)
    for i in range(n_good + n_bad):
        pixels = 128 + rng.normal(0, 8, (SIZE, SIZE))
        mask = Image.new("L", (SIZE, SIZE), 0)
        if i >= n_good:
            x, y = rng.integers(60, SIZE - 60, 2)
            yy, xx = np.ogrid[:SIZE, :SIZE]
            pixels[(yy - y) ** 2 + (xx - x) ** 2 <= 4] = 30
            ImageDraw.Draw(mask).ellipse([x - 2, y - 2, x + 2, y + 2], fill=255)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
        if i < n_good:
            image.save(root / "good" / f"g{i:03d}.png")
        else:
            image.save(root / "dot" / f"d{i:03d}.png")
            mask.save(root / "ground_truth" / "dot" / f"d{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def dotted(tmp_path_factory):
    return _dotted_parts(tmp_path_factory.mktemp("dotted") / "data")


def test_small_defects_on_large_images_fit_both_sizes_and_keep_the_one_the_rule_picks(dotted, tmp_path):
    run = tmp_path / "run"
    # A budget no CPU misses, so that both sizes are fitted on a slow or busy one too.
    result = run_cli("train", dotted, "--cv-folds", "3", "--coreset-ratio", "0.1", "--max-ms-per-image", "100000", "--run-dir", run)
    model = AnomalyModel.load(run / "model.safetensors")
    choice = model.config["input_size"]
    trials = [Trial(**t) for t in choice["trials"]]
    assert [t.size for t in trials] == [320, SIZE]
    assert all(t.ms_per_image > 0 and t.fit_seconds > 0 and t.bank_patches > 0 for t in trials)  # timed: there are two to weigh
    assert choice["chosen"] == _choose(trials, choice["max_ms_per_image"]).size == model.config["image_size"]
    text = " ".join(result.output.split())
    assert f"input size {choice['chosen']} px" in text and "320 px: out-of-fold AUROC" in text and f"{SIZE} px: out-of-fold AUROC" in text

    # The chosen model downstream: the exported file scores as the model does, and predict's masks are in the images' own pixels.
    onnx = tmp_path / "model.onnx"
    run_cli("export", run / "model.safetensors", "--out", onnx)
    for path, out in ((run / "model.safetensors", "a.csv"), (onnx, "b.csv")):
        run_cli("predict", path, dotted / "dot", "--output", tmp_path / out, "--masks", tmp_path / f"masks-{out}")
    scores = [[float(row["score"]) for row in csv.DictReader(open(tmp_path / out))] for out in ("a.csv", "b.csv")]
    assert len(scores[0]) == 6 and np.allclose(scores[0], scores[1], atol=1e-3)
    masks = sorted((tmp_path / "masks-a.csv").glob("*.png"))
    assert masks and all(Image.open(m).size == (SIZE, SIZE) for m in masks)


def test_a_larger_size_over_the_time_budget_is_not_fitted_and_the_line_says_so(dotted, tmp_path):
    result = run_cli("train", dotted, "--cv-folds", "3", "--coreset-ratio", "0.1", "--max-ms-per-image", "0.01", "--run-dir", tmp_path / "run")
    choice = json.loads(json.dumps(AnomalyModel.load(tmp_path / "run" / "model.safetensors").config["input_size"]))
    assert choice["chosen"] == 320 and [t["size"] for t in choice["trials"]] == [320]
    assert f"input size {SIZE} px not tried" in " ".join(result.output.split())
    assert f"the only size fitted; {SIZE} px not tried: about" in choice["why"]


def test_the_rule_keeps_a_larger_size_only_where_it_ranks_better_and_catches_as_many_at_the_default_point():
    base = Trial(320, 0.95, 0.90, 0.05, 40.0, 10.0, 100, recall_at_default_point=0.90)
    larger = dict(recall=0.85, false_alarms=0.03, ms_per_image=90.0, fit_seconds=30.0, bank_patches=250)  # its own point: no matter
    assert _choose([base, Trial(512, 0.97, **larger, recall_at_default_point=0.92)], 250).size == 512
    assert _choose([base, Trial(512, 0.97, **larger, recall_at_default_point=0.90)], 250).size == 512  # as many
    assert _choose([base, Trial(512, 0.97, **larger, recall_at_default_point=0.875)], 250).size == 320  # ranks better, catches fewer there
    assert _choose([base, Trial(512, 0.94, **larger, recall_at_default_point=0.95)], 250).size == 320  # catches more, ranks worse
    assert _choose([base, Trial(512, 0.97, **{**larger, "ms_per_image": 300.0}, recall_at_default_point=0.95)], 250).size == 320  # over the budget


def test_recall_at_a_false_alarm_rate_counts_the_defects_above_the_goods_it_lets_through():
    class Calibration:
        labels = [0] * 10 + [1] * 4
        scores = [float(i) for i in range(10)] + [9.5, 8.5, 7.5, 2.0]  # goods 0..9

    model = type("Model", (), {"calibration": Calibration})()
    assert recall_at(model, 0.0) == 0.25  # above 9: only 9.5
    assert recall_at(model, 0.1) == 0.5  # one good may pass (9): above 8
    assert recall_at(model, 0.25) == 0.75  # two goods: above 7
