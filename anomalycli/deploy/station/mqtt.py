"""Every result as one MQTT message (paho-mqtt), for an MES: thin, beside the handshake.

``{topic}/results``: one JSON message a part (``docs/station-result.schema.json``) at QoS 1, after
its journal row is on disk. ``{topic}/status``: retained ``online`` once the station is ready and
``offline`` when it stops, and the broker's last will says ``offline`` when it dies. While the
broker is away, messages wait in the client's queue (unbounded) and go out, in order, when it
reconnects: the broker restarting loses none. The client runs its own network thread.

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
    with ``delivered``, the file where it keeps the last ``seq`` the broker confirmed."""

    def __init__(self, broker: str, topic: str, client_id: str | None = None, delivered: Path | None = None):
        import paho.mqtt.client as mqtt

        self.host, self.port = parse_broker(broker)
        self.topic = topic.rstrip("/")
        self.delivered = delivered
        # Results in the order they were published, (message id, seq), until the broker confirms
        # each, and their ids; the ids confirmed but not yet taken off the head; how many
        # publishes are between paho's ``publish`` and their entry here (a confirmation can come
        # back first). ``_order`` guards them all and is never held while calling paho, which
        # calls ``on_publish`` holding its own lock: no two locks are ever taken in two orders.
        self._unconfirmed: collections.deque[tuple[int, int]] = collections.deque()
        self._waiting: set[int] = set()
        self._confirmed: set[int] = set()
        self._publishing = 0
        self._order = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"anomalycli-station-{socket.gethostname()}", clean_session=False)
        self.client.max_queued_messages_set(0)  # unbounded: the journal bounds what a run makes
        self.client.reconnect_delay_set(*RECONNECT_SECONDS)
        self.client.will_set(self.status_topic, "offline", qos=QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_publish = self._on_publish

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

    def start(self) -> None:
        """Connect in the background: a broker that is not up yet is retried, never waited for."""
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()

    def publish(self, message: dict) -> None:
        with self._order:
            self._publishing += 1
        try:
            info = self.client.publish(self.results_topic, json.dumps(message, separators=(",", ":")), qos=QOS)
        except BaseException:
            with self._order:
                self._publishing -= 1
            raise
        with self._order:  # in one step with the count: a confirmation of this id is kept until then
            self._publishing -= 1
            self._unconfirmed.append((info.mid, int(message["seq"])))
            self._waiting.add(info.mid)
            self._advance()

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        with self._order:
            self._confirmed.add(mid)
            self._advance()

    def _advance(self) -> None:
        """Take the confirmed results off the head of the order; the last one's seq into the file."""
        last = None
        while self._unconfirmed and self._unconfirmed[0][0] in self._confirmed:
            mid, last = self._unconfirmed.popleft()
            self._waiting.discard(mid)
            self._confirmed.discard(mid)
        if not self._publishing:  # an id confirmed and not waiting is no result's (the status messages')
            self._confirmed &= self._waiting
        if last is not None and self.delivered is not None:
            write_delivered(self.delivered, last)

    def stop(self, timeout: float = 5.0) -> None:
        """``offline`` on the status topic, what waits sent where the broker is there, then disconnect."""
        info = self.client.publish(self.status_topic, "offline", qos=QOS, retain=True)
        if self.connected.is_set():
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()


def write_delivered(path: Path, seq: int) -> None:
    """``seq`` into ``path``, replacing it whole (``files.write_text``). Not synced: a file a crash
    left older only sends more rows again."""
    files.write_text(path, f"{seq}\n")
