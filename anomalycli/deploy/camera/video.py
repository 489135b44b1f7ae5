"""A video source through OpenCV: a network stream (``rtsp://...``, ``http://...``), a video file, or a
USB camera by its index ("0"). Free-running only: every frame (or one in N) is a part.

A stream that breaks is a lost camera (reopened with back-off by ``acquisition.py``); a file that
ends is done: it gives no more frames. A file is read on from ``after`` (the last frame a journal
holds of it), so a station killed and started again judges none of its frames twice.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from anomalycli.data.pixel_formats import CAMERA_INSTALL_HINT
from anomalycli.deploy.camera.frames import CameraGone, Frame
from anomalycli.errors import UserError


class VideoCamera:
    """``Camera`` of ``frames.py`` over ``cv2.VideoCapture``."""

    def __init__(self, url: str, after: int = 0):
        self.url = str(url)
        self.name = self.url
        self.is_file = "://" not in self.url and not self.url.isdigit()
        self._capture = None
        self._count = 0
        self._after = after if self.is_file else 0
        self._ended = False

    def open(self) -> list[str]:
        try:
            import cv2
        except ImportError:
            raise UserError(f"a video source is read through OpenCV, which is not installed; run: {CAMERA_INSTALL_HINT}") from None
        if self.is_file and not Path(self.url).is_file():
            raise UserError(f"video file {self.url} does not exist; check [source.video] url")
        self.close()
        capture = cv2.VideoCapture(int(self.url) if self.url.isdigit() else self.url)
        if not capture.isOpened():
            capture.release()
            raise CameraGone(f"OpenCV cannot open {self.url}")
        self._capture = capture
        if not self.is_file:
            self._count = 0  # a stream's frames are counted from its opening
        return []

    def grab(self, timeout: float) -> Frame | None:
        if self._ended:
            time.sleep(timeout)
            return None
        while self._count < self._after and self._capture.grab():  # frames judged before a restart
            self._count += 1
        ok, pixels = self._capture.read()
        if not ok:
            if self.is_file:
                self._ended = True
                return None
            raise CameraGone("the stream gave no frame")
        import cv2

        self._count += 1
        position_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0
        image = Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), "RGB")
        return Frame(image, self._count, int(position_ms * 1e6), self.name, time.monotonic(), "", "BGR8")

    @property
    def live(self) -> bool:
        """Whether frames come whether or not they are taken (a stream, a camera), or wait to be read (a file)."""
        return not self.is_file

    @property
    def ended(self) -> bool:
        """Whether a video file has given its last frame."""
        return self._ended

    def fire(self) -> None:
        raise UserError("a video source runs free: it has no software trigger")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
