"""The real entry point: gunicorn with ml_backend/gunicorn_conf.py, configured by environment only."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from ml_backend.demo.processes import free_port
from tests.backend.gunicorn import REPO_ROOT, gunicorn_command, gunicorn_environment, running_gunicorn
from tests.backend.support import POLYGON_CONFIG, png_bytes, task

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_health_answers_while_a_prediction_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "documents"
    root.mkdir()
    tasks = []
    for seed in range(6):
        (root / f"scene{seed}.png").write_bytes(png_bytes(100 + seed))
        tasks.append(task(seed + 1, f"/data/local-files/?d=scene{seed}.png"))
    settings = {
        "EMERDIFF_MODEL": str(tiny_model_dir),
        "EMERDIFF_NUM_SEGMENTS": "4",
        "CACHE_DIR": str(tmp_path / "cache"),
        "LOCAL_FILES_DOCUMENT_ROOT": str(root),
        "GUNICORN_THREADS": "4",
    }
    with running_gunicorn(settings, tmp_path / "gunicorn.log") as server, ThreadPoolExecutor(max_workers=1) as pool:
        url = server.url
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


def test_invalid_setting_stops_the_server_with_its_name(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        process = subprocess.run(
            gunicorn_command(),
            env=gunicorn_environment({"EMERDIFF_NUM_SEGMENTS": "lots"}, free_port()),
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    assert process.returncode != 0
    assert "EMERDIFF_NUM_SEGMENTS='lots': must be an integer" in log.read_text()
