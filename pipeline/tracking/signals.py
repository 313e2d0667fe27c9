"""SIGINT and SIGTERM while runs are open: raised as exceptions, held while a SQLite call is under way."""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so runs end KILLED."""


# An interrupt that lands inside a database call can leave this process holding SQLite's write lock in a
# half-finished transaction; the flush that then ends the run KILLED would wait on its own lock. So while
# a SQLite call is under way the signal is only noted, and raised as soon as the call returns. A call to a
# server holds nothing: a signal cuts it (and MLflow's retries) short (TrackedRun._guard).
_shielded = 0
_pending: BaseException | None = None
# Set by the first SIGINT/SIGTERM: the process is ending, so MLflow's HTTP calls from then on get one try and a
# short timeout (store._attempts) instead of minutes of retries against a server that does not answer.
_interrupted = False


def _interrupt(signum: int, frame: object) -> None:
    """Signal handler: SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt, deferred past an MLflow call."""
    global _pending, _interrupted
    _interrupted = True
    exc = Terminated(f"received signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()
    if _shielded:
        _pending = _pending or exc
        return
    raise exc


@contextlib.contextmanager
def _shield():
    """Hold interrupts while MLflow works; raise a held one once no call is under way."""
    global _shielded, _pending
    _shielded += 1
    try:
        yield
    finally:
        _shielded -= 1
    if not _shielded and _pending is not None:
        exc, _pending = _pending, None
        raise exc


def install_signal_handlers() -> None:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt (both held during MLflow calls); main thread.

    SIGINT is set explicitly: a process started in the background of a non-interactive shell inherits
    it ignored, and Ctrl-C or kill -INT must still end the run as KILLED.
    """
    global _interrupted
    if threading.current_thread() is threading.main_thread():
        _interrupted = False  # a new stage or job: a worker reused after an interrupted one starts afresh
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)


def interrupted() -> bool:
    """Whether this process received SIGINT or SIGTERM since the handlers were installed, and they still are
    (a stage ending its runs; not whatever runs in the process after the stage restored the handlers)."""
    return _interrupted and signal.getsignal(signal.SIGTERM) is _interrupt


def drop_pending() -> None:
    """Forget a held interrupt (a run already ending because of it)."""
    global _pending
    _pending = None
