"""The turned copies a few goods are learnt from (workflows/turned_goods.py): they are the goods
turned, each no larger than the fit's input needs, and they leave with the fit."""

from __future__ import annotations

import numpy as np
from PIL import Image

from anomalycli.data.images import load_image, open_image, resized_array
from anomalycli.data.layouts import Sample
from anomalycli.data.orientation import turned_copies
from anomalycli.workflows.turned_goods import COPY_DETAIL, shrunk, turned_goods
from tests.test_orientation import key, write_parts


def test_a_large_image_is_shrunk_to_what_the_input_needs_and_a_small_one_is_kept():
    large = Image.new("L", (1000, 600), 90)
    assert shrunk(large, 100).size == (333, COPY_DETAIL * 100)
    small = Image.new("L", (150, 120), 90)
    assert shrunk(small, 100) is small


def test_copies_of_large_goods_are_small_and_read_as_the_full_size_goods_turned(tmp_path):
    rng = np.random.default_rng(3)
    size, input_size = 480, 64
    write_parts(tmp_path / "goods", [key(rng.uniform(0, 360), rng, size=size) for _ in range(6)])
    goods = [Sample(path=p, class_name="good", label=0) for p in sorted((tmp_path / "goods").glob("*.png"))]
    with turned_goods(goods, "free", input_size) as turned:
        copies = turned.samples[len(goods) :]
        assert turned.turns > 1 and len(copies) == len(goods) * (turned.turns - 1)
        folder = copies[0].path.parent
        for copy in copies[: turned.turns - 1]:  # the first good's
            written = open_image(copy.path)
            assert min(written.size) == COPY_DETAIL * input_size and written.mode == "L"  # a grey good's copies stay grey
        # What the fit reads of a copy is what it would read of the full-size good turned.
        full = turned_copies(load_image(goods[0].path), turned.turns, False)[1:]
        for copy, expected in zip(copies, full):
            difference = np.abs(resized_array(load_image(copy.path), input_size).astype(int) - resized_array(expected, input_size).astype(int))
            assert difference.mean() < 2.0, difference.mean()
    assert not folder.exists()
