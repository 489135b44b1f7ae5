"""Reaching a Ray cluster: its address, the connection, and waiting on its tasks. No PyTorch here:
the CLI checks an --ray address before anything heavy is imported.

predict and fit on a Ray cluster: the same units of work as one process, run by Ray.
Scoring on it is ``ray_predict.py``, fitting ``ray_fit.py``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from anomalycli.errors import UsageError, UserError
from anomalycli.runtime import progress_bar

INSTALL_HINT = 'pip install "anomalycli[ray]"'
LOCAL = "local"  # --ray without an address: a Ray instance on this machine, started and stopped here
MAX_RETRIES = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed; run: {INSTALL_HINT}") from None
    return ray


def is_address(word: str) -> bool:
    """``local``, ``auto``, or anything with a colon (HOST:PORT, ray://HOST:PORT)."""
    return word in (LOCAL, "auto") or ":" in word


def check_address(address: str) -> None:
    """Refuse an address that is none (such as ``--ray=images``), and a missing Ray, in one line."""
    _ray()
    if not is_address(address):
        raise UsageError(f"--ray {address}: not a cluster address; give --ray alone (this machine), --ray auto or --ray HOST:PORT")


def connect(address: str = LOCAL):
    """The ``ray`` module, connected: to a running instance if there is one in this process, else to
    ``address`` (``local`` starts one on this machine)."""
    check_address(address)
    ray = _ray()
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            if address == LOCAL:
                ray.init(include_dashboard=False, logging_level=logging.ERROR)
            else:
                ray.init(address=address, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise _unreachable(address, str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__) from None
    import ray.data  # sets up its logging as it is imported

    # Ray Data logs each run's plan, and a failed run's traces, to the console as well as to its log
    # files: the console gets our progress bar and one line instead; /tmp/ray/session_latest/logs keeps all.
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL)
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT nothing answers on is one line in seconds; Ray itself would retry for minutes."""
    if address in (LOCAL, "auto"):
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise _unreachable(address, f"{type(exc).__name__}: {exc}") from None


def _unreachable(address: str, reason: str) -> UserError:
    return UserError(f"cannot reach a Ray cluster at {address} ({reason}); start one with 'ray start --head' or check the address")


def workers(ray) -> int:
    """One worker per CPU of the cluster: each runs one image at a time on one core."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _reason(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:160]}" if text else type(cause).__name__


def _wait(ray, refs: list, desc: str, show_progress: bool, missing: Callable[[int], str]) -> None:
    """Wait for every task, counting them on a bar; a task that failed past its retries is one UserError."""
    position = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    with progress_bar(total=len(refs), desc=f"{desc} on Ray", unit="task", shown=show_progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done)
            except Exception as exc:  # Ray raises its own kinds once its retries are spent
                raise UserError(f"the Ray fit stopped ({_reason(exc)}): {missing(position[done[0]])}; no model was written") from None
            bar.update(len(done))
