import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from anomalycli import modelfile
from anomalycli.errors import UserError
from anomalycli.methods import AnomalyModel


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_round_trip(tmp_path):
    path = modelfile.save(tmp_path / "m.safetensors", {"w": torch.arange(6.0).view(2, 3)}, {"method": "x"})
    tensors, meta = modelfile.load(path)
    assert torch.equal(tensors["w"], torch.arange(6.0).view(2, 3))
    assert meta["method"] == "x" and meta["format_version"] == modelfile.FORMAT_VERSION


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
    from anomalycli.data import discover, load_all

    images, _, _ = load_all(discover(parts).samples[:8], 64)
    first, second = AnomalyModel.load(patchcore_model), AnomalyModel.load(patchcore_model)
    scores_a, maps_a = first.score(images)
    scores_b, maps_b = second.score(images)
    assert torch.equal(scores_a, scores_b) and torch.equal(maps_a, maps_b)
