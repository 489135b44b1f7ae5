"""A frame as every camera source gives it, and the few things each source must do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


class CameraGone(Exception):
    """The camera stopped answering (cable pulled, power cycled, the stream ended): reconnect."""


@dataclass
class Frame:
    """One frame: its pixels as the file ``predict`` would read (``pixel_formats.frame_image``), or
    None with ``error`` where it was lost or incomplete (still a part: an error result, never silence)."""

    image: Image.Image | None
    frame_id: int  # the camera's own count (GenICam's), or the source's where it has none
    timestamp_ns: int  # the camera's clock where it gives one, else 0
    camera: str  # which camera: its serial number, or the stream's name
    arrived: float = 0.0  # time.monotonic() when the frame was taken from the camera
    error: str = ""
    pixel_format: str = field(default="", repr=False)


class Camera(Protocol):
    """What a source does; ``acquisition.Acquisition`` drives it."""

    name: str
    live: bool  # frames come whether or not they are taken (dropped when the queue is full); False: a file, read as it is judged

    def open(self) -> list[str]:
        """Connect and start acquiring; the lines to say (each feature the camera did not take as written).
        ``CameraGone`` where it cannot be reached."""

    def grab(self, timeout: float) -> Frame | None:
        """The next frame, or None where none came within ``timeout`` seconds. ``CameraGone`` where the camera is lost."""

    def fire(self) -> None:
        """A software trigger: the camera takes a frame now (cameras in ``trigger = "software"`` only)."""

    def close(self) -> None:
        """Stop acquiring and let the camera go (also after ``CameraGone``)."""
