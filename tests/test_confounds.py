"""Goods and defects taken differently (data/confounds.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from anomalycli.data.confounds import Taken, differences, taken_differently
from anomalycli.data.synthetic import make_dataset
from tests.conftest import run_cli


def test_each_group_mostly_one_way_and_the_ways_differ_is_a_difference():
    line = Taken("256x256", "L", "lossless")
    goods = [line] * 19 + [Taken("256x256", "L", "JPEG q90")]
    assert differences(goods, [Taken("200x200", "RGB", "JPEG q85")] * 10) == [
        "size: the good images 256x256 (20 of 20), the defective ones 200x200 (10 of 10)",
        "mode: the good images L (20 of 20), the defective ones RGB (10 of 10)",
        "saved as: the good images lossless (19 of 20), the defective ones JPEG q85 (10 of 10)",
    ]
    assert differences(goods, [line] * 10) == [], "taken as the goods are"
    assert differences(goods, [line] * 5 + [Taken("200x200", "RGB", "JPEG q85")] * 5) == [], "half taken as the goods are: no single other way"
    assert differences([Taken(f"{w}x300", "L", "lossless") for w in range(200, 220)], [Taken("230x300", "L", "lossless")] * 3) == [], (
        "goods of many sizes (tiles) are no one way"
    )


def test_inspect_train_and_eval_say_so_and_a_data_set_taken_alike_gets_no_word(tmp_path):
    data = make_dataset(tmp_path / "alike", n_good=12, n_per_defect=3, size=48, masks=False)
    assert "taken differently" not in run_cli("inspect", data).output
    for defect in (data / "not-good").rglob("*.png"):  # photographed again and saved by another program
        Image.fromarray(np.asarray(Image.open(defect).convert("RGB"))).resize((40, 40)).save(defect.with_suffix(".jpg"), quality=80)
        defect.unlink()
    said = " ".join(run_cli("inspect", data).output.split())
    assert "warning: the good and the defective images were taken differently (size: the good images 48x48 (12 of 12), the defective ones 40x40" in said
    assert "saved as: the good images lossless (12 of 12), the defective ones JPEG q80" in said
    assert taken_differently(sorted((data / "good").glob("*.png")), sorted((data / "not-good").rglob("*.jpg")))
    trained = run_cli("train", data, "--method", "patchcore", "--image-size", "48", "--coreset-ratio", "0.2", "--run-dir", tmp_path / "run")
    assert "taken differently" in trained.output
    assert "taken differently" in run_cli("eval", tmp_path / "run", data).output
