"""Images straight from a camera: GenICam cameras through their vendor's GenTL producer
(``genicam_camera.py``), video files, network streams and USB cameras through OpenCV
(``video.py``), and the thread that acquires their frames into a bounded queue (``acquisition.py``)."""
