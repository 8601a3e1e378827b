"""docker-compose.yml, its overrides and the .env example, as a real Compose reads them (`config`).

Compose v2 (the docker CLI plugin) when present, else Debian's docker-compose 1.29 (installed when
neither is). Only `config` runs: it needs no Docker engine.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess

import pytest
import yaml

from tests.docker.engine import REPO_ROOT, DockerSetupError, apt_install, docker_cli, docker_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENV_EXAMPLE = REPO_ROOT / "docker" / "env.example"


@pytest.fixture(scope="module")
def compose() -> list[str]:
    plugin = subprocess.run([docker_cli(), "compose", "version"], capture_output=True, text=True, env=docker_env())
    if plugin.returncode == 0:
        return [docker_cli(), "compose"]
    if shutil.which("docker-compose") is None:
        apt_install("docker-compose")
    found = shutil.which("docker-compose")
    if found is None:
        raise DockerSetupError("docker-compose was installed but is not on PATH")
    return [found]


def config(compose: list[str], **variables: str) -> dict:
    """`compose --env-file docker/env.example config` with the token a user generates, plus ``variables``."""
    env = {name: value for name, value in docker_env().items() if not name.startswith(("COMPOSE_", "LABEL_STUDIO_"))}
    env |= {"LABEL_STUDIO_USER_TOKEN": secrets.token_hex(20), **variables}
    done = subprocess.run(
        [*compose, "--env-file", str(ENV_EXAMPLE), "config"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_env_example_as_it_is_gives_the_gpu_stack(compose: list[str]) -> None:
    services = config(compose)["services"]
    assert {"label-studio", "emerdiff", "preannotate"} <= set(services)
    backend = services["emerdiff"]
    assert backend["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert backend["environment"]["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert backend["environment"]["LABEL_STUDIO_API_KEY"] == services["label-studio"]["environment"][
        "LABEL_STUDIO_USER_TOKEN"
    ]
    assert services["preannotate"]["profiles"] == ["preannotate"]


def test_cpu_override_builds_the_cpu_variant_without_a_gpu(compose: list[str]) -> None:
    services = config(compose, COMPOSE_FILE="docker-compose.yml:docker-compose.cpu.yml")["services"]
    for name in ("emerdiff", "preannotate"):
        assert "deploy" not in services[name]
        assert services[name]["build"]["args"]["TORCH_VARIANT"] == "cpu"
        assert services[name]["environment"]["EMERDIFF_DEVICE"] == "cpu"


def test_backend_only_mode_points_at_an_existing_label_studio(compose: list[str]) -> None:
    services = config(compose, LABEL_STUDIO_URL="https://label-studio.example.org")["services"]
    for name in ("emerdiff", "preannotate"):
        assert services[name]["environment"]["LABEL_STUDIO_URL"] == "https://label-studio.example.org"
