"""The station on OPC UA, against a real asyncua client on 127.0.0.1: it browses the Station
object, reads the signals, subscribes to their changes and to ResultReady, calls StartSingleJob
(a trigger) and acknowledges as a PLC does."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from asyncua import Client, ua

from anomalycli.deploy.station import signals
from anomalycli.deploy.station.opcua import NAMESPACE
from tests.test_station import _free_port, journal_rows, predicted, write_station


class Changes:
    """A subscription's handler: data changes and events, as they come."""

    def __init__(self):
        self.values: list[tuple[str, object]] = []
        self.events: list[dict] = []

    def datachange_notification(self, node, value, data):
        self.values.append((str(node), value))

    def event_notification(self, event):
        self.events.append(json.loads(event.Message.Text))


async def _plc_session(endpoint: str, inbox, images, users=None) -> tuple[list[dict], Changes, list[str]]:
    client = Client(endpoint)
    if users:
        client.set_user(users[0])
        client.set_password(users[1])
    async with client:
        ns = await client.get_namespace_index(NAMESPACE)
        station = await client.nodes.objects.get_child(f"{ns}:Station")
        names = {(await child.read_browse_name()).Name for child in await station.get_children()}
        node = {name: await station.get_child(f"{ns}:{name}") for name in (*signals.FROM_PLC, *signals.TO_PLC)}
        changes = Changes()
        subscription = await client.create_subscription(10, changes)
        await subscription.subscribe_data_change(node["result_valid"])
        await subscription.subscribe_events(station)
        assert await node["ready"].read_value()
        results = []
        for i, image in enumerate(images):
            job = await station.call_method(f"{ns}:StartSingleJob", "meas", str(500 + i), ua.Variant(0, ua.VariantType.UInt16), "screw")
            assert job.startswith("job-")
            shutil.copy(image, inbox / f"image{i}.png")  # the camera's picture for this trigger
            for _ in range(600):
                if await node["result_valid"].read_value():
                    break
                await asyncio.sleep(0.01)
            results.append({name: await node[name].read_value() for name in ("result_seq", "part_id_echo", "ok", "ng", "score", "error_code")})
            await node["result_ack"].write_value(True)
            for _ in range(600):
                if not await node["result_valid"].read_value():
                    break
                await asyncio.sleep(0.01)
            await node["result_ack"].write_value(False)
        await asyncio.sleep(0.2)
        return results, changes, sorted(names)


def test_a_plc_on_opc_ua_triggers_reads_subscribes_and_acknowledges(parts, patchcore_model, running_station, tmp_path):
    port = _free_port()
    path = write_station(tmp_path, {1: patchcore_model}, extra=f"[opcua]\nport = {port}")
    path.write_text(path.read_text().replace('part_id_pattern = "part(?P<part_id>\\\\d+)"\n', 'mode = "trigger"\n'))
    station = running_station(path)
    images = sorted(parts.glob("*/*.png"))[::9][:4]
    results, changes, names = asyncio.run(_plc_session(station.opcua.endpoint, tmp_path / "inbox", images))
    assert set(names) >= set(signals.FROM_PLC) | set(signals.TO_PLC) | {"StartSingleJob"}
    assert [r["part_id_echo"] for r in results] == [500, 501, 502, 503] and [r["result_seq"] for r in results] == [1, 2, 3, 4]
    truth = predicted(patchcore_model, parts, tmp_path)
    for result, image in zip(results, images):
        assert result["ng"] == (truth[image.name]["verdict"] == "anomaly") and result["ok"] != result["ng"] and result["error_code"] == 0
        assert result["score"] == pytest.approx(float(truth[image.name]["score"]), abs=1e-3)
    assert [e["result_seq"] for e in changes.events] == [1, 2, 3, 4], "one ResultReady event a result"
    assert sum(1 for _, value in changes.values if value is True) >= 4, "result_valid's rises reach a subscriber"
    assert [int(r["part_id"]) for r in journal_rows(tmp_path / "verdicts.csv")] == [500, 501, 502, 503]


def test_off_this_machine_opc_ua_asks_a_user_name_and_refuses_anonymous_clients(patchcore_model, running_station, tmp_path):
    port = _free_port()
    path = write_station(tmp_path, {1: patchcore_model}, extra=f'[opcua]\nport = {port}\nusers = {{ plc = "s3cret-line-1" }}')
    station = running_station(path)

    async def anonymous():
        async with Client(station.opcua.endpoint):
            pass

    with pytest.raises(Exception):
        asyncio.run(anonymous())

    async def with_password():
        client = Client(station.opcua.endpoint)
        client.set_user("plc")
        client.set_password("s3cret-line-1")
        async with client:
            ns = await client.get_namespace_index(NAMESPACE)
            return await (await client.nodes.objects.get_child(f"{ns}:Station")).get_child(f"{ns}:ready")

    assert asyncio.run(with_password()) is not None


def _self_signed(folder, name: str):
    """A self-signed application certificate and key (asyncua's generator), as DER and PEM files."""
    import socket

    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.der"
    use = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    asyncio.run(setup_self_signed_certificate(key, cert, f"urn:anomalycli:{name}", socket.gethostname(), use, {"commonName": name}))
    return cert, key


def test_with_a_certificate_opc_ua_signs_and_encrypts_and_refuses_a_plain_client(patchcore_model, running_station, tmp_path):
    server_cert, server_key = _self_signed(tmp_path, "station")
    client_cert, client_key = _self_signed(tmp_path, "plc")
    port = _free_port()
    extra = f'[opcua]\nport = {port}\ncertificate = "{server_cert.name}"\nprivate_key = "{server_key.name}"'
    station = running_station(write_station(tmp_path, {1: patchcore_model}, extra=extra))

    async def plain():
        async with Client(station.opcua.endpoint) as client:
            ns = await client.get_namespace_index(NAMESPACE)
            await (await client.nodes.objects.get_child(f"{ns}:Station")).get_child(f"{ns}:ready")

    with pytest.raises(Exception):
        asyncio.run(plain())

    async def secure():
        client = Client(station.opcua.endpoint)
        await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key},{server_cert}")
        async with client:
            ns = await client.get_namespace_index(NAMESPACE)
            return await (await (await client.nodes.objects.get_child(f"{ns}:Station")).get_child(f"{ns}:ready")).read_value()

    assert asyncio.run(secure()) is True
