"""Every result as one MQTT message (paho-mqtt), for an MES: thin, beside the handshake.

``{topic}/results``: one JSON message a part (``docs/station-result.schema.json``) at QoS 1, after
its journal row is on disk. ``{topic}/status``: retained ``online`` once the station is ready and
``offline`` when it stops, and the broker's last will says ``offline`` when it dies. While the
broker is away, results wait in the publisher's queue (unbounded) and go out, in order, when it
reconnects: the broker restarting loses none. The client runs its own network thread, and the
results their own sender thread.

What the broker has confirmed (its PUBACK) is kept in a file beside the journal (``delivered_file``):
the last ``seq`` up to which every message was confirmed. A station killed with messages still in
its queue or unconfirmed sends those rows again from the journal when it starts (the station's
``_resend_unconfirmed``): QoS 1 is at least once, so an MES may see a result twice, never miss one;
``seq`` tells them apart.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
from pathlib import Path

from anomalycli import files
from anomalycli.errors import UserError

QOS = 1
RECONNECT_SECONDS = (0.2, 5.0)  # the first retry, and the longest wait between retries


def parse_broker(text: str) -> tuple[str, int]:
    """``host:port`` (port 1883 where none is given)."""
    host, _, port = str(text).rpartition(":") if ":" in str(text) else (str(text), "", "1883")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f'[mqtt] broker must be "HOST:PORT", e.g. "127.0.0.1:1883" (got {text!r})')
    return host, int(port)


def delivered_file(journal: Path) -> Path:
    """Where a station with this journal keeps the last ``seq`` the broker confirmed."""
    return journal.with_name(journal.name + ".mqtt-delivered")


def read_delivered(path: Path) -> int | None:
    """The last ``seq`` confirmed, as ``path`` keeps it; None where there is no such file (or it is unreadable)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class MqttPublisher:
    """The station's MQTT client: ``start`` (connects in the background), ``publish``, ``stop``;
    with ``delivered``, the file where it keeps the last ``seq`` the broker confirmed.

    Results go out one at a time, in the order published: each is handed to paho once the one
    before it is confirmed, by a thread of its own. paho alone does not keep that order across a
    reconnect: a message published from opening the socket to paho's resending of what it held
    (after the broker's CONNACK) went out at once, ahead of those (an MES received ..., 136, 288,
    137, ... on every broker restart of a test, whatever paho's in-flight limit). One round trip a
    result: 127.0.0.1 confirms thousands a second."""

    def __init__(self, broker: str, topic: str, client_id: str | None = None, delivered: Path | None = None):
        import paho.mqtt.client as mqtt

        self.host, self.port = parse_broker(broker)
        self.topic = topic.rstrip("/")
        self.delivered = delivered
        # The results not yet confirmed, in order (the head is the one handed to paho), and the
        # message ids paho has confirmed since. ``_turn`` guards them and is never held while
        # calling paho, which calls ``on_publish`` holding its own lock: no two locks are ever
        # taken in two orders.
        self._queue: collections.deque[dict] = collections.deque()
        self._confirmed: set[int] = set()
        self._stopping = False
        self._turn = threading.Condition()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"anomalycli-station-{socket.gethostname()}", clean_session=False)
        self.client.max_queued_messages_set(0)  # unbounded: the journal bounds what a run makes
        self.client.reconnect_delay_set(*RECONNECT_SECONDS)
        self.client.will_set(self.status_topic, "offline", qos=QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._sender = threading.Thread(target=self._send_in_order, name="mqtt-results", daemon=True)

    @property
    def status_topic(self) -> str:
        return f"{self.topic}/status"

    @property
    def results_topic(self) -> str:
        return f"{self.topic}/results"

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if not reason_code.is_failure:
            client.publish(self.status_topic, "online", qos=QOS, retain=True)
            self.connected.set()
            with self._turn:
                self._turn.notify_all()

    def _on_disconnect(self, *args) -> None:
        self.connected.clear()
        with self._turn:
            self._turn.notify_all()

    def start(self) -> None:
        """Connect in the background: a broker that is not up yet is retried, never waited for."""
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        self._sender.start()

    def publish(self, message: dict) -> None:
        """Queue ``message`` (a result with its ``seq``) to go out after every one published before it."""
        with self._turn:
            self._queue.append(message)
            self._turn.notify_all()

    def _send_in_order(self) -> None:
        while True:
            with self._turn:
                self._turn.wait_for(lambda: self._stopping or (self._queue and self.connected.is_set()))
                if self._stopping:
                    return
                message = self._queue[0]
            # Handed to paho on a connection that may drop meanwhile: paho keeps it and sends it
            # again once the broker is back (clean_session=False); the next waits for it either way.
            info = self.client.publish(self.results_topic, json.dumps(message, separators=(",", ":")), qos=QOS)
            with self._turn:
                self._turn.wait_for(lambda: self._stopping or info.mid in self._confirmed)
                if info.mid not in self._confirmed:
                    return
                self._confirmed.clear()  # the status messages' ids with it: one result is in flight at a time
                self._queue.popleft()
                self._turn.notify_all()
            if self.delivered is not None:
                write_delivered(self.delivered, int(message["seq"]))

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        with self._turn:
            self._confirmed.add(mid)
            self._turn.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """The results waiting sent where the broker is there (for ``timeout`` at most), ``offline``
        on the status topic, then disconnect. What is left is the journal's to send at the next start."""
        with self._turn:
            self._turn.wait_for(lambda: not self._queue or not self.connected.is_set(), timeout)
            self._stopping = True
            self._turn.notify_all()
        info = self.client.publish(self.status_topic, "offline", qos=QOS, retain=True)
        if self.connected.is_set():
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        if self._sender.is_alive():
            self._sender.join(timeout)


def write_delivered(path: Path, seq: int) -> None:
    """``seq`` into ``path``, replacing it whole (``files.write_text``). Not synced: a file a crash
    left older only sends more rows again."""
    files.write_text(path, f"{seq}\n")
