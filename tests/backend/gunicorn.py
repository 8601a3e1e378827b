"""The backend under its real entry point (gunicorn with ml_backend/gunicorn_conf.py) for backend tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_backend.demo.processes import free_port, running_process, wait_until_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0
_SERVICE_PREFIXES = ("EMERDIFF_", "BASIC_AUTH_", "LABEL_STUDIO_", "GUNICORN_")


@dataclass(frozen=True)
class Gunicorn:
    url: str
    pid: int  # the master's
    log_path: Path


def gunicorn_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "ml_backend/gunicorn_conf.py",
        "--no-control-socket",
        "ml_backend.wsgi:app",
    ]


def gunicorn_environment(settings: Mapping[str, str], port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SERVICE_PREFIXES)}
    # One thread per torch op: on a shared CPU, oversubscribed threads slow the tiny model tenfold.
    return env | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HOST": "127.0.0.1", "PORT": str(port), **settings}


@contextmanager
def running_gunicorn(settings: Mapping[str, str], log_path: Path) -> Iterator[Gunicorn]:
    """gunicorn on a free port with ``settings`` as its environment, healthy, until the block ends."""
    port = free_port()
    command = gunicorn_command()
    with running_process(
        command, env=gunicorn_environment(settings, port), cwd=REPO_ROOT, log_path=log_path
    ) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, f"{url}/health", timeout_s=START_TIMEOUT_S, log_path=log_path)
        yield Gunicorn(url, process.pid, log_path)
