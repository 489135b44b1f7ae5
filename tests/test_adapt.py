import shutil

import numpy as np
import torch
from PIL import Image, ImageEnhance

from anomalycli.data.layouts import Sample
from anomalycli.data.synthetic import make_part
from anomalycli.detection.methods import AnomalyModel
from anomalycli.detection.methods.patchcore import PatchCore
from anomalycli.detection.methods.patchcore_fitting import embed_images, score_all
from anomalycli.workflows.adapt import adapt
from tests.conftest import one_clear_line, run_cli


def _darker_line(folder, n, seed):
    """New good parts of the synthetic line, photographed darker."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        ImageEnhance.Brightness(make_part(64, rng)[0]).enhance(0.6).save(folder / f"new{i:03d}.png")
    return folder


def test_adapt_writes_a_new_model_that_flags_fewer_new_goods_and_leaves_the_input_byte_identical(patchcore_model, parts, tmp_path):
    before = patchcore_model.read_bytes()
    # 60 later parts: the drift check calls drift on the scores alone, which on a batch of 20 have little power.
    new_goods, later = _darker_line(tmp_path / "new", 10, seed=11), _darker_line(tmp_path / "later", 60, seed=12)
    flagged_before = run_cli("predict", patchcore_model, later, "--output", tmp_path / "before.csv").output
    result = run_cli("adapt", patchcore_model, new_goods, "--out", tmp_path / "adapted.safetensors")
    assert patchcore_model.read_bytes() == before
    assert "10 new good images joined the memory bank" in result.output and "expected on the new line" in result.output
    assert "if some are defective parts" not in result.output  # flagged, but the light changed: a changed line
    flagged_after = run_cli("predict", tmp_path / "adapted.safetensors", later, "--output", tmp_path / "after.csv").output
    count = lambda text: int(text.split(" of 60 images flagged")[0].split()[-1])  # noqa: E731
    assert count(flagged_after) < count(flagged_before)
    assert "drift:" in flagged_before and "drift:" not in flagged_after
    # Defects of the synthetic line are still caught by the adapted model.
    caught = run_cli("predict", tmp_path / "adapted.safetensors", parts / "not-good").output
    assert count(caught.replace(" of 12 images", " of 60 images")) >= 9


def test_new_goods_are_never_scored_by_a_bank_that_holds_them(hybrid_model, tmp_path):
    model = AnomalyModel.load(hybrid_model)
    paths = sorted(_darker_line(tmp_path / "new", 7, seed=3).glob("*.png"))
    result = adapt(model, [Sample(p, "good", 0) for p in paths])
    adapted = result.model.net.patchcore
    parts = list(torch.split(adapted.bank, result.model.config["bank_parts"]))
    assert sum(len(p) for p in parts) > model.net.patchcore.bank.shape[0]
    features, descriptors, _, _, _ = embed_images(adapted.extractor, paths, model.config["image_size"], with_descriptors=True)
    head = result.model.net.head(descriptors)
    whole_bank = score_all(PatchCore(adapted.extractor, adapted.bank, score_blur=adapted.score_blur), features)
    for f in np.unique(result.folds):
        mine = result.folds == f
        without = PatchCore(adapted.extractor, torch.cat([p for i, p in enumerate(parts) if i != f]), score_blur=adapted.score_blur)
        expected = result.model.net.fuse(score_all(without, features[mine]), head[mine])
        assert torch.allclose(torch.from_numpy(result.out_of_fold[mine]).float(), expected.float(), atol=1e-4)
        # The bank that holds their own patches scores them lower: it was not used.
        fused_in_bank = result.model.net.fuse(whole_bank[mine], head[mine])
        assert (fused_in_bank < expected - 1e-6).all()


def _varied_parts(folder, n, seed, defect=None):
    """Synthetic parts whose light, contrast and noise vary from image to image, as a real line's do."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = ImageEnhance.Brightness(make_part(64, rng, defect)[0]).enhance(rng.uniform(0.8, 1.2))
        pixels = np.asarray(ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2)), dtype=np.float32)
        Image.fromarray(np.clip(pixels + rng.normal(0, rng.uniform(0, 5), pixels.shape), 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_adapt_warns_when_the_good_images_it_is_given_are_flagged_yet_look_like_the_training_goods(tmp_path):
    goods = _varied_parts(tmp_path / "data" / "good", 24, seed=0)
    run_cli("train", goods.parent, "--method", "patchcore", "--image-size", "64", "--run-dir", tmp_path / "run", "--coreset-ratio", "0.1")
    model = tmp_path / "run" / "model.safetensors"
    # Defective parts of the same line in the folder of goods: flagged, with the training goods' light and focus.
    spots = run_cli("adapt", model, _varied_parts(tmp_path / "spots", 8, seed=1, defect="spot"), "--out", tmp_path / "a.safetensors")
    assert "the model flags 100% of these good images, yet they are as bright, contrasted and sharp as its training goods" in spots.output
    assert "if some are defective parts, the adapted model passes such defects" in spots.output
    more_goods = run_cli("adapt", model, _varied_parts(tmp_path / "more", 8, seed=2), "--out", tmp_path / "b.safetensors")
    assert "if some are defective parts" not in more_goods.output


def test_adapt_mistakes_are_one_clear_line(patchcore_model, classifier_model, tmp_path):
    few = _darker_line(tmp_path / "few", 3, seed=5)
    assert "at least 5 good images" in one_clear_line(run_cli("adapt", patchcore_model, few, expect=1))
    assert "has none" in one_clear_line(run_cli("adapt", classifier_model, few, expect=1))
    enough = _darker_line(tmp_path / "enough", 6, seed=6)
    assert "adapt never replaces it" in one_clear_line(run_cli("adapt", patchcore_model, enough, "--out", patchcore_model, expect=1))
    assert "give the new line's good images" in one_clear_line(run_cli("adapt", patchcore_model, expect=2))


def test_adapt_takes_labelled_defects_of_the_new_line_and_a_path_list(patchcore_model, tmp_path):
    line = tmp_path / "line"
    _darker_line(line / "good", 8, seed=21)
    rng = np.random.default_rng(22)
    (line / "scratch").mkdir()
    for i in range(4):
        ImageEnhance.Brightness(make_part(64, rng, "scratch")[0]).enhance(0.6).save(line / "scratch" / f"s{i}.png")
    result = run_cli("adapt", patchcore_model, line, "--out", tmp_path / "a.safetensors")
    assert "8 new good images joined the memory bank" in result.output and "4 new defects" in result.output
    adapted = AnomalyModel.load(tmp_path / "a.safetensors")
    assert adapted.calibration.n_anomaly == AnomalyModel.load(patchcore_model).calibration.n_anomaly + 4
    listed = tmp_path / "goods.txt"
    listed.write_text("\n".join(f"good/{p.name}" for p in sorted((line / "good").glob("*.png"))))
    (tmp_path / "goods.txt").rename(line / "goods.txt")
    result = run_cli("adapt", patchcore_model, line / "goods.txt", "--out", tmp_path / "b.safetensors")
    assert "8 new good images joined the memory bank" in result.output


def test_adapt_and_calibrate_on_data_refuse_a_cpu_whose_int8_kernels_differ_from_training(patchcore_model, new_parts, tmp_path, monkeypatch):
    from anomalycli.detection import int8_backbone

    monkeypatch.setattr(int8_backbone.Int8Extractor, "probe_mismatch", lambda self: 0.05)
    enough = _darker_line(tmp_path / "enough", 6, seed=6)
    message = one_clear_line(run_cli("adapt", patchcore_model, enough, "--out", tmp_path / "a.safetensors", expect=1))
    assert "int8 kernels give other features" in message and not (tmp_path / "a.safetensors").exists()
    message = one_clear_line(run_cli("calibrate", patchcore_model, new_parts, "--target-recall", "0.9", "--out", tmp_path / "c.safetensors", expect=1))
    assert "a threshold chosen on DATA here would not hold" in message


def test_a_model_of_a_few_goods_adapted_with_more_goods_grows_its_bank_and_tightens_its_threshold(tmp_path):
    from anomalycli.workflows.train import TrainOptions, train
    from tests.test_orientation import key

    rng = np.random.default_rng(6)
    (tmp_path / "first" / "good").mkdir(parents=True)
    for i in range(4):
        key(rng.uniform(0, 360), rng, size=64).save(tmp_path / "first" / "good" / f"{i}.png")
    few = train(TrainOptions(data=str(tmp_path / "first"), method="patchcore", image_size=64, run_dir=str(tmp_path / "run")), show_progress=False).model
    more = []
    for i in range(12):
        more.append(tmp_path / f"more{i}.png")
        key(rng.uniform(0, 360), rng, size=64).save(more[-1])
    grown = adapt(few, [Sample(p, "good", 0) for p in more]).model
    assert grown.config["bank_size"] > few.config["bank_size"]
    before, after = few.calibration.expected["false_alarm_rate_ci"], grown.calibration.expected["false_alarm_rate_ci"]
    assert after[1] - after[0] < before[1] - before[0]  # 16 goods say more than 4 about the threshold
    assert grown.calibration.n_normal == 16 and grown.calibration.n_anomaly == 0
    # It grows as a fit on all 16 would: the new keys learnt turned too, and the bank at the rule's
    # size for 16 goods (4 keys at 24 turns kept every patch; 16 keep a third of theirs).
    for path in more:
        shutil.copy(path, tmp_path / "first" / "good")
    at_once = train(TrainOptions(data=str(tmp_path / "first"), method="patchcore", image_size=64, run_dir=str(tmp_path / "all")), show_progress=False).model
    assert few.config["coreset_ratio"] == 1.0 and grown.config["coreset_ratio"] == at_once.config["coreset_ratio"] < 0.5
    assert grown.config["orientation"]["turns"] == at_once.config["orientation"]["turns"] == 24
    assert grown.config["orientation"]["views"] == at_once.config["orientation"]["views"] == 16 * 24
    assert abs(grown.config["bank_size"] - at_once.config["bank_size"]) <= len(grown.config["bank_parts"])


def test_adapt_counts_the_views_its_bank_learnt_across_adaptations_at_other_turns():
    from types import SimpleNamespace

    from anomalycli.data.orientation import FREE
    from anomalycli.workflows.adapt import _bank_growth

    free = {"kind": FREE, "mirrored": False, "spread_degrees": 180.0, "reason": "", "turns": 4}
    # 16 goods learnt at 24 turns, then 80 at 4: the stored count is what the next share is of.
    adapted_once = SimpleNamespace(
        config={"orientation": {**free, "views": 16 * 24 + 80 * 4}, "coreset_ratio": 0.1, "coreset_ratio_given": None},
        calibration=SimpleNamespace(labels=[0] * 96),
    )
    growth = _bank_growth(adapted_once, 10, 100)
    assert (growth.turns, growth.views) == (3, 16 * 24 + 80 * 4 + 10 * 3)
    # A file from before the count: each good at the turns it keeps, mirrored copies doubling them.
    older = SimpleNamespace(
        config={"orientation": {**free, "mirrored": True}, "coreset_ratio": 0.1, "coreset_ratio_given": None}, calibration=SimpleNamespace(labels=[0] * 96)
    )
    assert _bank_growth(older, 10, 100).views == 2 * (96 * 4 + 10 * 3)
    assert (
        growth.ratio
        < _bank_growth(
            SimpleNamespace(config={"orientation": free, "coreset_ratio": 0.1, "coreset_ratio_given": None}, calibration=adapted_once.calibration), 10, 100
        ).ratio
    )


def test_adapt_keeps_the_share_of_patches_the_user_gave_train(tmp_path):
    from anomalycli.workflows.train import TrainOptions, train
    from tests.test_orientation import key

    rng = np.random.default_rng(7)
    (tmp_path / "first" / "good").mkdir(parents=True)
    for i in range(4):
        key(rng.uniform(-3, 3), rng, size=64).save(tmp_path / "first" / "good" / f"{i}.png")
    options = TrainOptions(data=str(tmp_path / "first"), method="patchcore", image_size=64, run_dir=str(tmp_path / "run"), coreset_ratio=0.5)
    few = train(options, show_progress=False).model
    more = []
    for i in range(8):
        more.append(tmp_path / f"more{i}.png")
        key(rng.uniform(-3, 3), rng, size=64).save(more[-1])
    grown = adapt(few, [Sample(p, "good", 0) for p in more]).model
    assert few.config["orientation"]["turns"] == grown.config["orientation"]["turns"] == 1  # aligned keys: none turned
    assert grown.config["coreset_ratio"] == 0.5 and grown.config["bank_size"] == few.config["bank_size"] + 8 * 64 // 2


def test_adapt_says_how_its_bank_grew():
    from anomalycli.cli.adapt import _bank_change

    assert _bank_change({"bank_size": 5120, "coreset_ratio": 0.01}, {"bank_size": 5280, "coreset_ratio": 0.01}) == "5,120 -> 5,280 patches"
    grown = _bank_change({"bank_size": 6144, "coreset_ratio": 1.0}, {"bank_size": 8192, "coreset_ratio": 0.33, "orientation": {"turns": 24}})
    assert (
        grown
        == "6,144 -> 8,192 patches: 33% of all the goods' patches kept, as a fit on them all would; the new goods learnt at 24 orientations, as the model's were"
    )
    fewer_turns = _bank_change({"bank_size": 8192, "orientation": {"turns": 24}}, {"bank_size": 11264, "orientation": {"turns": 4}})
    assert fewer_turns.startswith("8,192 -> 11,264 patches; the new goods learnt at 4 orientations, the rule for this many goods, the first ones at 24:")
    assert "a fit on all of them at once would learn every good so and keep a smaller bank" in fewer_turns
    assert _bank_change({"bank_size": 8192, "coreset_ratio": 0.053}, {"bank_size": 8192, "coreset_ratio": 0.0133}).startswith(
        "8,192 -> 8,192 patches: 1.3% of all the goods' patches kept"
    )
    unturned = _bank_change({"bank_size": 8192, "orientation": {"turns": 4}}, {"bank_size": 9000, "orientation": {"turns": 1}})
    assert "the new goods learnt as they are, the rule for this many goods, the first ones at 4:" in unturned
