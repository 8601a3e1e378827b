"""A Docker engine for the smoke tests, and the CPU image built the way docs/DEPLOY.md describes.

Everything slow is cached once per machine, so that only the first run pays for it: Debian's docker.io
package (installed when no Docker is there), the base image (debootstrap + docker import: image registries
are unreachable here), the wheelhouse (``pip download`` of requirements.txt, kept under
``$EMERDIFF_DOCKER_CACHE``, default ``.cache/emerdiff-docker`` in the checkout, which git ignores: never in the
user's home) and BuildKit's layer and pip caches (kept by the Docker daemon). A dockerd this module starts is
stopped again at the end of the session. The cache folder is made by whichever step needs it first, so the
tests run the same on an engine that was already running as on one they start.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_backend.demo.processes import log_tail, running_process

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EMERDIFF_DOCKER_CACHE") or REPO_ROOT / ".cache" / "emerdiff-docker").resolve()
BASE_IMAGE = "emerdiff-base:bookworm"
TEST_IMAGE = "emerdiff-ml-backend:test-cpu"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
WHEELHOUSE = REPO_ROOT / "docker" / "wheelhouse"
# Docker 23+ builds with buildx; Debian's docker.io (20.10) has BuildKit built in. The CLI docker.io
# installs is preferred: a newer CLI without the buildx plugin cannot build with BuildKit at all.
_DEBIAN_CLI = Path("/usr/bin/docker")


class DockerSetupError(RuntimeError):
    """Docker could not be installed, started or made to build; the message says what failed."""


def docker_cli() -> str:
    if _DEBIAN_CLI.exists():
        return str(_DEBIAN_CLI)
    found = shutil.which("docker")
    if found is None:
        raise DockerSetupError("no docker CLI")
    return found


def docker(*args: str, check: bool = True, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    """Run ``docker ARGS``; on failure with ``check`` the error carries its output."""
    done = subprocess.run(
        [docker_cli(), *args], capture_output=True, text=True, timeout=timeout, env=docker_env(), **kwargs
    )
    if check and done.returncode != 0:
        raise DockerSetupError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def cache_dir() -> Path:
    """The per-machine cache folder, made on first use (by whichever step comes first)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


def _account_home() -> Path:
    """The account's home from the password database: tests point HOME at a temporary folder (conftest)."""
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def docker_env() -> dict[str, str]:
    """The CLI finds the user's engine as they configured it (contexts, rootless socket) in ~/.docker,
    though HOME points into the test's temporary home."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if "DOCKER_CONFIG" not in env and (_account_home() / ".docker").is_dir():
        env["DOCKER_CONFIG"] = str(_account_home() / ".docker")
    return env


def _pip_env() -> dict[str, str]:
    """pip with the account's own configuration (index, proxy CA), which it looks for under HOME; its
    download cache stays in the test's temporary home."""
    env = dict(os.environ)
    if "PIP_CONFIG_FILE" not in env:
        for candidate in (_account_home() / ".config" / "pip" / "pip.conf", _account_home() / ".pip" / "pip.conf"):
            if candidate.is_file():
                env["PIP_CONFIG_FILE"] = str(candidate)
                break
    return env


def _run(command: Sequence[str], *, timeout: float, what: str, **kwargs: object) -> None:
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise DockerSetupError(f"{what}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def apt_install(*packages: str) -> None:
    """apt-get install PACKAGES (as root), for what a fresh machine lacks."""
    if os.geteuid() != 0:
        raise DockerSetupError(f"{', '.join(packages)} missing and not root: apt-get install -y {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], timeout=300, what="apt-get update", env=env)
    _run(["apt-get", "install", "-y", *packages], timeout=600, what=f"apt-get install {packages}", env=env)


def _engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=30).returncode == 0
    except (DockerSetupError, subprocess.TimeoutExpired):
        return False


@contextmanager
def docker_engine() -> Iterator[None]:
    """A running Docker engine: the one already there, or dockerd started (as root) until the block ends."""
    if _engine_answers():
        yield
        return
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    if os.geteuid() != 0:
        raise DockerSetupError("no Docker engine answers and only root can start dockerd here")
    log = cache_dir() / "dockerd.log"
    with running_process(["dockerd"], env=os.environ, cwd=cache_dir(), log_path=log):
        deadline = time.monotonic() + 90
        while not _engine_answers():
            if time.monotonic() > deadline:
                raise DockerSetupError(f"dockerd did not answer:\n{log_tail(log)}")
            time.sleep(1)
        yield


def ensure_base_image() -> None:
    """Debian bookworm (minbase) as a local image, bootstrapped from Debian's packages once per machine."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with bootstrap_folder() as root:
        _run(["debootstrap", "--variant=minbase", "bookworm", root, DEBIAN_MIRROR], timeout=900, what="debootstrap")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker_cli(), "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True, timeout=600,
            env=docker_env(),
        )
        tar.wait(timeout=60)
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerSetupError(f"docker import: {imported.stderr}")


def bootstrap_folder() -> tempfile.TemporaryDirectory:
    """An empty folder in the cache for debootstrap's root file system (the cache's disk, not /tmp's)."""
    return tempfile.TemporaryDirectory(dir=cache_dir())


def fill_wheelhouse() -> None:
    """docker/wheelhouse holds every wheel requirements.txt needs, downloaded once per machine.

    ``pip download`` runs with this machine's pip configuration, which makes torch the local CPU wheel.
    The wheels are hard-linked into the build context (copied across file systems).
    """
    cached = cache_dir() / "wheelhouse"
    requirements = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8")
    stamp = cached / ".requirements.txt"
    if not stamp.exists() or stamp.read_text(encoding="utf-8") != requirements:
        cached.mkdir(parents=True, exist_ok=True)
        _run(
            [sys.executable, "-m", "pip", "download", "--quiet", "-r", str(REPO_ROOT / "requirements.txt"), "-d",
             str(cached)],
            timeout=1200,
            what="pip download -r requirements.txt",
            env=_pip_env(),
        )
        stamp.write_text(requirements, encoding="utf-8")
    for wheel in cached.iterdir():
        target = WHEELHOUSE / wheel.name
        if wheel.name.startswith(".") or target.exists():
            continue
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy2(wheel, target)


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts (a TLS-inspecting proxy's CA among them), if any."""
    configured = os.environ.get("PIP_CERT")
    if not configured:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True,
            env=_pip_env(),
        )
        configured = done.stdout.strip() if done.returncode == 0 else ""
    path = Path(configured or "/etc/ssl/certs/ca-certificates.crt")
    return path if path.is_file() else None


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    seconds: float
    size_bytes: int
    log: Path


def build_cpu_image(log_dir: Path) -> BuiltImage:
    """The CPU variant from the wheelhouse alone (PIP_NO_INDEX=1), the host's CA as the build secret."""
    ensure_base_image()
    fill_wheelhouse()
    command = [
        "build",
        "--progress=plain",
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg", "TORCH_VARIANT=cpu",
        "--build-arg", "PIP_NO_INDEX=1",
        "-t", TEST_IMAGE,
        ".",
    ]  # fmt: skip
    ca_bundle = host_ca_bundle()
    if ca_bundle is not None:
        command[1:1] = ["--secret", f"id=ca,src={ca_bundle}"]
    previous = docker("image", "inspect", "--format", "{{.Id}}", TEST_IMAGE, check=False).stdout.strip()
    log = log_dir / "docker-build.log"
    start = time.monotonic()
    with log.open("w") as output:
        done = subprocess.run(
            [docker_cli(), *command], cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, env=docker_env(),
            timeout=1800,
        )
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise DockerSetupError(f"docker build failed:\n{log_tail(log)}")
    current = docker("image", "inspect", "--format", "{{.Id}}", TEST_IMAGE).stdout.strip()
    if previous and previous != current:  # the image this build replaced, untagged now
        docker("image", "rm", previous, check=False)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", TEST_IMAGE).stdout)
    print(f"docker build: {seconds:.0f} s, image {size / 1e9:.2f} GB ({log})", file=sys.stderr)
    return BuiltImage(TEST_IMAGE, seconds, size, log)


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def remove_container(container: str) -> None:
    docker("rm", "--force", "--volumes", container, check=False)
