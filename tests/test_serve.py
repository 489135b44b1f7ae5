"""``anomaly serve``: predict's numbers over HTTP, bad bodies refused with a 4xx and the server
still healthy, a token off this machine, several clients at once. Traffic goes to 127.0.0.1 only,
bounded in count and time."""

from __future__ import annotations

import csv
import io
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.testclient import TestClient

from anomalycli.deploy.http_api import make_app
from anomalycli.deploy.journal import Journal
from anomalycli.deploy.line import Line
from anomalycli.errors import UsageError
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def line(patchcore_model):
    return Line(patchcore_model)


@pytest.fixture(scope="module")
def truth(parts, patchcore_model, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("predicted") / "p.csv"
    run_cli("predict", patchcore_model, parts, "--output", out)
    with open(out, newline="") as handle:
        return {Path(r["path"]).name: r for r in csv.DictReader(handle)}


def test_an_image_body_or_a_multipart_file_gets_predicts_numbers(parts, line, truth, tmp_path):
    journal = Journal(tmp_path / "served.csv")
    client = TestClient(make_app(line, journal))
    assert client.get("/health").json()["status"] == "ok"
    images = sorted(parts.glob("*/*.png"))[::5]
    for i, path in enumerate(images):
        if i % 2:
            answer = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
        else:
            answer = client.post("/predict", content=path.read_bytes(), headers={"X-Image-Name": path.name})
        assert answer.status_code == 200, answer.text
        body, expected = answer.json(), truth[path.name]
        assert body["name"] == path.name and body["verdict"] == expected["verdict"]
        assert body["score"] == pytest.approx(float(expected["score"]), abs=1e-4)
        assert body["raw_score"] == pytest.approx(float(expected["raw_score"]), abs=1e-3)
        assert body["threshold"] == 0.5 and body["model"]["method"] == "patchcore" and len(body["model"]["sha256"]) == 16
    journal.close()
    with open(tmp_path / "served.csv", newline="") as handle:
        assert [r["path"] for r in csv.DictReader(handle)] == [p.name for p in images]
    metrics = client.get("/metrics").text
    assert 'anomaly_images_judged_total{verdict="normal"}' in metrics and "anomaly_judge_seconds_bucket" in metrics and "anomaly_drift_state 0.0" in metrics


def _bomb() -> bytes:
    """A tiny PNG of 200 million pixels: opening it would take gigabytes."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 10000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_bodies_get_a_4xx_with_an_error_and_the_server_stays_healthy(parts, line):
    client = TestClient(make_app(line, max_body_mb=1))
    good = next((parts / "good").glob("*.png")).read_bytes()
    bad = {
        "not an image": (b"hello, world", 400, "not an image"),
        "truncated": (good[: len(good) // 2], 400, "damaged or truncated"),
        "empty": (b"", 400, "the body is empty"),
        "too large": (b"\0" * (2 * 2**20), 413, "over the 1 MB limit"),
        "a decompression bomb": (_bomb(), 400, "too large to open safely"),
    }
    for what, (body, status, said) in bad.items():
        answer = client.post("/predict", content=body)
        assert answer.status_code == status and said in answer.json()["error"], (what, answer.text)
    assert client.post("/predict", files={"note": (None, "no file here")}).status_code == 400
    assert client.get("/health").status_code == 200
    assert client.post("/predict", content=good).status_code == 200
    assert 'anomaly_requests_rejected_total{status="400"} 5.0' in client.get("/metrics").text


def test_a_token_is_asked_for_when_one_is_set(parts, line):
    client = TestClient(make_app(line, token="s3cret-token-for-the-line"))
    good = next((parts / "good").glob("*.png")).read_bytes()
    assert client.post("/predict", content=good).status_code == 401
    assert client.post("/predict", content=good, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/predict", content=good, headers={"Authorization": "Bearer s3cret-token-for-the-line"}).status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/health").json() == {"status": "ok", "model": line.identity["file"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model, *options):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "anomalycli", "serve", str(model), "--port", str(port), *map(str, options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    end = time.monotonic() + 60
    while time.monotonic() < end and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(process.communicate()[0])


def test_four_clients_at_once_each_get_their_own_answers(parts, patchcore_model, truth, tmp_path):
    process, port = _serve(patchcore_model, "--journal", tmp_path / "j.csv")
    images = sorted(parts.glob("*/*.png"))
    answers, failures = {}, []

    def client(offset: int):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for path in images[offset::4]:
                reply = http.post("/predict", content=path.read_bytes(), headers={"X-Image-Name": path.name})
                if reply.status_code != 200:
                    failures.append(reply.text)
                answers[path.name] = reply.json()

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert not failures and len(answers) == len(images)
    for name, body in answers.items():
        assert body["name"] == name and body["verdict"] == truth[name]["verdict"]
        assert body["score"] == pytest.approx(float(truth[name]["score"]), abs=1e-4)
    assert process.returncode == 0 and "Traceback" not in out and "runs on: ONNX Runtime" in out and "serving model.safetensors" in out
    assert len((tmp_path / "j.csv").read_text().splitlines()) == len(images) + 1


def test_bound_off_this_machine_it_makes_and_asks_a_token(parts, patchcore_model):
    process, port = _serve(patchcore_model, "--host", "0.0.0.0")
    good = next((parts / "good").glob("*.png")).read_bytes()
    try:
        refused = httpx.post(f"http://127.0.0.1:{port}/predict", content=good, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("token: "))
    assert refused.status_code == 401 and len(token) >= 24


def test_with_regions_each_answer_says_where(parts, patchcore_model, classifier_model):
    client = TestClient(make_app(Line(patchcore_model, with_regions=True)))
    defect = sorted((parts / "not-good").glob("*.png"))[0]
    body = client.post("/predict", content=defect.read_bytes()).json()
    assert body["verdict"] == "anomaly" and body["regions"]
    assert all(0 <= r["x"] < 64 and 0 < r["width"] <= 64 and r["area_px"] > 0 for r in body["regions"])
    assert "regions" not in TestClient(make_app(Line(patchcore_model))).post("/predict", content=defect.read_bytes()).json()
    with pytest.raises(UsageError, match="no pixel threshold"):
        Line(classifier_model, with_regions=True)


def test_a_port_already_taken_is_one_clear_line_before_serving_is_announced(patchcore_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "anomalycli", "serve", str(patchcore_model), "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and errors == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"], done.stderr
    assert "serving" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_the_listening_socket_is_tcp_so_each_connection_answers_without_nagles_wait():
    """asyncio turns Nagle's algorithm off only on sockets named TCP: on a plain stream socket every
    answer waited for the client's delayed ack (serve's sequential requests 68 against 24 ms)."""
    import asyncio

    from anomalycli.deploy.http_api import listening_socket

    async def accepted_nodelay() -> int:
        seen = asyncio.get_running_loop().create_future()

        def connected(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = listening_socket("127.0.0.1", 0, "--port")
        server = await asyncio.start_server(connected, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
