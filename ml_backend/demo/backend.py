"""Our ML backend as a real server (the demo, the end-to-end tests), started exactly as the Docker image starts it:
docker/entrypoint.sh."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_backend.demo.processes import free_port, running_process, wait_until_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO_ROOT / "docker" / "healthcheck.py"
# Loading a model and building the first segmentor takes a few seconds on this CPU; a busy machine more.
START_TIMEOUT_S = 180.0
# Variables of the service that must come from the caller (demo or test), never from the surrounding environment.
_SERVICE_PREFIXES = ("EMERDIFF_", "LABEL_STUDIO_", "BASIC_AUTH_", "GUNICORN_")
_SERVICE_NAMES = (
    "HOST", "PORT", "THREADS", "WORKERS", "DEVICE", "MODEL_DIR", "CACHE_DIR", "CACHE_MAX_BYTES", "DATA_DIR",
    "LOCAL_FILES_DOCUMENT_ROOT", "ALLOWED_IMAGE_HOSTS", "ALLOW_PRIVATE_IMAGE_ADDRESSES", "LOG_LEVEL", "FETCH_TIMEOUT",
    "CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MAX_REQUEST_BYTES",
    "MAX_TASKS_PER_REQUEST", "MAX_SEGMENTATIONS_PER_TASK", "MAX_SMART_PROMPTS", "PREDICT_QUEUE_SIZE",
    "PREDICT_BUDGET_SECONDS", "BACKGROUND_QUEUE_SIZE", "LEARNING_QUEUE_SIZE",
)


@dataclass(frozen=True)
class BackendServer:
    url: str
    port: int
    env: Mapping[str, str]
    log_path: Path
    pid: int
    start_seconds: float


def backend_environment(settings: Mapping[str, str], *, port: int) -> dict[str, str]:
    """The process environment: this one without any service variable, plus ``settings`` and the port."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SERVICE_PREFIXES) and name not in _SERVICE_NAMES
    }
    env.update(PYTHON=sys.executable, HOST="127.0.0.1", PORT=str(port), HF_HUB_OFFLINE="1", **settings)
    return env


@contextmanager
def running_backend(
    settings: Mapping[str, str], *, log_path: Path, port: int | None = None
) -> Iterator[BackendServer]:
    """Run the entrypoint (gunicorn without control socket) on ``port`` (else a free one) until the block ends."""
    port = port or free_port()
    env = backend_environment(settings, port=port)
    command = ["bash", str(ENTRYPOINT), "--no-control-socket"]
    with running_process(command, env=env, cwd=REPO_ROOT, log_path=log_path) as process:
        url = f"http://127.0.0.1:{port}"
        seconds = wait_until_healthy(
            process,
            f"{url}/health",
            timeout_s=START_TIMEOUT_S,
            log_path=log_path,
            is_healthy=lambda response: response.ok and response.json().get("status") == "UP",
        )
        yield BackendServer(url, port, env, log_path, process.pid, seconds)
