"""Faults under the real entry point: a worker killed mid-request, SIGTERM with a request in flight, a cache
folder that cannot be used. One server for the first two; the third never gets as far as a model."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from converters.labelstudio import validate_regions
from ml_backend.demo.processes import free_port, log_tail
from ml_backend.segmentation.cache import SegmentationCache
from tests.backend.gunicorn import Gunicorn, gunicorn_command, gunicorn_environment, running_gunicorn
from tests.backend.support import POLYGON_CONFIG, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("faults")
    (work / "documents").mkdir()
    for seed in range(8):
        (work / "documents" / f"scene{seed}.png").write_bytes(png_bytes(800 + seed))
    return work


def settings(tiny_model_dir: Path, work: Path) -> dict[str, str]:
    return {
        "EMERDIFF_MODEL": str(tiny_model_dir),
        "EMERDIFF_NUM_SEGMENTS": "4",
        "CACHE_DIR": str(work / "cache"),
        "LOCAL_FILES_DOCUMENT_ROOT": str(work / "documents"),
        "GUNICORN_THREADS": "4",
    }


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, work: Path) -> Iterator[Gunicorn]:
    with running_gunicorn(settings(tiny_model_dir, work), work / "gunicorn.log") as backend:
        yield backend


def predict_body(*scenes: int) -> dict:
    tasks = [{"id": seed, "data": {"image": f"/data/local-files/?d=scene{seed}.png"}} for seed in scenes]
    return {"tasks": tasks, "label_config": POLYGON_CONFIG}


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def wait_until_admitted(url: str, count: int) -> None:
    line = 'emerdiff_queue_events_total{event="admitted"}'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for row in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
            if row.startswith(line) and float(row.split()[-1]) >= count:
                return
        time.sleep(0.02)
    pytest.fail("the prediction was never admitted")


def assert_cache_whole(cache_dir: Path) -> None:
    """Every entry reads back verified, and nothing half-written is left."""
    assert not list(cache_dir.rglob("*.tmp"))
    cache = SegmentationCache(cache_dir)
    for record in cache_dir.rglob("*.json"):
        fingerprint, sha = record.parent.parent.name, record.stem
        assert cache.get(sha, fingerprint) is not None, record


def test_worker_killed_mid_request_is_replaced_and_the_cache_stays_whole(server: Gunicorn, work: Path) -> None:
    victim = worker_pid(server.pid)
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(requests.post, f"{server.url}/predict", json=predict_body(0, 1, 2, 3), timeout=300)
        wait_until_admitted(server.url, 1)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(requests.ConnectionError):
            in_flight.result()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{server.url}/health", timeout=5).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    assert worker_pid(server.pid) != victim
    answer = requests.post(f"{server.url}/predict", json=predict_body(0, 1, 2, 3), timeout=300)
    assert answer.status_code == 200
    for result in answer.json()["results"]:
        validate_regions(result["result"], POLYGON_CONFIG)
    assert_cache_whole(work / "cache")


def test_sigterm_lets_the_request_in_flight_finish(server: Gunicorn, work: Path) -> None:
    """Last in this module: it stops the server."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(requests.post, f"{server.url}/predict", json=predict_body(4), timeout=300)
        wait_until_admitted(server.url, 2)
        os.kill(server.pid, signal.SIGTERM)
        response = in_flight.result()
    assert response.status_code == 200
    [result] = response.json()["results"]
    validate_regions(result["result"], POLYGON_CONFIG)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{server.pid}").exists() and Path(f"/proc/{server.pid}/status").read_text().find("zombie") < 0:
        assert time.monotonic() < deadline, "gunicorn did not exit after SIGTERM"
        time.sleep(0.2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=5)
    assert "Shutting down" in log_tail(server.log_path, 20_000)
    assert_cache_whole(work / "cache")


def test_unusable_cache_dir_stops_the_server_before_the_model_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A file where the folder should be (as root, permissions would not stop a write; this does).
    (tmp_path / "file").write_text("")
    (tmp_path / "documents").mkdir()
    cache_dir = tmp_path / "file" / "cache"
    environment = gunicorn_environment(
        settings(tiny_model_dir, tmp_path) | {"CACHE_DIR": str(cache_dir), "LOG_LEVEL": "INFO"}, free_port()
    )
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.run(
            gunicorn_command(),
            env=environment,
            cwd=Path(__file__).resolve().parents[2],
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    text = log.read_text()
    assert process.returncode != 0
    assert f"CACHE_DIR={str(cache_dir)!r}: not a writable folder" in text
    assert "loading model" not in text
