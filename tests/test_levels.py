"""Whether each image's levels are stretched, measured from the goods: surfaces under varied light
are stretched, parts under one light are not, the user decides where asked; and end to end, a model
that stretches judges a good surface under another exposure as it judges the surface."""

from __future__ import annotations

import numpy as np
from PIL import Image

from anomalycli.data.levels import AS_IS, STRETCH, goods_sample, levels, levels_of, stretched
from anomalycli.workflows.train import TrainOptions, train
from tests.conftest import one_clear_line, run_cli

SIZE = 64


def surface(rng: np.random.Generator, brightness: float, contrast: float) -> Image.Image:
    """A grainy surface (smoothed noise) at a brightness and contrast."""
    grain = rng.normal(0, 1, (SIZE // 4, SIZE // 4))
    grain = np.kron(grain, np.ones((4, 4))) + 0.5 * rng.normal(0, 1, (SIZE, SIZE))
    return Image.fromarray(np.clip(brightness + contrast * grain, 0, 255).astype(np.uint8), "L")


def test_goods_under_varied_light_are_stretched_and_goods_under_one_light_are_not():
    rng = np.random.default_rng(0)
    varied = levels([surface(rng, rng.uniform(60, 200), rng.uniform(8, 30)) for _ in range(8)])
    assert varied.kind == STRETCH and "varies" in varied.reason
    steady = levels([surface(rng, 120, 20) for _ in range(8)])
    assert steady.kind == AS_IS and "share one exposure" in steady.reason


def test_the_user_decides_where_asked_one_good_stays_as_it_is_and_old_models_are_as_is():
    rng = np.random.default_rng(1)
    steady = [surface(rng, 120, 20) for _ in range(4)]
    assert levels(steady, STRETCH).kind == STRETCH
    assert levels([surface(rng, 60, 8), surface(rng, 200, 30)], AS_IS).kind == AS_IS
    assert levels(steady[:1]).kind == AS_IS
    assert levels_of({}) == AS_IS and not stretched({})
    assert stretched({"levels": {"kind": STRETCH, "reason": ""}})


def test_the_goods_measured_are_spread_over_all_of_them():
    paths = list(range(1000))
    picked = goods_sample(paths, most=10)
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] >= 900
    assert goods_sample(paths[:3], most=10) == [0, 1, 2]


def _write(folder, images):
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:02d}.png")


def test_a_stretching_model_judges_a_good_surface_under_another_exposure_as_the_surface(tmp_path):
    # Goods photographed under varied light; a new good under a dim, flat light none of them had.
    rng = np.random.default_rng(2)
    _write(tmp_path / "data" / "good", [surface(rng, b, c) for b, c in zip(np.linspace(90, 170, 12), np.linspace(14, 26, 12))])
    dim = surface(np.random.default_rng(3), 45, 7)
    dim.save(tmp_path / "dim.png")
    scores = {}
    for wanted in ("auto", "as-is"):
        options = TrainOptions(data=str(tmp_path / "data"), method="patchcore", image_size=SIZE, levels=wanted, run_dir=str(tmp_path / wanted), seed=0)
        model = train(options, show_progress=False).model
        scores[wanted] = model.calibration.normalise(float(model.score(np.array(dim.convert("RGB")).transpose(2, 0, 1)[None].copy())[0][0]))
        assert model.config["levels"]["kind"] == (STRETCH if wanted == "auto" else AS_IS)
    # Calibrated scores: 0.5 at the threshold. Stretched, the dim good is a good; as it is, a defect.
    assert scores["auto"] < 0.5 < scores["as-is"]


def test_levels_for_the_classifier_is_one_clear_line(tmp_path):
    rng = np.random.default_rng(4)
    _write(tmp_path / "data" / "good", [surface(rng, 120, 20) for _ in range(4)])
    line = one_clear_line(run_cli("train", tmp_path / "data", "--method", "classifier", "--levels", "stretch", expect=2))
    assert "--levels is for patchcore and hybrid" in line
