"""``make demo`` (``python -m ml_backend.demo``): a pre-annotated Label Studio project on this machine, in one command.

Installs Label Studio into its own venv (``.venv-ls``, once), starts it and this backend (bundled models,
127.0.0.1 only), creates or reuses the demo project, connects the backend, retrieves predictions, prints the
URL, the login and what to click, and stays up until Ctrl-C, which stops both servers. Everything it keeps
(Label Studio's database, the images, the backend's cache and label memory, the logs) lives in ``DEMO_DIR``
(default ``.demo/`` in the checkout): a second run reuses all of it. Settings, all optional:

    DEMO_PORT=8080            Label Studio's port        DEMO_BACKEND_PORT=9090   the backend's port
    DEMO_IMAGES=folder        your images instead of the synthetic scenes
    DEMO_LABELS=car,person    the labels of your images (their names are the zero-shot words)
    DEMO_DIR=.demo            where the demo keeps its state
    EMERDIFF_*                any backend setting, e.g. EMERDIFF_MODEL=/models/sd15 EMERDIFF_CLIP_MODEL=...
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ml_backend.demo.backend import REPO_ROOT, running_backend
from ml_backend.demo.label_studio import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LabelStudioInstallError,
    ensure_installed,
    running_label_studio,
)
from ml_backend.demo.processes import ServerStartError
from ml_backend.demo.project import (
    DemoImages,
    ensure_backend,
    ensure_project,
    own_images,
    predicted_tasks,
    retrieve_predictions,
    synthetic_scenes,
)

LABEL_STUDIO_VENV = REPO_ROOT / ".venv-ls"
SCENES = 8
# The bundled models; K = 12 cuts the scenes finely enough that most segments hold one object (touching segments
# of one label merge into one region). A scene segments in seconds on a CPU. Any EMERDIFF_* in the environment wins.
BACKEND_DEFAULTS = {
    "EMERDIFF_MODEL": "bundled",
    "EMERDIFF_CLIP_MODEL": "bundled",
    "EMERDIFF_DEVICE": "cpu",
    "EMERDIFF_NUM_SEGMENTS": "12",
    "EMERDIFF_MIN_AREA": "64",
}


def main() -> int:
    try:
        return _run()
    except (ServerStartError, LabelStudioInstallError, ApiError) as error:
        detail = f"Label Studio answered {error.status_code}: {error.body}" if isinstance(error, ApiError) else error
        print(f"error: {str(detail)[:2000]}", file=sys.stderr)
        return 1


def _run() -> int:
    started = time.monotonic()
    state_dir = Path(os.environ.get("DEMO_DIR") or REPO_ROOT / ".demo").resolve()
    port = _port("DEMO_PORT", 8080)
    backend_port = _port("DEMO_BACKEND_PORT", 9090)
    images = _images(state_dir)
    token = _token(state_dir)
    # Ctrl-C and `kill` stop it, also when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)

    _say(f"checking Label Studio in {LABEL_STUDIO_VENV.name} (the first run installs it: about a minute) ...")
    ensure_installed(LABEL_STUDIO_VENV)
    with ExitStack() as servers:
        _say(f"starting Label Studio on 127.0.0.1:{port} (first run: its database is created, about a minute) ...")
        label_studio = servers.enter_context(running_label_studio(
            LABEL_STUDIO_VENV, work_dir=state_dir, document_root=images.root, port=port, token=token))
        _say(f"starting the backend on 127.0.0.1:{backend_port} ...")
        backend = servers.enter_context(running_backend(_backend_settings(state_dir, images, label_studio.url, token),
                                                        log_path=state_dir / "backend.log",
                                                        port=backend_port))
        client = LabelStudio(base_url=label_studio.url, api_key=token)
        project = ensure_project(client, images)
        ensure_backend(client, project, backend.url)
        _say("retrieving predictions (the first run segments every image; later runs find them done) ...")
        retrieve_predictions(client, project)
        tasks, predicted = predicted_tasks(client, project)
        first = f"{label_studio.url}/projects/{project}/data?tab=0&task={tasks[0]}" if tasks else label_studio.url
        print(
            f"\nThe demo is ready ({time.monotonic() - started:.0f} s): "
            f"{predicted} of {len(tasks)} tasks pre-annotated.\n"
            f"  Open   {label_studio.url}\n"
            f"  Log in {ADMIN_EMAIL} / {ADMIN_PASSWORD}\n"
            f"  Click  the project '{images.title}', then a task (or open {first}):\n"
            "         its regions are listed on the right, each with its label and score. Click a region to\n"
            "         select it, change its label, drag its points; Submit saves it as your annotation.\n"
            f"  Logs   {state_dir}/label-studio.log, {state_dir}/backend.log\n"
            "Ctrl-C stops Label Studio and the backend.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _say("stopping Label Studio and the backend ...")
    _say("stopped.")
    return 0


def _images(state_dir: Path) -> DemoImages:
    folder = os.environ.get("DEMO_IMAGES")
    if folder:
        return own_images(Path(folder).expanduser(), os.environ.get("DEMO_LABELS", "").split(","))
    return synthetic_scenes(state_dir / "media" / "scenes", SCENES)


def _backend_settings(state_dir: Path, images: DemoImages, label_studio_url: str, token: str) -> dict[str, str]:
    ours = {name: value for name, value in os.environ.items() if name.startswith("EMERDIFF_")}
    return BACKEND_DEFAULTS | ours | {
        "LABEL_STUDIO_URL": label_studio_url,
        "LABEL_STUDIO_API_KEY": token,
        "LOCAL_FILES_DOCUMENT_ROOT": str(images.root),
        "CACHE_DIR": str(state_dir / "cache"),
        "DATA_DIR": str(state_dir / "data"),
    }


def _token(state_dir: Path) -> str:
    """The admin's API token: made on the first run, kept so later runs talk to the same Label Studio user."""
    path = state_dir / "state.json"
    if path.exists():
        return json.loads(path.read_text())["token"]
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(20)
    path.write_text(json.dumps({"token": token}) + "\n")
    return token


def _port(name: str, default: int) -> int:
    text = os.environ.get(name) or str(default)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SystemExit(f"error: {name}={text!r}: must be a port number")
    with socket.socket() as probe:
        # As servers bind: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", int(text)))
        except OSError:
            raise SystemExit(f"error: port {text} on 127.0.0.1 is in use: set {name} to a free port") from None
    return int(text)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
