"""The real entry point: gunicorn with ml_backend/gunicorn_conf.py, configured by environment only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.backend.support import POLYGON_CONFIG, png_bytes, task

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn(environ: dict[str, str], log: Path) -> subprocess.Popen:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("EMERDIFF_", "BASIC_AUTH_"))
    }
    # One thread per torch op: on a shared CPU, oversubscribed threads slow the tiny model tenfold.
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HOST": "127.0.0.1", **environ}
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "ml_backend/gunicorn_conf.py",
        "--no-control-socket",
        "ml_backend.wsgi:app",
    ]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"gunicorn did not answer /health within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def test_health_answers_while_a_prediction_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "documents"
    root.mkdir()
    tasks = []
    for seed in range(6):
        (root / f"scene{seed}.png").write_bytes(png_bytes(100 + seed))
        tasks.append(task(seed + 1, f"/data/local-files/?d=scene{seed}.png"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    process = gunicorn(
        {
            "EMERDIFF_MODEL": str(tiny_model_dir),
            "EMERDIFF_NUM_SEGMENTS": "4",
            "PORT": str(port),
            "CACHE_DIR": str(tmp_path / "cache"),
            "LOCAL_FILES_DOCUMENT_ROOT": str(root),
            "GUNICORN_THREADS": "4",
        },
        log,
    )
    try:
        wait_until_up(process, url, log)
        with ThreadPoolExecutor(max_workers=1) as pool:
            prediction = pool.submit(
                requests.post,
                f"{url}/predict",
                timeout=300,
                json={"tasks": tasks, "label_config": POLYGON_CONFIG, "project": "1.1"},
            )
            while 'emerdiff_requests_total{route="predict"}' not in requests.get(f"{url}/metrics", timeout=5).text:
                time.sleep(0.05)
            answered_during_prediction = 0
            while not prediction.done():
                health = requests.get(f"{url}/health", timeout=5)
                assert health.status_code == 200 and health.json()["status"] == "UP"
                answered_during_prediction += not prediction.done()
                time.sleep(0.2)
            response = prediction.result()
        assert answered_during_prediction > 0
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == len(tasks)
        assert all(result.get("result") and "error" not in result for result in results)
        assert (
            requests.post(f"{url}/setup", json={"schema": POLYGON_CONFIG}, timeout=5).json()["model_version"]
            == results[0]["model_version"]
        )
    finally:
        stop(process)


def test_invalid_setting_stops_the_server_with_its_name(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    process = gunicorn({"EMERDIFF_NUM_SEGMENTS": "lots", "PORT": str(free_port())}, log)
    try:
        process.wait(timeout=120)
    finally:
        stop(process)
    assert process.returncode != 0
    assert "EMERDIFF_NUM_SEGMENTS='lots': must be an integer" in log.read_text()
