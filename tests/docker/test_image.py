"""Smoke test of the Docker image, built (CPU variant, from the wheelhouse) and run the way users run it.

The image is built once per session (engine.py caches the slow parts per machine); each container runs
the bundled model.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from converters.labelstudio import validate_regions
from tests.backend.support import POLYGON_CONFIG, png_bytes
from tests.docker.engine import (
    REPO_ROOT,
    BuiltImage,
    DockerSetupError,
    build_cpu_image,
    docker,
    docker_engine,
    inspect,
    remove_container,
)
from tests.docker.held_server import HeldImageServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICE_UID = "10001"
EX_USAGE = 64
START_TIMEOUT_S = 600.0
AUTH = ("annotator", "s3cret-pass")
# The image's health check, run every 2 s and judged from the first run on. The image's own timing (30 s,
# 15 minutes of start period for a hub download) would leave a failing container "starting" that long.
HEALTH_OPTIONS = ("--health-interval=2s", "--health-retries=1", "--health-start-period=1s")
COMPOSE_BACKEND = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["emerdiff"]
COMPOSE_RESTART = COMPOSE_BACKEND["restart"]
_names = itertools.count()


@pytest.fixture(scope="session")
def cpu_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    with docker_engine():
        yield build_cpu_image(tmp_path_factory.mktemp("docker"))


@pytest.fixture(scope="module")
def local_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local-files root: readable by the service's user inside the container."""
    root = tmp_path_factory.mktemp("local-files")
    (root / "batch").mkdir()
    (root / "batch" / "scene.png").write_bytes(png_bytes(seed=3, height=64, width=80))
    for path in (root, root / "batch", root / "batch" / "scene.png"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@contextmanager
def container(
    image: BuiltImage,
    env: Mapping[str, str],
    *,
    volumes: Sequence[str] = (),
    options: Sequence[str] = (),
) -> Iterator[str]:
    """``docker run -d`` the image with the bundled model; removed (with its volumes) when the block ends."""
    name = f"emerdiff-smoke-{os.getpid()}-{next(_names)}"
    settings = {"EMERDIFF_MODEL": "bundled", "EMERDIFF_NUM_SEGMENTS": "4", **env}
    command = ["run", "-d", "--name", name, *HEALTH_OPTIONS, *options]
    for variable, value in settings.items():
        command += ["-e", f"{variable}={value}"]
    for volume in volumes:
        command += ["-v", volume]
    docker(*command, image.tag)
    try:
        yield name
    finally:
        remove_container(name)


def wait_for_state(name: str, wanted: Callable[[dict], bool], what: str) -> dict:
    """Poll ``docker inspect`` until ``wanted(record)``; the record. Fails if the container exits or restarts."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        record = inspect(name)
        if wanted(record):
            return record
        state = record["State"]
        if record["RestartCount"] > 0 or state["Status"] == "exited":
            pytest.fail(f"{name} exited {state['ExitCode']} (restarts: {record['RestartCount']}):\n{logs(name)}")
        time.sleep(1)
    pytest.fail(f"{name} never became {what}:\n{logs(name)}")


def wait_for_health(name: str, wanted: str) -> dict:
    return wait_for_state(name, lambda record: record["State"].get("Health", {}).get("Status") == wanted, wanted)


def last_health_output(record: dict) -> str:
    checks = record["State"].get("Health", {}).get("Log") or [{}]
    return checks[-1].get("Output", "")


def logs(name: str) -> str:
    done = docker("logs", name, check=False)
    return done.stdout + done.stderr


def published_url(name: str) -> str:
    address = docker("port", name, "9090/tcp").stdout.splitlines()[0].strip()
    return f"http://{address}"


def predict_body(image_url: str) -> dict:
    return {
        "tasks": [{"id": 1, "data": {"image": image_url}, "project": 1}],
        "label_config": POLYGON_CONFIG,
        "project": "1.1",
        "params": {"context": None},
    }


def assert_valid_regions(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["result"], result
    validate_regions(result["result"], POLYGON_CONFIG)


@pytest.fixture(scope="module")
def served(cpu_image: BuiltImage, local_files: Path) -> Iterator[str]:
    """The image serving like the compose file's backend: local files read-only, basic auth on, healthy."""
    env = {
        "LOCAL_FILES_DOCUMENT_ROOT": "/label-studio/files",
        "BASIC_AUTH_USER": AUTH[0],
        "BASIC_AUTH_PASS": AUTH[1],
    }
    with container(
        cpu_image, env, volumes=[f"{local_files}:/label-studio/files:ro"], options=["-p", "127.0.0.1::9090"]
    ) as name:
        wait_for_health(name, "healthy")
        yield name


def test_runs_as_the_unprivileged_user(served: str) -> None:
    assert inspect(served)["Config"]["User"] == "emerdiff"
    status = docker("exec", served, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [SERVICE_UID] * 4, "PID 1 (gunicorn's master) must not run as root"


def test_healthcheck_turns_healthy(served: str) -> None:
    health = inspect(served)["State"]["Health"]
    assert health["Status"] == "healthy"
    assert health["Log"][-1]["ExitCode"] == 0


def test_predicts_an_image_under_the_local_files_root_behind_basic_auth(served: str) -> None:
    url = f"{published_url(served)}/predict"
    body = predict_body("/data/local-files/?d=batch/scene.png")
    assert requests.post(url, json=body, timeout=60).status_code == 401
    assert requests.post(url, json=body, auth=(AUTH[0], "wrong"), timeout=60).status_code == 401
    assert_valid_regions(requests.post(url, json=body, auth=AUTH, timeout=300))


def test_image_is_cpu_only_without_test_tools_or_the_build_secret(cpu_image: BuiltImage) -> None:
    probe = (
        "import importlib.util, os, torch\n"
        "tools = [m for m in ('pytest', 'hypothesis', 'ruff', 'selenium') if importlib.util.find_spec(m)]\n"
        "print(tools, torch.version.cuda, os.path.exists('/run/secrets/ca'))\n"
    )
    done = docker("run", "--rm", "--entrypoint", "python", cpu_image.tag, "-c", probe, timeout=300)
    assert done.stdout.split() == ["[]", "None", "False"], done.stdout + done.stderr
    history = docker("history", "--no-trunc", cpu_image.tag).stdout
    assert "BEGIN CERTIFICATE" not in history


def assert_held_without_restarts(name: str, message: str) -> None:
    """The configuration error is reported once and the container waits, unhealthy, under the policy."""
    record = wait_for_state(name, lambda record: message in last_health_output(record), "unhealthy, naming the error")
    assert record["State"]["Health"]["Status"] == "unhealthy"
    assert record["HostConfig"]["RestartPolicy"]["Name"] == COMPOSE_RESTART
    assert record["State"]["Running"] and record["RestartCount"] == 0, "restarted: a restart loop"
    output = logs(name)
    assert output.count(message) == 1, output
    assert "Booting worker" not in output, "gunicorn started, the model was loaded"
    docker("stop", name, timeout=120)
    assert inspect(name)["State"]["ExitCode"] == EX_USAGE


def test_bad_variable_holds_under_the_compose_restart_policy(cpu_image: BuiltImage) -> None:
    with container(cpu_image, {"EMERDIFF_NUM_SEGMENTS": "0"}, options=["--restart", COMPOSE_RESTART]) as name:
        assert_held_without_restarts(name, "EMERDIFF_NUM_SEGMENTS='0': must be an integer between 1 and 100")


def test_bad_variable_exits_64_with_its_message_when_asked_to(cpu_image: BuiltImage) -> None:
    done = docker(
        "run", "--rm", "-e", "ON_CONFIG_ERROR=exit", "-e", "EMERDIFF_NUM_SEGMENTS=0", cpu_image.tag,
        check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == EX_USAGE, done.stderr
    assert "entrypoint: EMERDIFF_NUM_SEGMENTS='0'" in done.stderr


def test_unwritable_cache_volume_is_reported_before_the_model_loads(
    cpu_image: BuiltImage, tmp_path: Path
) -> None:
    cache = tmp_path / "root-owned-cache"
    cache.mkdir(mode=0o755)  # the test runs as root: uid 10001 cannot write here
    with container(
        cpu_image, {}, volumes=[f"{cache}:/cache"], options=["--restart", COMPOSE_RESTART]
    ) as name:
        assert_held_without_restarts(name, "CACHE_DIR=/cache/segmentations is not writable by uid 10001")


def bridge_gateway() -> str:
    """The host's address on the default bridge. An engine that found its bridge interface already up (one
    that ran before, or was started by hand) leaves the gateway out of the network's IPAM config: then the
    address of that interface on this host is the gateway."""
    network = json.loads(docker("network", "inspect", "bridge").stdout)[0]
    configured = [entry["Gateway"] for entry in network["IPAM"]["Config"] if entry.get("Gateway")]
    if configured:
        return configured[0]
    interface = network["Options"].get("com.docker.network.bridge.name", "docker0")
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", interface], capture_output=True, text=True,
                           timeout=30, check=False)
    for field in shown.stdout.split():
        if "/" in field and field.split("/")[0].count(".") == 3:
            return field.split("/")[0]
    raise DockerSetupError(f"no gateway of the bridge network: neither its IPAM config nor interface {interface} "
                           f"names one ({shown.stderr.strip()})")


def test_stop_drains_a_request_in_flight_and_refuses_new_ones(cpu_image: BuiltImage) -> None:
    """`docker stop` under the compose file's grace period and graceful timeout, a prediction in flight: it
    completes, a new connection is refused meanwhile, and the container exits 0 (a SIGKILL at the end of
    the grace period would give 137)."""
    gateway = bridge_gateway()  # the host, as the container reaches it
    held = HeldImageServer(gateway, png_bytes(seed=5, height=64, width=80))
    env = {
        "ALLOW_PRIVATE_IMAGE_ADDRESSES": "true",
        "ALLOWED_IMAGE_HOSTS": gateway,
        "GUNICORN_GRACEFUL_TIMEOUT": COMPOSE_BACKEND["environment"]["GUNICORN_GRACEFUL_TIMEOUT"],
    }
    stop_timeout = COMPOSE_BACKEND["stop_grace_period"].removesuffix("s")
    with held.serving(), container(cpu_image, env, options=["--stop-timeout", stop_timeout]) as name:
        wait_for_health(name, "healthy")
        address = inspect(name)["NetworkSettings"]["IPAddress"]
        url = f"http://{address}:9090"
        in_flight: dict[str, requests.Response] = {}
        request = threading.Thread(
            target=lambda: in_flight.update(
                response=requests.post(f"{url}/predict", json=predict_body(held.url), timeout=300)
            )
        )
        request.start()
        assert held.arrived.wait(120), f"the prediction never fetched its image:\n{logs(name)}"
        stopping = threading.Thread(target=docker, args=("stop", name), kwargs={"timeout": 120})
        stopping.start()
        wait_for_log(name, "Stopped listening")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=5)
        held.release()
        request.join(timeout=300)
        stopping.join(timeout=120)
        assert_valid_regions(in_flight["response"])
        state = inspect(name)["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), logs(name)


def wait_for_log(name: str, line: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while line not in logs(name):
        if time.monotonic() > deadline:
            raise DockerSetupError(f"{name} never logged {line!r}:\n{logs(name)}")
        time.sleep(0.1)
