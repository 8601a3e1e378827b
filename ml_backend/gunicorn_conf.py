"""gunicorn settings, from the same environment variables as the app (see ml_backend/core/settings.py).

One worker per process holds the model in GPU memory, so one worker (run one container per GPU);
its threads keep /health answering while a prediction holds the GPU lock. Settings are validated here
already, so a bad variable stops the server before a worker starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from types import FrameType

from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from ml_backend.core.settings import Settings, SettingsError

try:
    _settings = Settings.from_env()
except SettingsError as error:
    sys.exit(f"emerdiff ml_backend: invalid setting: {error}")

bind = (
    f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host else f"{_settings.host}:{_settings.port}"
)
workers = 1
worker_class = "gthread"
threads = _settings.threads
# Above Label Studio's 100 s prediction timeout: a long batch must not get its worker killed.
timeout = _settings.worker_timeout
# Requests in flight get this long after SIGTERM; Docker kills the container 10 s after SIGTERM unless the
# compose file's stop_grace_period says otherwise, so the default (8 s) ends before that.
graceful_timeout = _settings.graceful_timeout
# The model loads inside the worker: CUDA must not be initialised in the master before forking.
preload_app = False
loglevel = _settings.log_level.lower()
accesslog = "-"
errorlog = "-"


def post_worker_init(worker: ThreadWorker) -> None:
    """Make a stopping worker refuse new connections instead of leaving them hanging.

    On SIGTERM gunicorn's gthread worker stops accepting and drains, but keeps its listening socket open
    until it exits: connections arriving meanwhile complete in the kernel's backlog and wait there,
    unanswered, for up to the graceful timeout. The socket is shared with the master, so it is shut down
    only when the master has already closed its copy (it does so before signalling the worker to stop);
    a worker replaced by a SIGHUP reload leaves the listener to its successor.
    """
    drain = worker.handle_exit

    def refuse_then_drain(signum: int, frame: FrameType | None) -> None:
        worker.set_accept_enabled(False)  # no accept() on a socket about to be shut down
        if _master_has_closed(worker.sockets, worker.ppid):
            for listener in worker.sockets:
                with contextlib.suppress(OSError):
                    listener.sock.shutdown(socket.SHUT_RDWR)  # pending and new connections are reset
            worker.log.info("Stopped listening: new connections are refused while requests in flight finish")
        drain(signum, frame)

    signal.signal(signal.SIGTERM, refuse_then_drain)


def worker_exit(server: Arbiter, worker: ThreadWorker) -> None:
    """End a worker that stopped cleanly without the interpreter's teardown.

    Its requests are answered and its files written by then; the teardown (garbage-collecting torch and
    the model) took 8 s of an idle worker's stop in the image here, so that gunicorn's graceful timeout,
    not the drain, decided when `docker stop` returned. A worker leaving with an error (boot or app load
    failure: exit codes gunicorn's master acts on) exits the normal way.
    """
    leaving = sys.exc_info()[1]  # called while gunicorn's sys.exit(code) unwinds
    if isinstance(leaving, SystemExit) and leaving.code in (0, None):
        _exit_now()


def on_exit(server: Arbiter) -> None:
    """The same for the master (it imports torch with the settings; its teardown took 6 s) after a stop by
    signal; a halt with an error status (a worker that failed to boot) exits the normal way."""
    if isinstance(sys.exc_info()[1], StopIteration | KeyboardInterrupt):  # gunicorn's "stop" unwinding
        _exit_now()


def _exit_now() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _master_has_closed(listeners: list, master_pid: int) -> bool:
    """Whether the master process holds none of ``listeners`` any more (read from /proc; False if unknown)."""
    ours = {f"socket:[{os.fstat(listener.fileno()).st_ino}]" for listener in listeners}
    fd_dir = f"/proc/{master_pid}/fd"
    try:
        held = set()
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):  # an fd closed while we look
                held.add(os.readlink(f"{fd_dir}/{fd}"))
    except OSError:
        return False
    return not ours & held
