"""Every result as one MQTT message (paho-mqtt), for an MES: thin, beside the handshake.

``{topic}/results``: one JSON message a part (``docs/station-result.schema.json``) at QoS 1, after
its journal row is on disk. ``{topic}/status``: retained ``online`` once the station is ready and
``offline`` when it stops, and the broker's last will says ``offline`` when it dies. While the
broker is away, messages wait in the client's queue (unbounded) and go out, in order, when it
reconnects: the broker restarting loses none. The client runs its own network thread.
"""

from __future__ import annotations

import json
import socket
import threading

from anomalycli.errors import UserError

QOS = 1
RECONNECT_SECONDS = (0.2, 5.0)  # the first retry, and the longest wait between retries


def parse_broker(text: str) -> tuple[str, int]:
    """``host:port`` (port 1883 where none is given)."""
    host, _, port = str(text).rpartition(":") if ":" in str(text) else (str(text), "", "1883")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f'[mqtt] broker must be "HOST:PORT", e.g. "127.0.0.1:1883" (got {text!r})')
    return host, int(port)


class MqttPublisher:
    """The station's MQTT client: ``start`` (connects in the background), ``publish``, ``stop``."""

    def __init__(self, broker: str, topic: str, client_id: str | None = None):
        import paho.mqtt.client as mqtt

        self.host, self.port = parse_broker(broker)
        self.topic = topic.rstrip("/")
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"anomalycli-station-{socket.gethostname()}", clean_session=False)
        self.client.max_queued_messages_set(0)  # unbounded: the journal bounds what a run makes
        self.client.reconnect_delay_set(*RECONNECT_SECONDS)
        self.client.will_set(self.status_topic, "offline", qos=QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()

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
        self.client.publish(self.results_topic, json.dumps(message, separators=(",", ":")), qos=QOS)

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
