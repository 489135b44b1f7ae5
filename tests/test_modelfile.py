import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from anomalycli import modelfile
from anomalycli.detection.methods import AnomalyModel
from anomalycli.errors import UserError


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_round_trip(tmp_path):
    path = modelfile.save(tmp_path / "m.safetensors", {"w": torch.arange(6.0).view(2, 3)}, {"method": "x"})
    tensors, meta = modelfile.load(path)
    assert torch.equal(tensors["w"], torch.arange(6.0).view(2, 3))
    assert meta["method"] == "x" and meta["format_version"] == modelfile.BASE_FORMAT_VERSION  # no scoring graph: every version reads it


def test_pickle_payload_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weights": Boom()}))
    with pytest.raises(UserError, match="not an anomalycli model"):
        AnomalyModel.load(path)
    assert not (tmp_path / "PWNED").exists()
    torch.save({"x": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(UserError):
        AnomalyModel.load(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_truncated_newer_and_foreign_files(tmp_path, patchcore_model):
    data = patchcore_model.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="damaged"):
        AnomalyModel.load(tmp_path / "cut.safetensors")

    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="no anomalycli metadata"):
        AnomalyModel.load(tmp_path / "foreign.safetensors")

    save_file({"w": torch.zeros(1)}, str(tmp_path / "new.safetensors"), metadata={"anomalycli": json.dumps({"format_version": 99})})
    with pytest.raises(UserError, match="newer"):
        AnomalyModel.load(tmp_path / "new.safetensors")

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"anomalycli": json.dumps({"format_version": 1, "method": "magic"})})
    with pytest.raises(UserError, match="method 'magic'"):
        AnomalyModel.load(tmp_path / "other.safetensors")


def test_loaded_model_scores_identically(parts, patchcore_model):
    from anomalycli.data.layouts import discover
    from anomalycli.data.tensors import load_all

    images, _, _ = load_all(discover(parts).samples[:8], 64)
    first, second = AnomalyModel.load(patchcore_model), AnomalyModel.load(patchcore_model)
    scores_a, maps_a = first.score(images)
    scores_b, maps_b = second.score(images)
    assert torch.equal(scores_a, scores_b) and torch.equal(maps_a, maps_b)


def test_model_file_with_unfolded_batch_norm_loads_and_scores_the_same(tmp_path, parts, patchcore_model, exact_search):
    """Files written before batch norm was folded hold every BatchNorm2d; they must keep working."""
    from anomalycli.data.layouts import discover
    from anomalycli.data.tensors import load_all
    from anomalycli.detection import backbones, int8_backbone
    from anomalycli.detection.methods.patchcore import PatchCore

    folded = AnomalyModel.load(patchcore_model)
    assert folded.config["batch_norm_folded"]
    name = folded.config["backbone"]
    unfolded_net = PatchCore(backbones.FeatureExtractor(name, backbones.build(name, "imagenet"), fold=False), folded.net.bank)
    old_config = {k: v for k, v in folded.config.items() if k not in ("batch_norm_folded", "precision", "int8")}
    folded.net.extractor = int8_backbone.int8_of(folded.net).fp32  # the fp32 backbone, as those files had
    old_file = AnomalyModel("patchcore", unfolded_net, old_config, folded.calibration).save(tmp_path / "old.safetensors")
    assert any("running_var" in key for key in modelfile.load(old_file)[0])

    images, _, _ = load_all(discover(parts).samples[:8], 64)
    old_scores, old_maps = AnomalyModel.load(old_file).score(images)
    scores, maps = folded.score(images)
    torch.testing.assert_close(old_scores, scores, rtol=1e-4, atol=1e-4)
    # Map values near zero come from sqrt of a small difference of large sums: rounding shows there.
    torch.testing.assert_close(old_maps, maps, rtol=0, atol=0.01 * maps.max().item())


def test_a_model_file_names_no_python_module_so_files_outlive_the_package_layout(patchcore_model, hybrid_model):
    """A file holds tensors and JSON only, never a module or class to import by name (as a pickle
    would): files written before the package moved into sub-packages load as they did."""
    import json

    for path in (patchcore_model, hybrid_model):
        text = json.dumps(modelfile.read_meta(path))
        assert "anomalycli." not in text and "__module__" not in text and "__class__" not in text
        assert not [name for name in modelfile.raw_tensors(path) if "anomalycli." in name]
