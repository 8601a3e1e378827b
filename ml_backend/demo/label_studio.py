"""A real Label Studio for the demo and the end-to-end tests: installed from PyPI into its own venv, run on
127.0.0.1.

Label Studio's pins differ from the backend's, so it never shares the project's ``.venv``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from ml_backend.demo.processes import ServerStartError, free_port, log_tail, running_process, wait_until_healthy

LABEL_STUDIO_VERSION = "1.23.2"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin12345"
# First start runs every migration (~40 s alone, more on a busy machine); later starts take seconds.
START_TIMEOUT_S = 420.0  # a loaded 2-core machine has needed over 3 minutes
INSTALL_TIMEOUT_S = 900.0
# Label Studio settings that docker-compose.yml gives its label-studio service too, so that the
# end-to-end test runs under the same network policy as the deployment:
# - the backend lives on a private address (a compose network, or 127.0.0.1 here), which Label Studio's
#   default SSRF subnet list refuses both as an ML backend URL and as the webhook it creates for it;
# - with that list off, the link-local range (cloud metadata endpoints) stays banned;
# - "Retrieve predictions" sends all selected tasks in one request: give it more than the default 100 s.
DEPLOYMENT_SETTINGS = {
    "USE_DEFAULT_BANNED_SUBNETS": "false",
    "USER_ADDITIONAL_BANNED_SUBNETS": "169.254.0.0/16,fe80::/10",
    "ML_TIMEOUT_PREDICT": "600",
}
# Generic names that Label Studio's settings read as its own: never pass them on.
_LEAKING_VARIABLES = ("USERNAME", "PASSWORD", "HOST", "PORT", "PYTHONPATH", "VIRTUAL_ENV")


class LabelStudioInstallError(RuntimeError):
    """Label Studio could not be installed into its venv; the message holds pip's output tail."""


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    data_dir: Path
    document_root: Path
    log_path: Path
    pid: int
    # Seconds from launch to a healthy /health (first start includes the database migrations).
    start_seconds: float


def installed_version(venv: Path) -> str | None:
    """The ``label-studio`` version installed in ``venv``, or None when there is none."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_installed(venv: Path) -> float:
    """Install Label Studio ``LABEL_STUDIO_VERSION`` into ``venv`` unless it is there; seconds spent."""
    if installed_version(venv) == LABEL_STUDIO_VERSION:
        return 0.0
    started = time.monotonic()
    if not (venv / "bin" / "python").exists():
        _run_install([sys.executable, "-m", "venv", str(venv)])
    _run_install(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"label-studio=={LABEL_STUDIO_VERSION}",
        ]
    )
    if installed_version(venv) != LABEL_STUDIO_VERSION:
        raise LabelStudioInstallError(f"pip finished but {venv} holds label-studio {installed_version(venv)}")
    return time.monotonic() - started


def _run_install(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        raise LabelStudioInstallError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )


def label_studio_environment(*, token: str, document_root: Path) -> dict[str, str]:
    """The environment Label Studio starts with: the admin user, its legacy token, local files on."""
    env = {name: value for name, value in os.environ.items() if name not in _LEAKING_VARIABLES}
    env.update(
        LABEL_STUDIO_USERNAME=ADMIN_EMAIL,
        LABEL_STUDIO_PASSWORD=ADMIN_PASSWORD,
        LABEL_STUDIO_USER_TOKEN=token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LATEST_VERSION_CHECK="false",
        LOCAL_FILES_SERVING_ENABLED="true",
        LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        **DEPLOYMENT_SETTINGS,
    )
    return env


@contextmanager
def running_label_studio(
    venv: Path, *, work_dir: Path, document_root: Path, port: int | None = None, token: str | None = None,
) -> Iterator[LabelStudioServer]:
    """Start Label Studio from ``venv`` on 127.0.0.1 (``port``, else a free one); stop it (by pid) when the block
    ends. Its data stays in ``work_dir``: started again there with the same ``token``, it is the same instance."""
    venv = venv.resolve()  # the server runs in work_dir
    token = token or secrets.token_hex(20)
    port = port or free_port()
    data_dir = work_dir / "label-studio-data"
    log_path = work_dir / "label-studio.log"
    command = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--enable-legacy-api-token",
    ]
    env = label_studio_environment(token=token, document_root=document_root)
    url = f"http://127.0.0.1:{port}"
    with running_process(command, env=env, cwd=work_dir, log_path=log_path) as process:
        seconds = wait_until_healthy(process, f"{url}/health", timeout_s=START_TIMEOUT_S, log_path=log_path)
        _check_is_ours(url, token, log_path)
        yield LabelStudioServer(url, token, data_dir, document_root, log_path, process.pid, seconds)


def _check_is_ours(url: str, token: str, log_path: Path) -> None:
    """Label Studio silently moves to another port when the asked one is busy: prove this one is ours.

    The token is fresh for this run, so only the instance started here accepts it.
    """
    response = requests.get(
        f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}, timeout=10
    )
    if response.status_code != 200 or response.json().get("email") != ADMIN_EMAIL:
        raise ServerStartError(
            f"{url} answers /health but does not know this run's token (HTTP {response.status_code}): "
            f"another server holds the port; Label Studio log tail:\n{log_tail(log_path)}"
        )
