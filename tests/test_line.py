"""The warm model of watch, serve and the station (``deploy/line.py``)."""

import numpy as np

from anomalycli.data.layouts import discover
from anomalycli.data.tensors import load_all
from anomalycli.deploy import onnx_model
from anomalycli.deploy.line import Line


def test_a_bursts_batch_is_scored_two_calls_at_once_and_one_image_on_every_core(patchcore_model, parts, monkeypatch):
    # watch's Line: the batch of a burst as predict scores it, the same numbers as one call at a time.
    monkeypatch.setattr(onnx_model, "available_cores", lambda: 2)
    in_flight, one_at_a_time = Line(patchcore_model, calls_in_flight=2), Line(patchcore_model)
    images, _, _ = load_all(discover(parts).samples[:5], in_flight.image_size)
    pixels = images.numpy()
    names, errors, arrived = [f"{i}.png" for i in range(5)], [""] * 5, [0.0] * 5
    in_flight.judge(names[:1], pixels[:1], errors[:1], arrived[:1])
    assert in_flight.model._in_flight is None and in_flight.model.threads == 0  # one image alone: every core
    judged, _ = in_flight.judge(names, pixels, errors, arrived)
    expected, _ = one_at_a_time.judge(names, pixels, errors, arrived)
    assert in_flight.model._in_flight is not None and one_at_a_time.model._in_flight is None
    assert in_flight.model._in_flight[0] is not in_flight.model.session  # the burst's calls: a session of one core a call
    assert np.allclose([j.scored.raw for j in judged], [j.scored.raw for j in expected], rtol=1e-6, atol=0)
    assert [j.verdict for j in judged] == [j.verdict for j in expected]
