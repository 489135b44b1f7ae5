"""The size rule: small regions do not make a part defective, alike in calibrate, eval, predict,
the exported file and the line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomalycli.errors import UsageError
from anomalycli.judgement.size_rule import parse_area, passed_by_size, sized_scores
from anomalycli.judgement.thresholds import OperatingRule, calibrate
from tests.conftest import one_clear_line, run_cli


def test_a_part_is_passed_only_when_it_has_regions_and_every_one_is_small():
    assert passed_by_size([0.0, 10.0, 49.9, 50.0, 400.0], 50).tolist() == [False, True, True, False, False]
    scores = sized_scores([3.0, 5.0, 9.0], [0.0, 10.0, 80.0], 50)
    assert scores.tolist() == [3.0, 2.0, 9.0]  # the passed part scores below every part
    assert sized_scores([3.0, 5.0], [0.0, 10.0], 0).tolist() == [3.0, 5.0]


def test_areas_parse_in_pixels_or_in_square_millimetres():
    assert parse_area("50", None) == 50 and parse_area("50px", None) == 50
    assert parse_area("0.2mm2", 0.1) == pytest.approx(20.0) and parse_area("0.2 mm²", 0.1) == pytest.approx(20.0)
    with pytest.raises(UsageError, match="pixel size"):
        parse_area("0.2mm2", None)
    with pytest.raises(UsageError, match="such as 50"):
        parse_area("big", None)


def test_the_threshold_and_the_announced_point_are_chosen_for_the_rule():
    # Two of the five defects have only small regions: under the rule no threshold catches them.
    labels = [0] * 10 + [1] * 5
    scores = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9] + [3.0, 3.1, 3.2, 3.3, 3.4]
    areas = [0.0] * 10 + [20.0, 30.0, 500.0, 600.0, 700.0]
    plain, _ = calibrate(labels, scores, OperatingRule(), "test", areas=areas)
    sized, _ = calibrate(labels, scores, OperatingRule(), "test", areas=areas, min_area_px=100)
    assert plain.expected["recall"] == pytest.approx(1.0) and plain.min_area_px == 0
    assert sized.expected["recall"] == pytest.approx(0.6) and sized.min_area_px == 100 and "under 100 px" in sized.rule
    # What is stored is the raw scores and areas: the rule can be moved again without images.
    assert sized.scores == scores and sized.areas == areas and (sized.low, sized.high) == (1.0, 3.4)


def _verdicts(path) -> dict:
    return {row["path"]: (row["verdict"], row.get("passed_by_size", False)) for row in json.loads(path.read_text())["images"]}


def _raw_scores(path) -> dict:
    return {row["path"]: row["raw_score"] for row in json.loads(path.read_text())["images"]}


def test_min_area_changes_verdicts_alike_in_predict_eval_the_exported_file_and_the_line(parts, patchcore_model, tmp_path, exact_search):
    from anomalycli.data.images import read_image_array
    from anomalycli.deploy.line import Line
    from anomalycli.detection.methods import AnomalyModel

    stored = AnomalyModel.load(patchcore_model).calibration
    defect_areas = sorted(a for a, label in zip(stored.areas, stored.labels) if label == 1 and a > 0)
    assert len(defect_areas) >= 8  # most training defects have a region
    min_area = defect_areas[len(defect_areas) // 2]  # half the defects are smaller
    sized = tmp_path / "sized.safetensors"
    result = run_cli("calibrate", patchcore_model, "--min-area", f"{min_area:g}px", "--out", sized)
    assert f"every defect region is under {min_area:g} px is passed" in " ".join(result.output.split())
    model = AnomalyModel.load(sized)
    n_passed = sum(0 < a < min_area for a in defect_areas)  # whatever the threshold: no region big enough
    assert model.calibration.min_area_px == min_area and model.calibration.expected["recall"] <= (12 - n_passed) / 12 + 1e-9

    run_cli("predict", patchcore_model, parts, "--output", tmp_path / "plain.json")
    run_cli("predict", sized, parts, "--output", tmp_path / "sized.json")
    by_size = _verdicts(tmp_path / "sized.json")
    raw = _raw_scores(tmp_path / "sized.json")
    assert raw == _raw_scores(tmp_path / "plain.json")  # the rule moves verdicts, not scores
    passed = [p for p, (verdict, was_passed) in by_size.items() if was_passed]
    assert passed and all(by_size[p][0] == "normal" and raw[p] >= model.calibration.threshold for p in passed)
    # The rest: the score against the threshold, which calibrate may have moved for the rule (the
    # defects it passes no longer hold it down).
    assert all(by_size[p][0] == ("anomaly" if raw[p] >= model.calibration.threshold else "normal") for p in by_size if p not in passed)

    run_cli("export", sized, "--out", tmp_path / "sized.onnx")
    run_cli("predict", tmp_path / "sized.onnx", parts, "--output", tmp_path / "onnx.json")
    assert _verdicts(tmp_path / "onnx.json") == by_size

    run_cli("eval", sized, parts, "--json", tmp_path / "eval.json")
    report = json.loads((tmp_path / "eval.json").read_text())
    n_defects = sum(p.split("/")[-2] == "not-good" for p in by_size)
    caught = sum(verdict == "anomaly" and p.split("/")[-2] == "not-good" for p, (verdict, _) in by_size.items())
    assert report["min_area_px"] == min_area and report["operating_point"]["recall"] == pytest.approx(caught / n_defects)

    line = Line(sized)
    paths = sorted(by_size)
    images = np.stack([read_image_array(p, 64).transpose(2, 0, 1) for p in paths])
    judged, _ = line.judge(paths, images, [""] * len(paths), [0.0] * len(paths), [(64, 64)] * len(paths))
    assert {j.name: (j.verdict, j.scored.passed_by_size) for j in judged} == by_size


def test_size_rule_mistakes_are_one_line(parts, patchcore_model, classifier_model, tmp_path):
    line = one_clear_line(run_cli("calibrate", patchcore_model, "--min-area", "0.2mm2", "--out", tmp_path / "a.safetensors", expect=2))
    assert "--pixel-size" in line
    line = one_clear_line(run_cli("calibrate", classifier_model, "--min-area", "50", "--out", tmp_path / "b.safetensors", expect=1))
    assert "no pixel threshold" in line
    line = one_clear_line(run_cli("calibrate", patchcore_model, "--pixel-fpr", "0.01", "--out", tmp_path / "c.safetensors", expect=1))
    assert "give DATA" in line
    assert "--pixel-fpr" in one_clear_line(run_cli("calibrate", patchcore_model, "--pixel-fpr", "2", expect=2))


def test_a_new_pixel_threshold_on_data_moves_the_regions_and_their_areas(new_parts, patchcore_model, tmp_path):
    from anomalycli.detection.methods import AnomalyModel

    old = AnomalyModel.load(patchcore_model)
    run_cli("calibrate", patchcore_model, new_parts, "--pixel-fpr", "0.05", "--out", tmp_path / "loose.safetensors")
    new = AnomalyModel.load(tmp_path / "loose.safetensors")
    assert new.config["pixel_threshold"]["value"] < old.config["pixel_threshold"]["value"]
    assert new.config["pixel_threshold"]["false_positive_rate"] == 0.05 and str(new_parts) in new.config["pixel_threshold"]["rule"]
    assert len(new.calibration.areas) == len(new.calibration.scores) == 36
    # A lower pixel threshold makes each defect's largest region larger.
    defects = [(a, label) for a, label in zip(new.calibration.areas, new.calibration.labels) if label == 1]
    assert sum(a for a, _ in defects) > sum(a for a, label in zip(old.calibration.areas, old.calibration.labels) if label == 1)
