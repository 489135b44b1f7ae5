import os

import pytest

from anomalycli import project
from anomalycli.errors import UsageError, UserError


def _run(root, name, with_model=True, mtime=None):
    run = root / "runs" / name
    run.mkdir(parents=True)
    if with_model:
        (run / project.MODEL_NAME).write_bytes(b"model")
        if mtime is not None:
            os.utime(run / project.MODEL_NAME, (mtime, mtime))
    return run


def test_newest_model_is_the_largest_run_number_not_the_latest_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "train-2", mtime=2_000_000_000)  # written last
    _run(tmp_path, "train-10", mtime=1_000_000_000)
    _run(tmp_path, "train-11", with_model=False)  # interrupted: no model
    _run(tmp_path, "other-99")
    assert project.newest_model() == project.RUNS / "train-10" / project.MODEL_NAME


def test_no_run_yet_says_to_train_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="train one first"):
        project.newest_model()
    _run(tmp_path, "train-1", with_model=False)
    with pytest.raises(UserError, match="train one first"):
        project.newest_model()


def test_data_defaults_to_the_data_folder_only_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="create data/"):
        project.resolve_data(None)
    (tmp_path / "data").mkdir()
    assert project.resolve_data(None) == (project.DEFAULT_DATA, True)
    assert project.resolve_data("elsewhere") == (project.Path("elsewhere"), False)


def test_a_run_folder_means_its_model_file(tmp_path):
    run = _run(tmp_path, "train-1")
    assert project.model_file(run) == run / project.MODEL_NAME
    with pytest.raises(UserError, match="without model.safetensors; pass"):
        project.model_file(tmp_path)


def test_a_run_folder_given_alone_without_a_model_is_said_so_not_searched_for_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "train-1")
    unfinished = _run(tmp_path, "train-2", with_model=False)
    (unfinished / project.ARGS_NAME).write_text("{}")
    with pytest.raises(UserError, match=r"train-2 is a folder without model.safetensors \(a run that was interrupted or failed\)"):
        project.model_and_target([unfinished], None, "DATA")
    images = tmp_path / "images"  # a folder of images is still the target
    images.mkdir()
    assert project.model_and_target([images], None, "DATA") == (project.RUNS / "train-1" / project.MODEL_NAME, images, True)


@pytest.mark.parametrize(
    "args, option, expected",
    [
        (["imgs"], None, ("runs/train-1/model.safetensors", "imgs", True)),
        ([], None, ("runs/train-1/model.safetensors", None, True)),
        (["m.safetensors", "imgs"], None, ("m.safetensors", "imgs", False)),
        (["runs/train-1"], None, ("runs/train-1/model.safetensors", None, False)),
        (["imgs"], "m.safetensors", ("m.safetensors", "imgs", False)),
    ],
)
def test_model_and_target_reads_both_forms(tmp_path, monkeypatch, args, option, expected):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "train-1")
    path, target, newest = project.model_and_target([project.Path(a) for a in args], option and project.Path(option), "FOLDER")
    assert (str(path), target and str(target), newest) == expected


def test_model_given_twice_or_too_many_arguments_are_usage_errors(tmp_path):
    P = project.Path
    with pytest.raises(UsageError, match="either --model or MODEL"):
        project.model_and_target([P("a.safetensors"), P("imgs")], P("b.safetensors"), "FOLDER")
    with pytest.raises(UsageError, match="too many arguments"):
        project.model_and_target([P("a"), P("b"), P("c")], None, "FOLDER")
