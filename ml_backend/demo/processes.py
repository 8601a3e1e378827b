"""Servers started by the end-to-end tests: free ports, waiting for health, stopping by pid.

Every process is started in its own session (process group) so that stopping it also stops the
workers it forked (gunicorn's worker, Label Studio's), and only them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

# Seconds a stopped server gets to exit after SIGTERM before it is killed.
_STOP_GRACE_S = 15.0


class ServerStartError(RuntimeError):
    """A server under test exited, or did not become healthy in time; the message holds its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path: Path, chars: int = 4000) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return text[-chars:]


@contextmanager
def running_process(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path
) -> Iterator[subprocess.Popen]:
    """Run ``command`` with stdout and stderr in ``log_path``; stop its process group on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the group led by ``process`` (its own pid), SIGKILL it if it outlives the grace period."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=_STOP_GRACE_S)


def wait_until_healthy(
    process: subprocess.Popen,
    url: str,
    *,
    timeout_s: float,
    log_path: Path,
    is_healthy: Callable[[requests.Response], bool] = lambda response: response.ok,
) -> float:
    """Poll ``url`` until ``is_healthy``; the seconds it took. Raise if the process dies or time runs out."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(
                f"{process.args[0]} exited with status {process.returncode} before {url} answered; "
                f"log tail:\n{log_tail(log_path)}"
            )
        try:
            if is_healthy(requests.get(url, timeout=2)):
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise ServerStartError(f"{url} not healthy after {timeout_s:.0f} s; log tail:\n{log_tail(log_path)}")
