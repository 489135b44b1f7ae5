"""On the line, over HTTP: ``anomaly serve`` with a set's default model, sequential requests (the
client's time, median and p99) and 4 clients at once (images/s). ``line.py`` runs it beside the watch's measurements."""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import anomaly_command, wait_until


def http(model: Path, images: list[Path], sequential: int, concurrent_n: int) -> dict:
    import httpx

    port = 18000 + random.Random().randrange(1000)
    process = subprocess.Popen(anomaly_command("serve", str(model), "--port", str(port)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    bodies = [p.read_bytes() for p in images[:100]]
    try:
        wait_until(lambda: _healthy(url), 120, 0.1)
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/predict", content=bodies[0])
            seconds = []
            for i in range(sequential):
                start = time.perf_counter()
                client.post("/predict", content=bodies[i % len(bodies)]).raise_for_status()
                seconds.append(time.perf_counter() - start)

        def client_loop(offset: int):
            with httpx.Client(base_url=url, timeout=60) as client:
                for i in range(offset, concurrent_n, 4):
                    client.post("/predict", content=bodies[i % len(bodies)]).raise_for_status()

        start = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        concurrent = concurrent_n / (time.perf_counter() - start)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return {"http_median": statistics.median(seconds), "http_p99": float(np.percentile(seconds, 99)), "http_4_clients_images_per_s": concurrent}


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
