from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from anomalycli import runtime

runtime.idle_threads_sleep()  # as the anomaly command does, before PyTorch starts: the workers of pytest -n share the cores
# A wide terminal for the CLI's console, made when it is imported: pytest -n's workers get COLUMNS=80,
# where a long temporary path was folded mid-word in the lines the tests read.
os.environ["COLUMNS"] = "400"

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from anomalycli.cli import app  # noqa: E402
from anomalycli.data.synthetic import make_dataset  # noqa: E402
from anomalycli.deploy.station.config import read as read_station  # noqa: E402
from anomalycli.workflows.station import Station  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def parts(tmp_path_factory):
    """Class folders good/ (24) and not-good/ (scratch and spot, 6 each), 64 px, with masks."""
    return make_dataset(tmp_path_factory.mktemp("data") / "parts", n_good=24, n_per_defect=6, size=64, masks=True)


@pytest.fixture(scope="session")
def new_parts(tmp_path_factory):
    """Parts made as ``parts`` are, other images of them: labelled images from the line that the
    models trained on ``parts`` never saw (calibrate leaves out images a model was trained on)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "new_parts", n_good=24, n_per_defect=6, size=64, seed=1, masks=True)


def run_cli(*args: str, expect: int | None = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, result.output + repr(result.exception)
    return result


def one_clear_line(result) -> str:
    """The error output: exactly one 'error:' line and no traceback."""
    text = result.output
    assert "Traceback" not in text
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return re.sub(r"\s+", " ", text[text.index("error:") :])


@pytest.fixture(scope="session")
def patchcore_model(parts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "pc"
    run_cli("train", parts, "--method", "patchcore", "--image-size", "64", "--run-dir", run, "--coreset-ratio", "0.1")
    return run / "model.safetensors"


@pytest.fixture(scope="session")
def classifier_model(parts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "clf"
    run_cli("train", parts, "--method", "classifier", "--weights", "none", "--image-size", "64", "--epochs", "2", "--batch-size", "16", "--run-dir", run)
    return run / "model.safetensors"


@pytest.fixture(scope="session")
def hybrid_model(parts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "hybrid"
    run_cli("train", parts, "--method", "hybrid", "--image-size", "64", "--cv-folds", "3", "--coreset-ratio", "0.1", "--run-dir", run)
    return run / "model.safetensors"


@pytest.fixture
def exact_search(monkeypatch):
    """The bank search in float32 on any CPU, for the tests of identities that an int8 or bfloat16
    search holds to about 0.5 % only (test_bank_search checks that bound)."""
    from anomalycli.detection import bank_search

    monkeypatch.setattr(bank_search, "search_kind", lambda device: "float32")


@pytest.fixture
def running_station():
    """A station started in this process from a station file; stopped after the test."""
    started = []

    def start(path: Path) -> Station:
        said: list[str] = []
        station = Station(read_station(path), say=said.append)
        station.said = said
        station.start()
        stop = threading.Event()
        thread = threading.Thread(target=station.run, args=(stop,), daemon=True)
        thread.start()
        started.append((station, stop, thread))
        station.stop_running = lambda: (stop.set(), thread.join(30), station.close())  # as the test's end does
        return station

    yield start
    for station, stop, thread in started:
        stop.set()
        thread.join(30)
        station.close()
