"""What can be checked of the Docker deployment without Docker: the files themselves, and the entrypoint
and healthcheck run for real outside a container."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from ml_backend import settings as settings_module
from tests.e2e.backend import ENTRYPOINT, HEALTHCHECK, REPO_ROOT, backend_environment, running_backend
from tests.e2e.label_studio import DEPLOYMENT_SETTINGS, LABEL_STUDIO_VERSION
from tests.e2e.processes import free_port

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
LABEL_STUDIO = COMPOSE["services"]["label-studio"]
BACKEND = COMPOSE["services"]["emerdiff"]
EX_USAGE = 64


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


def test_backend_reserves_one_nvidia_gpu() -> None:
    devices = BACKEND["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_services_share_a_declared_network() -> None:
    shared = set(LABEL_STUDIO["networks"]) & set(BACKEND["networks"])
    assert shared and shared <= set(COMPOSE["networks"])


def mounts(service: dict) -> dict[str, dict]:
    """The service's volumes (compose long syntax) by their path inside the container."""
    return {volume["target"]: volume for volume in service["volumes"]}


def test_named_volumes_are_declared_and_model_cache_is_hf_home() -> None:
    for service in (LABEL_STUDIO, BACKEND):
        for volume in service["volumes"]:
            if volume["type"] == "volume":
                assert volume["source"] in COMPOSE["volumes"], f"volume {volume['source']!r} is not declared"
    hf_home = dockerfile_values("ENV")["HF_HOME"]
    assert mounts(BACKEND)[hf_home] == {"type": "volume", "source": "models", "target": hf_home}


def test_local_files_are_the_same_folder_in_both_services() -> None:
    root = LABEL_STUDIO["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert BACKEND["environment"]["LOCAL_FILES_DOCUMENT_ROOT"] == root
    studio, backend = mounts(LABEL_STUDIO)[root], mounts(BACKEND)[root]
    assert studio["source"] == backend["source"]
    assert backend["read_only"] is True, "the backend only reads the local files"


def test_backend_reaches_label_studio_by_service_name_with_its_token() -> None:
    assert BACKEND["environment"]["LABEL_STUDIO_URL"] == "http://label-studio:8080"
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
    """A misspelt variable would be ignored silently; every one must appear in ml_backend/settings.py."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    hugging_face = {"HF_TOKEN", "HF_HUB_OFFLINE"}
    for name in BACKEND["environment"]:
        assert name in hugging_face or f'"{name}"' in source, f"{name} is not a setting of the backend"


def test_backend_outwaits_label_studio() -> None:
    assert int(BACKEND["environment"]["GUNICORN_TIMEOUT"]) > int(
        LABEL_STUDIO["environment"]["ML_TIMEOUT_PREDICT"]
    )


def test_backend_port_matches_the_image() -> None:
    port = dockerfile_values("ENV")["PORT"]
    assert any(mapping.endswith(f":{port}") for mapping in BACKEND["ports"])
    assert arguments_of("EXPOSE") == [port]


# --- Dockerfile ---------------------------------------------------------------------------------------


def test_base_image_is_cuda_runtime_and_torch_comes_from_the_matching_cuda_index() -> None:
    assert arguments_of("FROM") == ["${CUDA_IMAGE}"]
    args = dockerfile_values("ARG")
    base = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu[\d.]+", args["CUDA_IMAGE"])
    assert base, args["CUDA_IMAGE"]
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/cu{base[1]}{base[2]}"
    assert args["TORCH_VERSION"] == requirement_pin("torch").split("+")[0]


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
        source = arguments.split()[0].rstrip("/")
        assert (REPO_ROOT / source).exists(), source
        assert source not in ignored, source


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
def test_entrypoint_refuses_a_model_cache_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_entrypoint({"HF_HOME": str(blocker / "models")})
    assert done.returncode == EX_USAGE
    assert "HF_HOME" in done.stderr


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
