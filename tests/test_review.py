import csv
import json
import math
import multiprocessing
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_clear_line, run_cli

from anomalycli.data.layouts import discover
from anomalycli.views import review_labels


def _item(name, score, verdict=None):
    verdict = verdict or ("unreadable" if math.isnan(score) else "anomaly" if score >= 0.5 else "normal")
    return review_labels.Item(name, Path(name), score, verdict)


def test_the_order_puts_flagged_images_first_then_close_calls_then_the_rest():
    items = [
        _item("low", 0.1),
        _item("close-below", 0.46),
        _item("broken", float("nan")),
        _item("top", 0.95),
        _item("close-above", 0.53),
        _item("high", 0.8),
        _item("mid", 0.3),
    ]
    order = [items[i].name for i in review_labels.review_order(items)]
    assert order == ["top", "high", "close-above", "close-below", "mid", "low", "broken"]
    assert [review_labels.matches(i, False, "uncertain") for i in items] == [False, True, False, False, True, False, False]


def _decide_many(path: str, start: int) -> None:
    store = review_labels.LabelStore(Path(path), "good", "defect")
    for k in range(start, start + 40):
        store.decide(f"img{k:03d}.png", k % 2 == 1, "scratch" if k % 2 else "")


def test_two_reviews_of_one_labels_file_lose_no_decision(tmp_path):
    path = tmp_path / "labels.csv"
    workers = [multiprocessing.Process(target=_decide_many, args=(str(path), start)) for start in (0, 40)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and {r["filename"] for r in rows} == {f"img{k:03d}.png" for k in range(80)}
    assert all((r["label"], r["defect_type"]) == (("defect", "scratch") if int(r["filename"][3:6]) % 2 else ("good", "")) for r in rows)
    assert not list(tmp_path.glob(".labels.csv.*.tmp"))


def _decided(labels: Path, parts: Path, n_good: int, defect_types: list[str]):
    """A store with the first ``n_good`` good images decided good and one defect per type decided defective."""
    store = review_labels.LabelStore(labels, "good", "not-good")
    good = sorted((parts / "good").glob("*.png"))[:n_good]
    bad = sorted((parts / "not-good").glob("*.png"))[: len(defect_types)]
    for path in good:
        store.decide(path.relative_to(parts).as_posix(), False)
    for path, kind in zip(bad, defect_types):
        store.decide(path.relative_to(parts).as_posix(), True, kind)
    return store, good, bad


def test_decisions_are_saved_undone_and_read_back_in_the_format_train_takes(tmp_path, parts):
    labels = tmp_path / "labels.csv"
    store, good, bad = _decided(labels, parts, 3, ["scratch", ""])
    store.decide(bad[1].relative_to(parts).as_posix(), None)  # undo
    assert review_labels.LabelStore(labels, "good", "not-good").read()[bad[0].relative_to(parts).as_posix()] == ("not-good", "scratch")
    dataset = discover(parts, labels=labels)
    assert sorted((s.label, s.defect_type) for s in dataset.samples) == [(0, None)] * 3 + [(1, "scratch")]


def test_a_file_that_is_not_a_labels_csv_is_refused_in_one_line(tmp_path, parts, patchcore_model):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    message = one_clear_line(run_cli("review", patchcore_model, parts / "good", "--labels", tmp_path / "other.csv", "--into", tmp_path / "x", expect=1))
    assert "is not a labels CSV" in message


def test_copy_into_class_folders_never_overwrites_and_copies_once(tmp_path, parts, patchcore_model):
    labels = tmp_path / "labels.csv"
    _, good, bad = _decided(labels, parts, 2, ["scratch", "../../etc"])
    into = tmp_path / "data"
    (into / "good").mkdir(parents=True)
    (into / "good" / good[0].name).write_bytes(b"someone else's image")
    result = run_cli("review", patchcore_model, parts, "--labels", labels, "--into", into)
    assert "4 reviewed image(s) copied" in " ".join(result.output.split())
    assert (into / "good" / good[0].name).read_bytes() == b"someone else's image"
    assert (into / "good" / f"{good[0].stem}-1.png").read_bytes() == good[0].read_bytes()
    assert (into / "scratch" / bad[0].name).is_file() and (into / "______etc" / bad[1].name).is_file()
    again = " ".join(run_cli("review", patchcore_model, parts, "--labels", labels, "--into", into).output.split())
    assert "0 reviewed image(s) copied" in again and "4 already there" in again


@pytest.fixture(scope="module")
def app(patchcore_model, parts, tmp_path_factory):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from anomalycli.deploy.engines import load_model
    from anomalycli.deploy.scoring import iter_scores
    from anomalycli.views import review_server

    model = load_model(patchcore_model)
    source = tmp_path_factory.mktemp("shift")
    for path in sorted((parts / "not-good").glob("*.png"))[:3] + sorted((parts / "good").glob("*.png"))[:3]:
        shutil.copy(path, source / path.name)
    shutil.copy(next((parts / "good").glob("*.png")), source / "<img src=x onerror=alert(1)>.png")
    paths = sorted(source.glob("*.png"))
    items = [review_labels.Item(p.name, p, s.score, s.verdict) for p, s in zip(paths, iter_scores(model, paths, show_progress=False))]
    store = review_labels.LabelStore(source.parent / "shift-labels.csv", "good", "not-good")
    state = review_server.Review(items, store, model, ["scratch", "spot"], model.calibration.raw_threshold(0.5))
    return TestClient(review_server.make_app(state, "s3cret")), state


def test_every_request_needs_the_token_and_only_listed_images_are_served(app):
    client, state = app
    assert client.get("/api/items").status_code == 403
    assert client.get("/api/items?token=wrong").status_code == 403
    assert client.get("/?token=s3cret").status_code == 200
    for url in (
        "/api/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/image/-1",
        f"/api/image/{len(state.items)}",
        "/static/..%2Fcli%2F__init__.py",
        "/api/image/../../etc/passwd",
        "/static/review.html",
    ):
        assert client.get(url + ("&" if "?" in url else "?") + "token=s3cret").status_code in (404, 403), url
    assert client.get("/api/image/0?token=s3cret").headers["content-type"] == "image/png"
    assert client.get("/api/heatmap/0", headers={"X-Review-Token": "s3cret"}).headers["content-type"] == "image/png"


def test_the_listing_orders_flagged_first_and_a_decision_reaches_the_csv(app):
    client, state = app
    listing = client.get("/api/items?token=s3cret").json()
    scores = [row["score"] for row in listing["items"]]
    flagged = [row for row in listing["items"] if row["verdict"] == "anomaly" and not row["uncertain"]]
    assert listing["items"][: len(flagged)] == flagged and scores[: len(flagged)] == sorted(scores[: len(flagged)], reverse=True)
    assert "<img src=x onerror=alert(1)>.png" in {row["name"] for row in listing["items"]}  # a name is data, shown as text by the page
    first = listing["items"][0]
    saved = client.post("/api/decide?token=s3cret", json={"index": first["index"], "decision": "defect", "defect_type": "spot"}).json()
    assert saved == {"index": first["index"], "label": "not-good", "defect_type": "spot"}
    assert state.store.read()[first["name"]] == ("not-good", "spot")
    assert client.post("/api/decide?token=s3cret", json={"index": 999, "decision": "good"}).status_code == 400
    assert client.post("/api/decide?token=s3cret", json={"index": first["index"], "decision": None}).json()["label"] == ""


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install -e '.[browser-test]'")
    executable = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if executable is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); the review page's browser test needs one")
    return playwright, executable


def test_review_in_a_real_browser_with_the_keys_then_reload_and_resume(patchcore_model, parts, tmp_path):
    pytest.importorskip("starlette")
    playwright, executable = _browser()
    source = tmp_path / "shift"
    source.mkdir()
    for path in sorted((parts / "not-good").glob("*.png"))[:4] + sorted((parts / "good").glob("*.png"))[:4]:
        shutil.copy(path, source / path.name)
    server = subprocess.Popen(
        [sys.executable, "-m", "anomalycli", "review", str(patchcore_model), str(source), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        address = None
        deadline = time.time() + 120
        while address is None and time.time() < deadline:
            line = server.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=([\w-]+)", line)
            if found:
                address, token = found.group(0), found.group(2)
        assert address, "anomaly review printed no address"
        base = address.split("?")[0]
        labels = tmp_path / "shift-labels.csv"
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(address)
            page.wait_for_function("document.getElementById('name').textContent.length > 0")
            first = page.text_content("#name")
            page.keyboard.press("g")
            page.wait_for_function(f"document.getElementById('name').textContent !== {json.dumps(first)}")
            second = page.text_content("#name")
            page.keyboard.press("d")
            page.wait_for_function(f"document.getElementById('name').textContent !== {json.dumps(second)}")
            third = page.text_content("#name")
            page.keyboard.press("1")  # the first defect type the model knows
            page.wait_for_function(f"document.getElementById('name').textContent !== {json.dumps(third)}")
            page.keyboard.press("u")  # takes the third decision back
            page.wait_for_function(f"document.getElementById('name').textContent === {json.dumps(third)}")
            page.wait_for_function("document.getElementById('label').textContent === 'not yet'")
            with open(labels, newline="") as f:
                rows = {r["filename"]: (r["label"], r["defect_type"]) for r in csv.DictReader(f)}
            assert rows == {first: ("good", ""), second: ("not-good", "")}
            # The image and its heat map load, large, beside each other.
            page.wait_for_function("['image', 'heatmap'].every(id => document.getElementById(id).complete && document.getElementById(id).naturalWidth > 0)")
            assert page.eval_on_selector("#image", "img => img.getBoundingClientRect().width") > 200
            page.screenshot(path=str(tmp_path / "review_labels.png"))
            page.reload()  # resumes at the first image not yet decided
            page.wait_for_function("document.getElementById('name').textContent.length > 0")
            assert page.text_content("#name") == third
            assert "2 of 8 labelled" in page.text_content("#progress")
            assert page.request.get(base + "api/items").status == 403
            assert page.request.get(base + "api/image/..%2F..%2Fetc%2Fpasswd?token=" + token).status == 404
            browser.close()
    finally:
        server.terminate()
        server.wait(30)


def test_without_the_review_extra_review_says_what_to_install(patchcore_model, parts, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    message = one_clear_line(run_cli("review", patchcore_model, parts / "good", "--no-browser", expect=1))
    assert "pip install 'anomalycli[review]'" in message


def test_review_mistakes_are_one_line(patchcore_model, parts, tmp_path):
    assert "--labels must end in .csv" in one_clear_line(run_cli("review", patchcore_model, parts, "--labels", tmp_path / "l.txt", expect=2))
    assert "--port must be between" in one_clear_line(run_cli("review", patchcore_model, parts, "--port", "70000", expect=2))
    assert "no decisions to copy" in one_clear_line(
        run_cli("review", patchcore_model, parts, "--labels", tmp_path / "none.csv", "--into", tmp_path / "d", expect=1)
    )


def test_a_port_already_taken_is_one_clear_line_before_any_image_is_scored(patchcore_model, parts):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("review", patchcore_model, parts / "good", "--no-browser", "--port", port, expect=1)
    assert one_clear_line(done).strip() == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"
    assert "scored" not in done.output


def test_two_links_named_alike_in_two_folders_keep_two_names(tmp_path):
    """Images gathered by links, not copies: each keeps the name it has below the folder reviewed."""
    from anomalycli.views.review_server import relative_name

    for camera in ("cam1", "cam2"):
        (tmp_path / "store" / camera).mkdir(parents=True)
        (tmp_path / "store" / camera / "001.png").write_bytes(b"")
        (tmp_path / "review" / camera).mkdir(parents=True)
        (tmp_path / "review" / camera / "001.png").symlink_to(tmp_path / "store" / camera / "001.png")
    base = tmp_path / "review"
    assert [relative_name(base / c / "001.png", base) for c in ("cam1", "cam2")] == ["cam1/001.png", "cam2/001.png"]
    assert relative_name(tmp_path / "elsewhere" / "002.png", base) == "002.png"
