"""The handshake on OPC UA (asyncua): the same signals as variables under one object, a method
shaped after OPC 40100's ``StartSingleJob``, and a ``ResultReady`` event.

Thin, as the Modbus adapter: every ``CYCLE_SECONDS`` the handshake's snapshot is written to the
variables (a subscriber gets data changes), a value a client wrote to a PLC-side variable goes to
``Handshake.write``, and a new result shown raises the event. Address space, under Objects:

    Station (ns=urn:anomalycli:station)
      trigger, part_id, result_ack, recipe_request        writable (the PLC's)
      ready, busy, result_valid, ok, ng, error, ...      read-only (signals.TO_PLC)
      StartSingleJob(measId, partId, recipeId, productId) -> jobId
      ResultReady event (BaseEventType; Message: the result as JSON)

Anonymous access only on 127.0.0.1; bound elsewhere the station file must name users (user name
and password), and anonymous clients are refused. With a certificate and its private key (PEM or
DER) the server offers Basic256Sha256 with signing and encryption, and then only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading

from anomalycli import runtime
from anomalycli.deploy.station import signals
from anomalycli.deploy.station.handshake import Handshake
from anomalycli.errors import UserError

NAMESPACE = "urn:anomalycli:station"
CYCLE_SECONDS = 0.005
TRIGGER_PULSE_SECONDS = 0.02  # StartSingleJob's trigger: high this long, then low (a rising edge)
RECIPE_WAIT_SECONDS = 2.0  # the longest StartSingleJob waits for the recipe it asked for


def _variant_type(kind: str):
    from asyncua import ua

    return {"bool": ua.VariantType.Boolean, "uint16": ua.VariantType.UInt16, "uint32": ua.VariantType.UInt32, "float32": ua.VariantType.Float}[kind]


def _cast(value, kind: str):
    return bool(value) if kind == "bool" else float(value) if kind == "float32" else int(value)


class OpcUaServer:
    def __init__(
        self,
        handshake: Handshake,
        host: str = "127.0.0.1",
        port: int = 4840,
        users: dict[str, str] | None = None,
        certificate: str | None = None,
        private_key: str | None = None,
    ):
        self.handshake, self.host, self.port, self.users = handshake, host, port, users or {}
        self.certificate, self.private_key = certificate, private_key
        self.endpoint = f"opc.tcp://{host}:{port}/anomalycli/station"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: str | None = None
        self._jobs = itertools.count(1)

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise UserError(f"the OPC UA server could not listen on {self.host}:{self.port} ({self._error}); choose another [opcua] port")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # reported by start(), or ends the thread after stop()
            self._error = self._error or f"{type(exc).__name__}: {exc}"
            self._started.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: it never started, or has stopped
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    async def _serve(self) -> None:
        from asyncua import Server, ua
        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.server.user_managers import UserManager

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        users = self.users

        class Passwords(UserManager):
            def get_user(self, iserver, username=None, password=None, certificate=None):
                if username is None:
                    return User(role=UserRole.User) if not users else None
                return User(role=UserRole.User, name=username) if users.get(username) == password else None

        server = Server(user_manager=Passwords())
        try:
            await server.init()
            server.set_endpoint(self.endpoint)
            server.set_server_name("anomalycli station")
            if self.certificate:
                uri = _application_uri(self.certificate)
                if uri:  # a client checks the server's application URI against its certificate's
                    await server.set_application_uri(uri)
                await server.load_certificate(str(self.certificate))
                await server.load_private_key(str(self.private_key))
                server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            else:
                server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            tokens = [ua.UserNameIdentityToken] if users else [ua.AnonymousIdentityToken]
            server.set_identity_tokens(tokens)
            ns = await server.register_namespace(NAMESPACE)
            station = await server.nodes.objects.add_object(ns, "Station")
            nodes = {}
            state = self.handshake.snapshot()
            for name in (*signals.FROM_PLC, *signals.TO_PLC):
                kind = signals.MODBUS_MAP[name].type
                nodes[name] = await station.add_variable(ns, name, _cast(state[name], kind), varianttype=_variant_type(kind))
                if name in signals.FROM_PLC:
                    await nodes[name].set_writable()
            event = await server.get_event_generator(ua.ObjectIds.BaseEventType, station)
            await station.add_method(
                ns,
                "StartSingleJob",
                self._start_single_job,
                [ua.VariantType.String, ua.VariantType.String, ua.VariantType.UInt16, ua.VariantType.String],
                [ua.VariantType.String],
            )
            with runtime.library_quiet("asyncua.server.server"):  # a port it cannot listen on is start()'s one line
                await server.start()
        except OSError as exc:
            self._error = exc.strerror or str(exc)
            self._started.set()
            return
        self._started.set()
        try:
            await self._cycle(nodes, event)
        finally:
            await server.stop()

    async def _cycle(self, nodes: dict, event) -> None:
        """Mirror the handshake into the variables, the PLC's writes into the handshake, and raise
        ``ResultReady`` when a new result shows."""
        shown = {name: None for name in nodes}
        last_seq = 0
        while not self._stop.is_set():
            for name in signals.FROM_PLC:  # what a client wrote since the last cycle
                value = await nodes[name].read_value()
                if shown[name] is not None and value != shown[name]:
                    self.handshake.write(name, value)
                shown[name] = value
            state = self.handshake.snapshot()
            for name in signals.TO_PLC:
                kind = signals.MODBUS_MAP[name].type
                value = _cast(state[name], kind)
                if value != shown[name]:
                    await nodes[name].write_value(value, _variant_type(kind))
                    shown[name] = value
            if state["result_valid"] and state["result_seq"] != last_seq:
                last_seq = state["result_seq"]
                event.event.Message = _text(
                    json.dumps({k: state[k] for k in ("result_seq", "part_id_echo", "ok", "ng", "error", "error_code", "score", "recipe_active")})
                )
                event.event.Severity = 500 if state["ng"] else 100
                await event.trigger()
            try:
                await asyncio.wait_for(self._stop.wait(), CYCLE_SECONDS)
            except asyncio.TimeoutError:
                pass

    async def _start_single_job(self, parent, meas_id, part_id, recipe_id, product_id):
        """OPC 40100's StartSingleJob: the part ID (digits), the recipe to judge it with (0: the
        active one), then a trigger; returns the job's ID."""
        from asyncua import ua

        part = str(part_id.Value)
        if not part.isdigit():
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidArgument)
        self.handshake.write("part_id", int(part))
        if int(recipe_id.Value):
            self.handshake.write("recipe_request", int(recipe_id.Value))
            for _ in range(int(RECIPE_WAIT_SECONDS / CYCLE_SECONDS)):  # the trigger after the switch, not into it
                if self.handshake.recipe_wanted() is None:
                    break
                await asyncio.sleep(CYCLE_SECONDS)
        self.handshake.write("trigger", True)
        await asyncio.sleep(TRIGGER_PULSE_SECONDS)
        self.handshake.write("trigger", False)
        return [ua.Variant(f"job-{next(self._jobs)}", ua.VariantType.String)]


def _application_uri(certificate: str) -> str | None:
    """The URI in a certificate's subject alternative names (PEM or DER), or None."""
    from cryptography import x509

    data = open(certificate, "rb").read()
    cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_certificate(data)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _text(message: str):
    from asyncua import ua

    return ua.LocalizedText(message)
