"""What can be checked of the Docker deployment without Docker: the files themselves, and the entrypoint,
its checks, the healthcheck and gunicorn's shutdown run for real outside a container. tests/docker builds
and runs the image itself."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
import requests
import yaml

from ml_backend.core import settings as settings_module
from ml_backend.core.settings import Settings
from ml_backend.demo.backend import ENTRYPOINT, HEALTHCHECK, REPO_ROOT, backend_environment, running_backend
from ml_backend.demo.label_studio import DEPLOYMENT_SETTINGS, LABEL_STUDIO_VERSION
from ml_backend.demo.processes import free_port
from tests.backend.support import POLYGON_CONFIG, png_bytes
from tests.docker.held_server import HeldImageServer

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
GPU_OVERRIDE = yaml.safe_load((REPO_ROOT / "docker-compose.gpu.yml").read_text(encoding="utf-8"))
CPU_OVERRIDE = yaml.safe_load((REPO_ROOT / "docker-compose.cpu.yml").read_text(encoding="utf-8"))
LABEL_STUDIO = COMPOSE["services"]["label-studio"]
BACKEND = COMPOSE["services"]["emerdiff"]
PREANNOTATE = COMPOSE["services"]["preannotate"]
EX_USAGE = 64
DOCKER_DEFAULT_STOP_GRACE_S = 10


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs of the Dockerfile, continuation lines joined, comments dropped."""
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
    return instructions


def dockerfile_values(keyword: str) -> dict[str, str]:
    """``NAME=value`` pairs of every ARG or ENV instruction."""
    values = {}
    for found, arguments in dockerfile_instructions():
        if found == keyword:
            values |= dict(item.split("=", 1) for item in shlex.split(arguments) if "=" in item)
    return values


def arguments_of(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile_instructions() if found == keyword]


def requirement_pin(package: str) -> str:
    for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.lower().startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"requirements.txt pins no {package}")


# --- docker-compose.yml -------------------------------------------------------------------------------


def test_gpu_override_reserves_one_nvidia_gpu_and_cpu_override_builds_the_cpu_variant() -> None:
    for service in ("emerdiff", "preannotate"):
        devices = GPU_OVERRIDE["services"][service]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        cpu = CPU_OVERRIDE["services"][service]
        assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
        assert cpu["environment"]["EMERDIFF_DEVICE"] == "cpu"
    assert "deploy" not in BACKEND, "the GPU belongs in docker-compose.gpu.yml"


def test_services_share_a_declared_network() -> None:
    shared = set(LABEL_STUDIO["networks"]) & set(BACKEND["networks"]) & set(PREANNOTATE["networks"])
    assert shared and shared <= set(COMPOSE["networks"])


def mounts(service: dict) -> dict[str, dict]:
    """The service's volumes by their path inside the container (short syntax read as the long one)."""
    found = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):  # SOURCE:TARGET[:MODE]; SOURCE may be "${VAR:-default}"
            short = re.fullmatch(r"(?P<source>.+):(?P<target>/[^:]+)(?::(?P<mode>ro|rw))?", volume)
            assert short, volume
            volume = {"type": "bind", "source": short["source"], "target": short["target"],
                      "read_only": short["mode"] == "ro"}
        found[volume["target"]] = volume
    return found


def test_named_volumes_are_declared_and_model_cache_is_hf_home() -> None:
    for service in (LABEL_STUDIO, BACKEND):
        for volume in mounts(service).values():
            if volume["type"] == "volume":
                assert volume["source"] in COMPOSE["volumes"], f"volume {volume['source']!r} is not declared"
    environment = dockerfile_values("ENV")
    assert mounts(BACKEND)[environment["HF_HOME"]]["source"] == "models"
    for name in ("CACHE_DIR", "DATA_DIR"):
        folder = BACKEND["environment"][name]
        volumes = [target for target, volume in mounts(BACKEND).items() if volume["type"] == "volume"]
        assert any(folder.startswith(target) for target in volumes), name


def test_local_files_are_the_same_folder_in_both_services() -> None:
    root = LABEL_STUDIO["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert BACKEND["environment"]["LOCAL_FILES_DOCUMENT_ROOT"] == root
    studio, backend = mounts(LABEL_STUDIO)[root], mounts(BACKEND)[root]
    assert studio["source"] == backend["source"]
    assert backend["read_only"] is True, "the backend only reads the local files"


def test_backend_reaches_label_studio_by_service_name_with_its_token() -> None:
    # The compose file's Label Studio unless LABEL_STUDIO_URL says otherwise (backend-only mode).
    assert BACKEND["environment"]["LABEL_STUDIO_URL"] == "${LABEL_STUDIO_URL:-http://label-studio:8080}"
    assert any(port.endswith(":8080") for port in LABEL_STUDIO["ports"])
    token = LABEL_STUDIO["environment"]["LABEL_STUDIO_USER_TOKEN"]
    assert token.startswith("${LABEL_STUDIO_USER_TOKEN")
    assert BACKEND["environment"]["LABEL_STUDIO_API_KEY"] == token
    assert LABEL_STUDIO["environment"]["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_label_studio_runs_with_the_settings_the_end_to_end_test_verified() -> None:
    assert LABEL_STUDIO["image"] == f"heartexlabs/label-studio:{LABEL_STUDIO_VERSION}"
    for name, value in DEPLOYMENT_SETTINGS.items():
        assert LABEL_STUDIO["environment"][name] == value, name


def test_backend_variables_are_all_read_by_the_service() -> None:
    """A misspelt variable would be ignored silently; every one must appear in ml_backend/core/settings.py."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    hugging_face = {"HF_TOKEN", "HF_HUB_OFFLINE"}
    overrides = [service.get("environment", {}) for service in CPU_OVERRIDE["services"].values()]
    for environment in (BACKEND["environment"], *overrides):
        for name in environment:
            assert name in hugging_face or f'"{name}"' in source, f"{name} is not a setting of the backend"


def test_backend_outwaits_label_studio() -> None:
    assert int(BACKEND["environment"]["GUNICORN_TIMEOUT"]) > int(
        LABEL_STUDIO["environment"]["ML_TIMEOUT_PREDICT"]
    )


def test_stop_grace_outlasts_the_drain() -> None:
    """Docker SIGKILLs after the grace period: gunicorn's drain must end first, here and by default."""
    grace = BACKEND["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > int(BACKEND["environment"]["GUNICORN_GRACEFUL_TIMEOUT"])
    assert Settings().graceful_timeout < DOCKER_DEFAULT_STOP_GRACE_S


def test_restart_policy_survives_reboots_and_configuration_errors_hold() -> None:
    """on-failure would leave a cleanly stopped backend down after a daemon restart (checked on Docker
    20.10); unless-stopped needs the entrypoint to hold on a configuration error instead of exiting."""
    assert BACKEND["restart"] == "unless-stopped"
    assert dockerfile_values("ENV")["ON_CONFIG_ERROR"] == "hold"
    assert PREANNOTATE["restart"] == "no" and PREANNOTATE["profiles"] == ["preannotate"]
    assert PREANNOTATE["entrypoint"] == ["python", "-m", "ml_backend", "preannotate"]
    assert PREANNOTATE["environment"] == BACKEND["environment"]


def test_backend_port_matches_the_image() -> None:
    port = dockerfile_values("ENV")["PORT"]
    assert any(mapping.endswith(f":{port}") for mapping in BACKEND["ports"])
    assert arguments_of("EXPOSE") == [port]


# --- Dockerfile ---------------------------------------------------------------------------------------


def test_base_image_is_cuda_runtime_and_torch_comes_from_the_matching_cuda_index() -> None:
    assert arguments_of("FROM") == ["${BASE_IMAGE}"]
    args = dockerfile_values("ARG")
    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu[\d.]+", args["BASE_IMAGE"])
    assert base, args["BASE_IMAGE"]
    assert args["TORCH_CUDA_INDEX_URL"] == f"https://download.pytorch.org/whl/cu{base[1]}{base[2]}"
    assert args["TORCH_CPU_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_VARIANT"] == "cuda"
    assert args["TORCH_VERSION"] == requirement_pin("torch").split("+")[0]


def test_runtime_requirements_hold_no_test_tools() -> None:
    runtime = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").lower()
    development = (REPO_ROOT / "requirements-dev.txt").read_text(encoding="utf-8").lower()
    assert "-r requirements.txt" in development
    for tool in ("pytest", "hypothesis", "ruff", "selenium"):
        assert f"\n{tool}==" not in runtime and f"\n{tool}==" in development, tool


def test_build_secret_and_caches_are_mounts_not_layers() -> None:
    run = " ".join(arguments_of("RUN"))
    assert "--mount=type=secret,id=ca" in run and "/run/secrets/ca" in run
    assert "--mount=type=cache,target=/root/.cache/pip" in run
    assert "--mount=type=cache,target=/var/cache/apt" in run
    assert "--mount=type=bind,source=docker/wheelhouse,target=/wheelhouse" in run
    assert "COPY" not in {keyword for keyword, arguments in dockerfile_instructions() if "wheelhouse" in arguments}


def test_requirements_filter_drops_exactly_the_torch_pin() -> None:
    """Run the Dockerfile's own grep on requirements.txt: everything but torch must stay."""
    run = " ".join(arguments_of("RUN"))
    pattern = re.search(r"grep -viE '([^']+)' requirements\.txt", run)
    assert pattern, "the Dockerfile no longer filters requirements.txt with grep -viE"
    kept = subprocess.run(
        ["grep", "-viE", pattern[1], "requirements.txt"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    original = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert [line for line in original if line not in kept] == [f"torch=={requirement_pin('torch')}"]


def test_service_runs_as_a_non_root_user() -> None:
    users = arguments_of("USER")
    assert users and users[-1] not in ("root", "0")
    assert "useradd" in " ".join(arguments_of("RUN"))


def test_healthcheck_and_entrypoint_are_the_scripts_in_docker() -> None:
    (healthcheck,) = arguments_of("HEALTHCHECK")
    assert "/app/docker/healthcheck.py" in healthcheck and "--start-period=" in healthcheck
    assert arguments_of("ENTRYPOINT") == ['["bash", "/app/docker/entrypoint.sh"]']
    assert dockerfile_values("ENV")["HF_HOME"] in arguments_of("VOLUME")[0]


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for arguments in arguments_of("COPY"):
        for source in arguments.split()[:-1]:
            source = source.rstrip("/")
            assert (REPO_ROOT / source).exists(), source
            assert source not in ignored, source
    assert "docker" not in ignored and "docker/wheelhouse" not in ignored, "the wheelhouse is build input"


# --- entrypoint and healthcheck, run outside Docker ---------------------------------------------------


def run_entrypoint(settings: dict[str, str]) -> subprocess.CompletedProcess:
    env = backend_environment(settings, port=free_port())
    return subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=120)


def test_entrypoint_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)


@pytest.mark.slow
def test_entrypoint_refuses_an_invalid_setting_with_its_name() -> None:
    done = run_entrypoint({"EMERDIFF_NUM_SEGMENTS": "0"})
    assert done.returncode == EX_USAGE
    assert "EMERDIFF_NUM_SEGMENTS" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("variable", ["CACHE_DIR", "DATA_DIR", "HF_HOME"])
def test_entrypoint_refuses_a_folder_it_cannot_write(variable: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_entrypoint({variable: str(blocker / "folder")})
    assert done.returncode == EX_USAGE
    assert f"entrypoint: {variable}={blocker / 'folder'} is not writable" in done.stderr


def load_preflight() -> ModuleType:
    spec = importlib.util.spec_from_file_location("preflight", REPO_ROOT / "docker" / "preflight.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_preflight_writes_for_real_and_checks_a_model_folder(tmp_path: Path) -> None:
    preflight = load_preflight()
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root ignores modes; a file in the way fails for everyone
        read_only = tmp_path / "a-file" / "below"
        read_only.parent.write_text("")
    with pytest.raises(preflight.ConfigError, match=r"CACHE_DIR=.* is not writable"):
        preflight.preflight({"CACHE_DIR": str(read_only), "DATA_DIR": "off"})
    with pytest.raises(preflight.ConfigError, match="EMERDIFF_MODEL=/no/such/model: no such folder"):
        preflight.preflight({"EMERDIFF_MODEL": "/no/such/model", "CACHE_DIR": "off", "DATA_DIR": "off"})
    settings = preflight.preflight({"CACHE_DIR": str(tmp_path / "cache"), "DATA_DIR": "off"})
    assert settings.cache_dir == tmp_path / "cache" and (tmp_path / "cache").is_dir()
    assert list((tmp_path / "cache").iterdir()) == [], "the probe file is removed"


def test_preflight_checks_the_clip_reference_like_the_model_path(tmp_path: Path) -> None:
    """EMERDIFF_CLIP_MODEL: ``bundled`` must be installed, a path must be a folder, a hub id waits for the load."""
    preflight = load_preflight()
    base = {"CACHE_DIR": "off", "DATA_DIR": "off"}
    with pytest.raises(preflight.ConfigError, match="EMERDIFF_CLIP_MODEL=/no/such/clip: no such folder"):
        preflight.preflight({**base, "EMERDIFF_CLIP_MODEL": "/no/such/clip"})
    (tmp_path / "clip").mkdir()
    for reference in ("bundled", str(tmp_path / "clip"), "openai/clip-vit-base-patch16"):
        assert preflight.preflight({**base, "EMERDIFF_CLIP_MODEL": reference}).clip_model == reference
    assert preflight.preflight(base).clip_model is None
    # An image built without the bundled CLIP is named before gunicorn starts (load_preflight: a fresh module).
    preflight.BUNDLED_CLIP_DIR = tmp_path / "no-bundled-clip"
    with pytest.raises(preflight.ConfigError, match="EMERDIFF_CLIP_MODEL=bundled: the bundled CLIP is missing"):
        preflight.preflight({**base, "EMERDIFF_CLIP_MODEL": "bundled"})


@pytest.mark.slow
def test_entrypoint_holds_on_a_configuration_error_until_stopped(tmp_path: Path) -> None:
    """ON_CONFIG_ERROR=hold (the image's default): the error once, no exit, the healthcheck names it,
    SIGTERM ends it at once with exit 64."""
    env = backend_environment({"EMERDIFF_NUM_SEGMENTS": "0", "ON_CONFIG_ERROR": "hold", "TMPDIR": str(tmp_path)},
                              port=free_port())  # fmt: skip
    holding = subprocess.Popen(["bash", str(ENTRYPOINT)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        reported = holding.stderr.readline() + holding.stderr.readline()
        assert "entrypoint: EMERDIFF_NUM_SEGMENTS='0'" in reported and "waiting to be stopped" in reported
        assert holding.poll() is None, "it exited: a restart policy would restart it in a loop"
        check = subprocess.run([sys.executable, str(HEALTHCHECK)], env={"TMPDIR": str(tmp_path), "PORT": "1"},
                               capture_output=True, text=True, timeout=30)  # fmt: skip
        assert check.returncode == 1 and "EMERDIFF_NUM_SEGMENTS='0'" in check.stdout
        holding.send_signal(signal.SIGTERM)
        assert holding.wait(timeout=30) == EX_USAGE
    finally:
        holding.kill()
        holding.wait()


def healthcheck(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_entrypoint_serves_health_and_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = {
        "EMERDIFF_MODEL": str(tiny_model_dir),
        "EMERDIFF_DEVICE": "cpu",
        "CACHE_DIR": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    with running_backend(settings, log_path=tmp_path / "backend.log") as backend:
        health = requests.get(f"{backend.url}/health", timeout=10).json()
        assert health["status"] == "UP"
        assert health["model_version"].startswith("emerdiff-")
        assert healthcheck(backend.port).returncode == 0
    assert healthcheck(backend.port).returncode == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_drains_the_request_in_flight_and_refuses_new_connections(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """gunicorn's own drain keeps the listening socket open until the worker exits: a request arriving
    meanwhile would wait unanswered in the kernel's backlog. The worker must refuse it instead."""
    held = HeldImageServer("127.0.0.1", png_bytes(seed=11))
    settings = {
        "EMERDIFF_MODEL": str(tiny_model_dir),
        "EMERDIFF_DEVICE": "cpu",
        "EMERDIFF_NUM_SEGMENTS": "4",
        "CACHE_DIR": "off",
        "DATA_DIR": "off",
        "ALLOW_PRIVATE_IMAGE_ADDRESSES": "true",
        "ALLOWED_IMAGE_HOSTS": "127.0.0.1",
        "GUNICORN_GRACEFUL_TIMEOUT": "120",
    }
    body = {"tasks": [{"id": 1, "data": {"image": held.url}}], "label_config": POLYGON_CONFIG, "project": "1.1"}
    log_path = tmp_path / "backend.log"
    with held.serving(), running_backend(settings, log_path=log_path) as backend:
        in_flight: dict[str, requests.Response] = {}
        request = threading.Thread(
            target=lambda: in_flight.update(response=requests.post(f"{backend.url}/predict", json=body, timeout=300))
        )
        request.start()
        assert held.arrived.wait(120), log_path.read_text()
        os.kill(backend.pid, signal.SIGTERM)  # the entrypoint exec'd gunicorn: this pid is its master
        wait_for_line(log_path, "Stopped listening")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{backend.url}/health", timeout=10)
        held.release()
        request.join(timeout=300)
        assert in_flight["response"].status_code == 200, in_flight["response"].text
        assert in_flight["response"].json()["results"][0]["result"]


def wait_for_line(path: Path, line: str, timeout_s: float = 60.0) -> None:
    stop = threading.Event()
    for _ in range(int(timeout_s / 0.1)):
        if line in path.read_text(encoding="utf-8", errors="replace"):
            return
        stop.wait(0.1)
    raise AssertionError(f"{path} never showed {line!r}:\n{path.read_text()}")
