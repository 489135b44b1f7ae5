"""The station file (TOML): what ``anomaly station`` runs, read and checked before anything starts.

Every mistake is one line naming the key and what to write instead; ``problems`` collects them all
(``anomaly station --check``), ``read`` refuses the first. Paths are relative to the file's folder.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from anomalycli.deploy.station import sections
from anomalycli.deploy.station.handshake import QUEUE_SIZE, TRIGGER_TIMEOUT
from anomalycli.deploy.station.mqtt import parse_broker
from anomalycli.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODES = ("arrival", "trigger")
# Each section's keys; a key or section not here is a mistake (a typo would otherwise be ignored).
KNOWN = {
    "source": {"inbox", "mode", "part_id_pattern", "settle_seconds", "polling", "camera", "video"},
    "recipes": None,  # recipe number -> model file
    "station": {"recipe", "queue", "trigger_timeout", "regions"},
    "modbus": {"host", "port"},
    "journal": {"path"},
    "mqtt": {"broker", "topic", "client_id"},
    "http": {"host", "port", "token"},
    "opcua": {"host", "port", "users", "certificate", "private_key"},
    "archive": {"path", "keep_good_every", "max_bytes", "max_files", "max_age_days", "min_free_mb", "heatmaps"},
}

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class StationFile:
    path: Path
    inbox: Path
    recipes: dict[int, Path]
    journal: Path
    mode: str = "arrival"
    part_id_pattern: re.Pattern | None = None
    settle_seconds: float = 3.0
    polling: bool = False
    recipe: int = 0  # the recipe at start
    queue: int = QUEUE_SIZE
    trigger_timeout: float = TRIGGER_TIMEOUT
    regions: bool = False  # each result's defect regions (journal: their count and the largest's area; MQTT: the list)
    modbus: dict | None = field(default=None)  # {"host", "port"}, or None: no Modbus server
    mqtt: dict | None = field(default=None)  # {"broker", "topic", "client_id"}, or None: no MQTT messages
    http: dict | None = field(default=None)  # {"host", "port", "token"}: /health and /metrics, or None
    opcua: dict | None = field(default=None)  # {"host", "port", "users"}: the OPC UA server, or None
    camera: dict | None = field(default=None)  # [source.camera]: {"cti", "index", "serial", "model", "trigger", "features", "every", "queue"}
    video: dict | None = field(default=None)  # [source.video]: {"url", "every", "queue"}
    archive: dict | None = field(default=None)  # [archive]: archive.ArchivePolicy's fields and "heatmaps"

    @property
    def source_name(self) -> str:
        """Where the images come from, in words."""
        if self.camera:
            c = self.camera
            which = f"serial {c['serial']}" if c.get("serial") else f"model {c['model']}" if c.get("model") else f"index {c['index']}"
            return f"GenICam camera {which} ({c['trigger']} trigger) through {Path(c['cti']).name}"
        if self.video:
            return f"video {self.video['url']}"
        return str(self.inbox)


def read(path: Path) -> StationFile:
    """The station file at ``path``; ``UserError`` with the first mistake."""
    station, mistakes = parse(path)
    if mistakes:
        raise UserError(mistakes[0])
    return station


def parse(path: Path) -> tuple[StationFile | None, list[str]]:
    """The station file and every mistake in it, one line each (the file is usable where there are none)."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        return None, [f"station file {path} does not exist; write one (see the README's station section)"]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark (Notepad) is no TOML
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return None, [f"{name} is not valid TOML: {exc}"]
    mistakes = []
    for section in raw:
        if section not in KNOWN:
            mistakes.append(f"{name}: unknown section [{section}]; the sections are {', '.join(f'[{s}]' for s in KNOWN)}")
        elif KNOWN[section] is not None:
            if not isinstance(raw[section], dict):
                mistakes.append(f"{name}: {section} must be a section, [{section}]")
                continue
            for key in raw[section]:
                if key not in KNOWN[section]:
                    mistakes.append(f"{name}: unknown key {key} in [{section}]; it takes {', '.join(sorted(KNOWN[section]))}")
    base = path.parent
    source, recipes_raw = raw.get("source", {}), raw.get("recipes", {})
    camera, video = sections.camera(source, base, name, mistakes), sections.video(source, name, mistakes)
    given = [k for k in ("inbox", "camera", "video") if k in source]
    if len(given) != 1:
        mistakes.append(
            f'{name}: [source] needs one of inbox = "FOLDER" (where the images arrive), [source.camera] or [source.video]'
            + (f" (it has {' and '.join(given)})" if given else "")
        )
    recipes: dict[int, Path] = {}
    if not isinstance(recipes_raw, dict) or not recipes_raw:
        mistakes.append(f'{name}: [recipes] needs at least one line: 1 = "model.safetensors" (product number = model file)')
    else:
        for number, model in recipes_raw.items():
            if not str(number).isdigit() or not 0 <= int(number) <= 65535:
                mistakes.append(f"{name}: [recipes] key {number!r} is not a recipe number (0 to 65535)")
            elif not isinstance(model, str):
                mistakes.append(f'{name}: [recipes] {number} must be a model file path in quotes, e.g. {number} = "models/screws.safetensors"')
            else:
                recipes[int(number)] = (base / model).resolve()
    mode = source.get("mode", "arrival")
    if mode not in MODES:
        mistakes.append(f"{name}: [source] mode must be {' or '.join(MODES)} (got {mode!r})")
    if camera and camera["trigger"] == "software" and mode != "trigger":
        mistakes.append(f'{name}: [source.camera] trigger = "software" takes a frame on the station\'s trigger: set mode = "trigger" in [source]')
    if video and mode != "arrival":
        mistakes.append(f'{name}: [source.video] runs free: every frame is a part, so [source] mode must be "arrival"')
    pattern = None
    if "part_id_pattern" in source:
        try:
            pattern = re.compile(source["part_id_pattern"])
            if "part_id" not in pattern.groupindex:
                mistakes.append(f'{name}: [source] part_id_pattern needs a group named part_id, e.g. "(?P<part_id>\\\\d+)"')
        except (re.error, TypeError) as exc:
            mistakes.append(f"{name}: [source] part_id_pattern is not a regular expression ({exc})")
    station = raw.get("station", {})
    numbers = {
        "settle_seconds": (source.get("settle_seconds", 3.0), 0, "[source]"),
        "queue": (station.get("queue", QUEUE_SIZE), 1, "[station]"),
        "trigger_timeout": (station.get("trigger_timeout", TRIGGER_TIMEOUT), 0.01, "[station]"),
    }
    for key, (value, least, where) in numbers.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < least:
            mistakes.append(f"{name}: {where} {key} must be a number of at least {least} (got {value!r})")
    recipe = station.get("recipe", min(recipes) if recipes else 0)
    if recipes and recipe not in recipes:
        mistakes.append(f"{name}: [station] recipe {recipe!r} is not one of [recipes] ({', '.join(map(str, sorted(recipes)))})")
    modbus = None
    if "modbus" in raw and isinstance(raw["modbus"], dict):
        modbus = {"host": raw["modbus"].get("host", "127.0.0.1"), "port": raw["modbus"].get("port", 502)}
        if not isinstance(modbus["port"], int) or not 0 < modbus["port"] < 65536:
            mistakes.append(f"{name}: [modbus] port must be a TCP port, 1 to 65535 (got {modbus['port']!r})")
    mqtt = None
    if "mqtt" in raw and isinstance(raw["mqtt"], dict):
        mqtt = {"broker": raw["mqtt"].get("broker", "127.0.0.1:1883"), "topic": raw["mqtt"].get("topic", "anomaly"), "client_id": raw["mqtt"].get("client_id")}
        try:
            parse_broker(mqtt["broker"])
        except UserError as exc:
            mistakes.append(f"{name}: {exc}")
        if not isinstance(mqtt["topic"], str) or not mqtt["topic"].strip("/") or any(c in mqtt["topic"] for c in "+#"):
            mistakes.append(f'{name}: [mqtt] topic must be a topic name without wildcards, e.g. "line1/anomaly" (got {mqtt["topic"]!r})')
    http = None
    if "http" in raw and isinstance(raw["http"], dict):
        http = {"host": raw["http"].get("host", "127.0.0.1"), "port": raw["http"].get("port", 8080), "token": raw["http"].get("token")}
        if not isinstance(http["port"], int) or not 0 < http["port"] < 65536:
            mistakes.append(f"{name}: [http] port must be a TCP port, 1 to 65535 (got {http['port']!r})")
        if http["host"] not in LOCAL_HOSTS and (not isinstance(http["token"], str) or len(http["token"]) < 16):
            mistakes.append(
                f'{name}: [http] is bound to {http["host"]}, off this machine: give token = "..." (16 characters or more) that every request must send'
            )
    opcua = None
    if "opcua" in raw and isinstance(raw["opcua"], dict):
        opcua = {"host": raw["opcua"].get("host", "127.0.0.1"), "port": raw["opcua"].get("port", 4840), "users": raw["opcua"].get("users", {})}
        opcua["certificate"], opcua["private_key"] = (raw["opcua"].get(k) for k in ("certificate", "private_key"))
        if bool(opcua["certificate"]) != bool(opcua["private_key"]):
            mistakes.append(f"{name}: [opcua] certificate and private_key go together: give both files, or neither")
        for key in ("certificate", "private_key"):
            if opcua[key]:
                opcua[key] = str((base / opcua[key]).resolve())
                if not Path(opcua[key]).is_file():
                    mistakes.append(f"{name}: [opcua] {key} {opcua[key]} does not exist")
        if not isinstance(opcua["port"], int) or not 0 < opcua["port"] < 65536:
            mistakes.append(f"{name}: [opcua] port must be a TCP port, 1 to 65535 (got {opcua['port']!r})")
        if not isinstance(opcua["users"], dict) or not all(isinstance(v, str) and v for v in opcua["users"].values()):
            mistakes.append(f'{name}: [opcua] users must be a table of user names and passwords, e.g. users = {{ plc = "secret" }}')
        elif opcua["host"] not in LOCAL_HOSTS and not opcua["users"]:
            mistakes.append(
                f'{name}: [opcua] is bound to {opcua["host"]}, off this machine: give users = {{ NAME = "PASSWORD" }}; anonymous access is for 127.0.0.1 only'
            )
    archive = sections.archive(raw.get("archive"), base, name, mistakes)
    journal = raw.get("journal", {}).get("path", "verdicts.csv") if isinstance(raw.get("journal", {}), dict) else "verdicts.csv"
    if mistakes:
        return None, mistakes
    return (
        StationFile(
            path=path,
            inbox=(base / source["inbox"]).resolve() if "inbox" in source else base,
            recipes=recipes,
            journal=(base / journal).resolve(),
            mode=mode,
            part_id_pattern=pattern,
            settle_seconds=float(numbers["settle_seconds"][0]),
            polling=bool(source.get("polling", False)),
            recipe=int(recipe),
            queue=int(numbers["queue"][0]),
            trigger_timeout=float(numbers["trigger_timeout"][0]),
            regions=bool(station.get("regions", False)),
            modbus=modbus,
            mqtt=mqtt,
            http=http,
            opcua=opcua,
            camera=camera,
            video=video,
            archive=archive,
        ),
        [],
    )
