import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from anomalycli.data import decoding
from anomalycli.data.decoding import DecodeAhead
from anomalycli.data.images import read_image_array
from anomalycli.data.tensors import image_batches


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (tmp_path / "cut.png").write_bytes(paths[0].read_bytes()[:60])
    return paths[:3] + [tmp_path / "cut.png"] + paths[3:]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_images_come_back_in_order_with_their_errors(files, workers):
    with DecodeAhead(files, 24, workers) as decoder:
        results = list(decoder)
    assert len(results) == len(files)
    for path, (pixels, error) in zip(files, results):
        if path.name == "cut.png":
            assert pixels is None and "cut.png" in error and "truncated" in error
        else:
            assert error == "" and np.array_equal(pixels, read_image_array(path, 24))


def test_decoding_stays_a_bounded_number_of_images_ahead(files):
    with DecodeAhead(files, 16, workers=1, ahead=3) as decoder:
        assert len(decoder._pending) == 3
        for _ in decoder:
            assert len(decoder._pending) <= 3


def test_a_worker_survives_ctrl_c_and_close_stops_the_workers(files):
    decoder = DecodeAhead(files, 16, workers=1, ahead=2)
    results = iter(decoder)
    first = [next(results)]  # the worker is up
    workers = list(decoder._pool._processes.values())
    os.kill(workers[0].pid, signal.SIGINT)  # Ctrl-C reaches the workers too; the main process decides
    assert sum(error == "" for _, error in first + list(results)) == len(files) - 1
    decoder.close()
    assert not any(worker.is_alive() for worker in workers)


def test_image_batches_take_a_decoder_already_started(files):
    fresh = list(image_batches(files, 16, batch_size=3, num_workers=0))
    started = list(image_batches(files, 16, batch_size=3, decoded=DecodeAhead(files, 16, workers=1)))
    assert [len(errors) for _, _, errors in started] == [3, 3, 2]
    for (images, indices, errors), (again, indices_again, errors_again) in zip(fresh, started):
        assert torch.equal(images, again) and torch.equal(indices, indices_again) and errors == errors_again
    assert started[1][0][0].eq(0).all() and "cut.png" in started[1][2][0], "an unreadable file is a zero image and its error"


INHERITED_GARBAGE = """
import gc, sys
from pathlib import Path
import numpy as np
from onnx import TensorProto, helper
from anomalycli.detection import int8_backbone
from anomalycli.data.decoding import DecodeAhead

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
paths = sorted(Path(sys.argv[1]).glob("*.png"))
for attempt in range(5):
    session = int8_backbone.session(model.SerializeToString())  # with its pool of threads
    session.run(None, {"x": np.ones((4, 8), np.float32)})
    cycle = [session]
    cycle.append(cycle)
    del session, cycle  # garbage only the collector frees, there for the workers to inherit
    with DecodeAhead(paths, 16, workers=1) as decoder:
        assert len(list(decoder)) == len(paths)
"""


def test_workers_leave_the_garbage_they_inherit_alone(files, tmp_path):
    # A worker whose collector freed an inherited ONNX Runtime session hung in its destructor (it
    # waits on threads the fork did not copy): this ran forever before gc.freeze around the fork.
    pytest.importorskip("onnxruntime")
    script = tmp_path / "inherit.py"
    script.write_text(INHERITED_GARBAGE)
    done = subprocess.run([sys.executable, str(script), str(files[0].parent)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_workers_started_afresh_decode_the_same(files, monkeypatch):
    # macOS and Windows start workers afresh ("spawn"): each imports this module alone and must
    # decode exactly as a forked one does.
    import multiprocessing

    from anomalycli.data import decoding

    monkeypatch.setattr(decoding, "process_context", lambda: multiprocessing.get_context("spawn"))
    with DecodeAhead(files, 24, workers=1) as decoder:
        spawned = list(decoder)
    assert [error == "" for _, error in spawned] == [path.name != "cut.png" for path in files]
    assert all(np.array_equal(pixels, read_image_array(path, 24)) for path, (pixels, _) in zip(files, spawned) if pixels is not None)


def test_the_decoding_workers_follow_the_cores_this_process_may_use(monkeypatch):
    # A line PC may pin the process to some of its cores: one worker per two of those, not of the
    # machine's, and two at least (on 2 cores the second fills the scoring graph's gaps).
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert decoding.default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert decoding.default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert decoding.default_workers() == 4
