"""``anomaly station``: one inspection station the line's controls talk to.

Every recipe's model is loaded and warm before ``ready`` rises. Each image that arrives in the
inbox is one part: judged by the recipe active when it arrived (with triggers: when its trigger
came), its row written to the journal and fsynced, and only then shown to the PLC through the
handshake (``deploy/station/handshake.py``), whose rules keep a stale or foreign result from ever
being read. Anything that fails is a result too: ``ng`` and ``error`` with an ``error_code``.

As ``watch``: an image with a journal row is never judged again, so a kill at any moment loses no
verdict and repeats none (a result journaled but not yet read by the PLC before a kill is not
shown after the restart: the journal has it). Sequence numbers go on from the journal's last.
No PyTorch here for int8 or exported models (an import contract), as for watch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from anomalycli.data.encoding import encoding_of
from anomalycli.data.images import ImageError, original_size, read_image_array
from anomalycli.data.inbox import Inbox
from anomalycli.deploy import journal as journals
from anomalycli.deploy.archive import Archive
from anomalycli.deploy.camera.acquisition import Acquisition
from anomalycli.deploy.camera.frames import Frame
from anomalycli.deploy.camera.genicam_camera import GenICamCamera
from anomalycli.deploy.camera.video import VideoCamera
from anomalycli.deploy.http_api import listening_socket
from anomalycli.deploy.line import Judged, Line
from anomalycli.deploy.scoring import scored_row
from anomalycli.deploy.station import config, signals
from anomalycli.deploy.station.handshake import Handshake, Result, Trigger
from anomalycli.deploy.station.http import HttpServer, StationMetrics, make_app
from anomalycli.deploy.station.modbus import ModbusServer
from anomalycli.deploy.station.mqtt import MqttPublisher, delivered_file, read_delivered, write_delivered
from anomalycli.deploy.station.opcua import OpcUaServer
from anomalycli.errors import UserError
from anomalycli.workflows.camera_frames import FRAME_COLUMNS, archive_of, frame_name, frame_windows, judge_frame, keep, next_frames, video_read_after

# The journal's columns: watch's, then the part, its place in the PLC's sequence, the recipe and
# model that judged it, the error code the PLC was shown, the camera frame's ID and timestamp (from
# a camera), and the image's file in the archive (where it was kept).
BEFORE_CAMERAS = (*journals.COLUMNS, "part_id", "seq", "recipe", "model_sha256", "error_code")
COLUMNS = (*BEFORE_CAMERAS, *FRAME_COLUMNS)
MODEL_CHECK_SECONDS = 1.0  # how often the recipes' model files are looked at for a replacement


def check(path: Path) -> list[str]:
    """Every mistake in the station file at ``path``, one line each, found without starting it:
    the file's own, then each recipe's model (loaded and probed), the journal, each server's port."""
    station, mistakes = config.parse(path)
    if station is None:
        return mistakes
    for number, model in sorted(station.recipes.items()):
        try:
            Line(model, with_regions=station.regions)
        except UserError as exc:
            mistakes.append(f"recipe {number}: {exc}")
    try:
        journals.Journal(station.journal, COLUMNS, (BEFORE_CAMERAS,), "anomaly station").close()
    except UserError as exc:
        mistakes.append(str(exc))
    for section, server in (("modbus", station.modbus), ("opcua", station.opcua), ("http", station.http)):
        if server:
            try:  # bound as the station's servers bind, and let go: a port in TIME_WAIT is free to them
                listening_socket(server["host"], server["port"], f"[{section}] port").close()
            except UserError as exc:
                mistakes.append(str(exc))
    if station.camera:  # found by the producer now: listed, not opened (the station waits for one that is off)
        try:
            missing = _genicam_camera(station.camera).missing()
        except UserError as exc:
            missing = str(exc)
        if missing:
            mistakes.append(f"[source.camera] {missing}; see anomaly cameras --cti FILE")
    return mistakes


def _genicam_camera(c: dict) -> GenICamCamera:
    """The station file's [source.camera], not yet opened."""
    return GenICamCamera(Path(c["cti"]), c["index"], c["serial"], c["model"], c["trigger"], c["features"])


class Station:
    """A running station: ``start`` loads the recipes and opens the interfaces, ``run`` judges
    until ``stop`` is set, ``close`` closes everything."""

    def __init__(self, station: config.StationFile, say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.file, self.say, self.clock = station, say, clock
        self.journal = journals.Journal(station.journal, COLUMNS, (BEFORE_CAMERAS,), "anomaly station")
        last_seq = (self.journal.last or {}).get("seq", "")
        self.handshake = Handshake(station.recipe, int(last_seq) + 1 if str(last_seq).isdigit() else 1, station.queue, station.trigger_timeout, clock)
        self.modbus = ModbusServer(self.handshake, station.modbus["host"], station.modbus["port"]) if station.modbus else None
        self.opcua = None
        if station.opcua:
            o = station.opcua
            self.opcua = OpcUaServer(self.handshake, o["host"], o["port"], o["users"], o["certificate"], o["private_key"])
        self.metrics = StationMetrics()
        self.http = None
        if station.http:
            app = make_app(self.handshake, self.metrics, self._models, station.http["token"])
            self.http = HttpServer(app, station.http["host"], station.http["port"])
        self.mqtt = None
        if station.mqtt:
            self.mqtt = MqttPublisher(station.mqtt["broker"], station.mqtt["topic"], station.mqtt["client_id"], delivered_file(station.journal))
        self.lines: dict[int, Line] = {}
        self.stamps: dict[int, tuple] = {}  # each recipe's model file as last loaded (or tried)
        self.loading: dict[int, tuple[threading.Thread, list]] = {}  # replacements loading beside the serving model
        self.next_check = 0.0
        self.inbox: Inbox | None = None
        self.acquisition: Acquisition | None = None
        self.archive: Archive | None = None
        self.heatmaps = bool(station.archive and station.archive["heatmaps"])
        self.fired: Trigger | None = None  # the trigger the camera was last fired for (software triggers)
        self.counts = {"judged": 0, "ng": 0, "errors": 0}
        self.closed = False

    def start(self) -> None:
        """The interfaces first (``ready`` low, so the PLC sees the station is starting), then every
        recipe loaded and warm, then ``ready``."""
        if self.modbus is not None:
            self.modbus.start()
            self.say(f"modbus: listening on {self.file.modbus['host']}:{self.file.modbus['port']} (anomaly station --map for the addresses)")
        if self.opcua is not None:
            self.opcua.start()
            security = "Basic256Sha256, sign and encrypt" if self.file.opcua["certificate"] else "no message security"
            access = "user names" if self.file.opcua["users"] else "anonymous, this machine only"
            self.say(f"opcua: {self.opcua.endpoint} ({security}; {access})")
        for number, model in sorted(self.file.recipes.items()):
            self.stamps[number] = _stamp(model)
            self.lines[number] = Line(model, with_maps=self.heatmaps, with_regions=self.file.regions)
            identity = self.lines[number].identity
            self.say(f"recipe {number}: {model.name} ({identity['method']}, sha256 {identity['sha256']}), {identity['engine']}")
        self.archive = archive_of(self.file.archive, self.say)
        if self.archive is not None:
            policy = self.archive.policy
            self.say(f"archive: {policy.path} ({len(self.archive)} images kept; every flagged and error image, one good in {policy.keep_good_every})")
        camera = self._camera()
        if camera is None:
            self.inbox = Inbox(self.file.inbox, polling=self.file.polling)
        else:
            source = self.file.camera or self.file.video
            self.handshake.set_station_error(signals.CAMERA_DISCONNECTED)  # ready rises once the camera is acquiring
            self.acquisition = Acquisition(camera, self.say, source["queue"], source["every"], self._camera_state)
        if self.http is not None:
            self.http.start()
            self.say(f"http: /health and /metrics at http://{self.file.http['host']}:{self.file.http['port']}")
        if self.mqtt is not None:
            self.mqtt.start()
            self.say(f"mqtt: results to {self.mqtt.results_topic} on {self.file.mqtt['broker']} (QoS 1), status on {self.mqtt.status_topic}")
            self._resend_unconfirmed()
        self.handshake.set_ready(True)
        if self.acquisition is not None:  # last: the frames come once the station can judge them
            self.acquisition.start(wait=5.0)
        self.say(
            f"station ready: recipe {self.handshake.recipe_active} active; images from {self.file.source_name} ({self.file.mode}); "
            f"journal {self.file.journal} ({self.journal.rows} rows); Ctrl-C or SIGTERM stops"
        )

    def _camera(self):
        """The station file's camera source, not yet opened; None for an inbox."""
        if self.file.camera:
            return _genicam_camera(self.file.camera)
        if self.file.video:
            return VideoCamera(self.file.video["url"], video_read_after(self.file.video["url"], self.journal.last))
        return None

    def _camera_state(self, connected: bool) -> None:
        """The camera came or went (the acquisition thread says): ``ready`` and ``station_error`` follow."""
        self.handshake.set_station_error(0 if connected else signals.CAMERA_DISCONNECTED)

    def run(self, stop: threading.Event) -> dict:
        if self.inbox is not None:
            for path in self.inbox.present():  # what arrived while no station ran
                self._consider(path)
        while not stop.is_set():
            self._step(timeout=0.01)
        return dict(self.counts)

    def _step(self, timeout: float) -> None:
        self._switch_recipe()
        self._replace_models()
        for result in self.handshake.tick():
            self._record(result, None, self.lines[result.recipe].identity["sha256"] if result.recipe in self.lines else "")
        if self.acquisition is None:
            for path in self.inbox.arrived(timeout=timeout):
                self._consider(path)
            return
        self._fire_for_trigger()
        for frame, dropped in next_frames(self.acquisition, timeout):
            self._consider_frame(frame, signals.FRAME_DROPPED if dropped else signals.FRAME_LOST)

    def _fire_for_trigger(self) -> None:
        """With a software-triggered camera: fire it once for each trigger the PLC gave."""
        if self.file.camera is None or self.file.camera["trigger"] != "software":
            return
        waiting = self.handshake.next_trigger()
        if waiting is not None and waiting is not self.fired:
            self.fired = waiting
            self.acquisition.fire()

    def _consider_frame(self, frame: Frame, error_code: int) -> None:
        """Judge a camera frame as one part (a frame lost, incomplete or dropped: an error result
        with ``error_code``). In trigger mode a free-running camera's frames between triggers are no parts."""
        free_running = self.file.video is not None or self.file.camera["trigger"] == "free"
        if self.file.mode == "trigger" and free_running and self.handshake.next_trigger() is None:
            return
        trigger, recipe, part_id, shown = self._part(frame_name(frame))
        line = self.lines[recipe]
        self.handshake.job_started()
        try:
            try:
                judged, said = judge_frame(line, frame)
                code = error_code if judged.verdict == "error" else 0
            except Exception as exc:  # a model that fails is an NG with an error code, never a silent pass
                judged, said, code = _model_failed(frame_name(frame), frame.arrived, exc), [], signals.MODEL_FAILED
            for text in said:
                self.say(text)
            archived = keep(self.archive, frame.image, judged, line, self.heatmaps, part_id, recipe, frame_windows(line, frame))
            extra = {"frame_id": frame.frame_id, "frame_timestamp_ns": frame.timestamp_ns or "", "archived": archived}
            result = self.handshake.new_result(part_id, recipe, judged.scored.score, judged.verdict == "anomaly", code)
            self._record(result, judged, line.identity["sha256"], shown=shown, extra=extra)
            self.journal.forget(lambda key: False)  # a frame never comes again: nothing to remember it by
        finally:
            self.handshake.job_done()

    def _switch_recipe(self) -> None:
        wanted = self.handshake.recipe_wanted()
        if wanted is None:
            return
        if wanted in self.lines:
            self.handshake.recipe_switched(wanted)
            self.say(f"recipe {wanted} active ({self.lines[wanted].identity['file']})")
        else:
            self.handshake.recipe_refused(signals.UNKNOWN_RECIPE)
            self.say(f"recipe {wanted} refused: the station file has no such recipe; recipe {self.handshake.recipe_active} stays")

    def _models(self) -> dict:
        """Each recipe's serving model, for /health."""
        return {str(n): {k: line.identity[k] for k in ("file", "sha256", "method", "engine")} for n, line in dict(self.lines).items()}

    def _replace_models(self) -> None:
        """A recipe's model file changed on disk (a new calibrate or adapt written over it): the new
        file is loaded, probed and warmed beside the serving one on a thread of its own, and takes
        over between two parts; one that fails leaves the old one serving. Each says so in one line;
        the journal's model_sha256 says which model judged every part."""
        for number, (thread, outcome) in list(self.loading.items()):
            if thread.is_alive():
                continue
            del self.loading[number]
            old = self.lines[number].identity["sha256"]
            if isinstance(outcome[0], Line):
                self.lines[number] = outcome[0]
                self.say(f"recipe {number}: model file replaced; sha256 {outcome[0].identity['sha256']} judges from now on (was {old})")
            else:
                self.say(f"recipe {number}: the changed model file does not load ({outcome[0]}); sha256 {old} keeps judging")
        if self.clock() < self.next_check:
            return
        self.next_check = self.clock() + MODEL_CHECK_SECONDS
        for number, model in self.file.recipes.items():
            stamp = _stamp(model)
            if stamp != self.stamps[number] and number not in self.loading:
                self.stamps[number] = stamp
                outcome: list = []
                thread = threading.Thread(target=_load_line, args=(model, outcome, self.file.regions, self.heatmaps), daemon=True)
                thread.start()
                self.loading[number] = (thread, outcome)

    def _consider(self, path: Path) -> None:
        """Judge ``path`` as one part, unless its row is in the journal already."""
        try:
            stat = path.stat()
        except OSError:
            return
        name = path.relative_to(self.file.inbox).as_posix()
        identity = (name, str(stat.st_size), str(stat.st_mtime_ns))
        if identity in self.journal:
            return
        arrived = time.monotonic()
        trigger, recipe, part_id, shown = self._part(name)
        line = self.lines[recipe]
        self.handshake.job_started()
        try:
            judged, code = self._judge(line, path, name, arrived)
            if judged is None:  # still being written: looked at again once settled
                if trigger is not None:
                    self.handshake.unclaim_trigger(trigger)
                return
            judged.bytes, judged.mtime_ns = identity[1], identity[2]
            archived = keep(self.archive, path, judged, line, self.heatmaps, part_id, recipe)
            result = self.handshake.new_result(part_id, recipe, judged.scored.score, judged.verdict == "anomaly", code)
            self._record(result, judged, line.identity["sha256"], shown=shown, extra={"archived": archived})
        finally:
            self.handshake.job_done()

    def _part(self, name: str) -> tuple[Trigger | None, int, int, bool]:
        """Whose image ``name`` is: (its trigger, its recipe, its part ID, whether the PLC is shown its result)."""
        trigger = self.handshake.claim_trigger() if self.file.mode == "trigger" else None
        if self.file.mode == "trigger" and trigger is None:
            self.say(f"warning: {name} arrived with no trigger waiting for it; judged into the journal, not shown to the PLC")
        recipe = trigger.recipe if trigger else self.handshake.recipe_active
        part_id = trigger.part_id if trigger else self._part_id(name)
        return trigger, recipe, part_id, self.file.mode == "arrival" or trigger is not None

    def _part_id(self, name: str) -> int:
        """The part ID of an arriving image: from its file name by the station file's pattern, else the PLC's last ``part_id``."""
        if self.file.part_id_pattern is not None:
            match = self.file.part_id_pattern.search(name)
            if match and match.group("part_id").isdigit():
                return int(match.group("part_id"))
        return self.handshake.part_id()

    def _judge(self, line: Line, path: Path, name: str, arrived: float) -> tuple[Judged | None, int]:
        """The image judged by ``line`` and its error code (``signals.ERROR_CODES``: an unreadable
        image, a model that failed), or None where it is too new to call unreadable."""
        size = line.image_size
        try:
            pixels, error = read_image_array(path, size, framing=line.framing, windows=line.windows).transpose(2, 0, 1), ""
        except (ImageError, OSError) as exc:
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                return None, 0  # gone meanwhile: nothing to judge
            if age < self.file.settle_seconds:
                self.inbox.later(path, time.monotonic() + self.file.settle_seconds - age)
                return None, 0
            pixels, error = np.zeros((3, size, size), np.uint8), str(exc)
        sizes = [original_size(path)] if line.wants_sizes and not error else None
        try:
            (judged,), said = line.judge([name], pixels[None], [error], [arrived], sizes, [None if error else encoding_of(path)])
        except Exception as exc:  # a model that fails is an NG with an error code, never a silent pass
            return _model_failed(name, arrived, exc), signals.MODEL_FAILED
        for text in said:
            self.say(text)
        return judged, signals.UNREADABLE if judged.verdict == "error" else 0

    def _record(self, result: Result, judged: Judged | None, sha256: str, shown: bool = True, extra: dict | None = None) -> None:
        """The result's journal row (on disk first; ``extra``: its camera and archive columns), then its place in the PLC's queue."""
        if judged is None:  # a result without an image (a trigger's error)
            row = {"time": journals.now(), "path": "", "verdict": "error", "error": signals.ERROR_CODES[result.error_code]}
        else:
            row = judged.row()
        row.update(part_id=result.part_id, seq=result.seq, recipe=result.recipe, model_sha256=sha256, error_code=result.error_code, **(extra or {}))
        self.journal.append([row])
        if self.mqtt is not None:
            regions = judged.regions if judged is not None else None
            self.mqtt.publish(message(result, row, regions))
        self.metrics.counted("error" if result.error_code else ("NG" if result.ng else "OK"))
        self.counts["judged"] += 1
        self.counts["ng"] += result.ng
        self.counts["errors"] += bool(result.error_code)
        if shown and not self.handshake.publish(result):
            self.say(f"overrun: the PLC has {self.file.queue} results waiting; result {result.seq} (part {result.part_id}) is in the journal only")
        verdict = "error " + str(result.error_code) if result.error_code else ("NG" if result.ng else "OK")
        self.say(f"{verdict} part {result.part_id} seq {result.seq} recipe {result.recipe} score {result.score:.3f} {row['path']}")

    def _resend_unconfirmed(self) -> None:
        """The journal's results the broker had not confirmed when the station last stopped (killed
        with messages waiting, or the broker away), sent again in order before any new one."""
        last = str((self.journal.last or {}).get("seq", ""))
        last_seq = int(last) if last.isdigit() else 0
        delivered = read_delivered(self.mqtt.delivered)
        if delivered is None or delivered > last_seq:  # MQTT new to this journal, or the journal new: nothing owed
            write_delivered(self.mqtt.delivered, last_seq)
            return
        if delivered == last_seq:  # every result confirmed: the journal is not read again
            return
        owed = [row for row in journals.rows_of(self.journal.path) if str(row.get("seq", "")).isdigit() and int(row["seq"]) > delivered]
        for row in owed:
            self.mqtt.publish({**message(_result_of(row), row), "resent": True})
        if owed:
            self.say(
                f"mqtt: {len(owed)} results the broker had not confirmed before this start are sent again (at least once: an MES may see one twice, with its seq)"
            )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.handshake.set_ready(False)
        if self.acquisition is not None:
            self.acquisition.stop()
        if self.modbus is not None:
            self.modbus.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.opcua is not None:
            self.opcua.stop()
        if self.http is not None:
            self.http.stop()
        if self.inbox is not None:
            self.inbox.close()
        self.journal.close()


def message(result: Result, row: dict, regions: list | None = None) -> dict:
    """A result as its MQTT message (``docs/station-result.schema.json``); with the station's
    ``regions``, the image's defect regions too."""
    out = {
        "part_id": result.part_id,
        "seq": result.seq,
        "recipe": result.recipe,
        "model_sha256": row["model_sha256"],
        "score": result.score,
        "verdict": "NG" if result.ng else "OK",
        "error_code": result.error_code,
        "error": row.get("error", ""),
        "image": row.get("path", ""),
        "time": row["time"],
    }
    if regions is not None:
        out["regions"] = [r.to_dict() for r in regions]
    return out


def _result_of(row: dict) -> Result:
    """A journal row's result, as the PLC was shown it."""
    error_code = int(row.get("error_code") or 0)
    try:
        score = 0.0 if error_code else float(row["score"])
    except ValueError:
        score = 0.0
    return Result(int(row["seq"]), int(row["part_id"]), int(row["recipe"]), score, row["verdict"] != "normal" or bool(error_code), error_code)


def _model_failed(name: str, arrived: float, exc: Exception) -> Judged:
    """The part whose model raised ``exc``: an error verdict saying so."""
    scored = scored_row(Path(name), float("nan"), float("nan"), f"the model failed: {type(exc).__name__}: {exc}", 0.5)
    return Judged(name, scored, 1000 * (time.monotonic() - arrived))


def _stamp(path: Path) -> tuple:
    """What tells a replaced file: its inode, size and modification time (None where it is gone)."""
    try:
        stat = path.stat()
    except OSError:
        return (None,)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _load_line(path: Path, outcome: list, regions: bool = False, maps: bool = False) -> None:
    """``Line(path)`` (loaded, probed, warm) into ``outcome``, or the one-line reason it failed."""
    try:
        outcome.append(Line(path, with_maps=maps, with_regions=regions))
    except Exception as exc:  # any failure leaves the serving model in place; its reason is said
        outcome.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def station(path: Path, say: Callable[[str], None], stop: threading.Event) -> dict:
    """Run the station of the file at ``path`` until ``stop`` is set; this run's counts."""
    running = Station(config.read(path), say)
    try:
        running.start()
        return running.run(stop)
    finally:
        running.close()
