"""Load benchmark: /health latency and prediction throughput with predictions queued, on 127.0.0.1 only.

``python -m ml_backend.benchmarks.loadtest [--threads 4] [--queued 8] [--seconds 30]`` starts the backend under
gunicorn (its real entry point) on a free loopback port with the cache off, keeps ``--queued``
clients posting /predict (each a fresh image, so every admitted request is real work; a 503 is retried
after its Retry-After, at most 1 s), polls /health one request after another, and prints one JSON
object: /health p50/p99/max in ms, predictions per second, and the 503 count. It never talks to
anything but the server it started, and stops after ``--seconds`` (at most 600).

``--webhooks N`` adds N clients posting ``ANNOTATION_CREATED`` webhooks (one rectangle each) for images no
prediction segmented (the cache is off), concurrently with the queued predictions: the mix that once held
/health for seconds (issue 19). Their answers are counted by status (202 queued for the background
learner, 503 learning queue full), and the webhooks the learner applied by the end are read from /metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from segmentor.loading import BUNDLED_MODEL_DIR
from segmentor.toy.scenes import write_scenes

MAX_SECONDS = 600
# Annotation webhooks teach the polygon control with rectangles (both teach labels).
WEBHOOK_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<PolygonLabels name="poly" toName="image"><Label value="Object"/></PolygonLabels>'
    '<RectangleLabels name="box" toName="image"><Label value="Object"/></RectangleLabels></View>'
)
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<PolygonLabels name="poly" toName="image"><Label value="Object"/></PolygonLabels></View>'
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="GUNICORN_THREADS of the server")
    parser.add_argument("--queued", type=int, default=None, help="concurrent /predict clients (default 2x threads)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measurement (max 600)")
    parser.add_argument("--segments", type=int, default=4, help="EMERDIFF_NUM_SEGMENTS")
    parser.add_argument("--model", default=None, help="model reference (default: bundled, else a tiny random one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    parser.add_argument("--webhooks", type=int, default=0,
                        help="concurrent clients posting annotation webhooks for unsegmented images (default 0)")
    args = parser.parse_args(argv)
    queued = args.queued or 2 * args.threads
    seconds = min(args.seconds, MAX_SECONDS)
    with tempfile.TemporaryDirectory(prefix="emerdiff-loadtest-") as work:
        report = run(Path(work), args.threads, queued, seconds, args.segments, args.model, args.seed, args.webhooks)
    print(json.dumps(report, indent=2))
    return 0


def run(work: Path, threads: int, queued: int, seconds: float, segments: int, model: str | None, seed: int,
        webhooks: int = 0) -> dict:
    model = model or _default_model(work)
    scenes = write_scenes(work / "scenes", 64, seed)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("EMERDIFF_", "GUNICORN_"))},
        "EMERDIFF_MODEL": model,
        "EMERDIFF_NUM_SEGMENTS": str(segments),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CACHE_DIR": "off",
        "DATA_DIR": str(work / "data"),
        "LOCAL_FILES_DOCUMENT_ROOT": str(work / "scenes"),
        "GUNICORN_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "ml_backend/gunicorn_conf.py", "ml_backend.wsgi:app"]
    repo = Path(__file__).resolve().parents[2]  # the repository root (this file is ml_backend/benchmarks/)
    with (work / "gunicorn.log").open("wb") as log:
        server = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(server, url)
            return _measure(url, scenes, threads, queued, seconds, webhooks)
        finally:
            server.terminate()
            server.wait(timeout=60)


def _measure(url: str, scenes: list[Path], threads: int, queued: int, seconds: float, webhooks: int = 0) -> dict:
    stop = threading.Event()
    counts = {"predicted": 0, "busy": 0, "failed": 0}
    webhook_counts: dict[str, int] = {}
    lock = threading.Lock()
    next_scene = iter(range(10**9))
    next_annotation = iter(range(1, 10**9))

    def annotator() -> None:
        session = requests.Session()
        while not stop.is_set():
            with lock:
                number = next(next_annotation)
            scene = scenes[number % len(scenes)]
            region = {"id": f"r{number}", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
                      "original_width": 64, "original_height": 64,
                      "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["Object"]}}
            body = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": WEBHOOK_CONFIG},
                    "annotation": {"id": number, "task": number, "result": [region]},
                    "task": {"id": number, "data": {"image": f"/data/local-files/?d={scene.name}"}}}
            response = session.post(f"{url}/webhook", json=body, timeout=600)
            with lock:
                webhook_counts[str(response.status_code)] = webhook_counts.get(str(response.status_code), 0) + 1
            if response.status_code == 503:
                stop.wait(min(1.0, float(response.headers.get("Retry-After", 1))))

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            with lock:
                scene = scenes[next(next_scene) % len(scenes)]
            body = {
                "tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d={scene.name}"}}],
                "label_config": LABEL_CONFIG,
            }
            response = session.post(f"{url}/predict", json=body, timeout=600)
            outcome = "predicted" if response.ok else "busy" if response.status_code == 503 else "failed"
            with lock:
                counts[outcome] += 1
            if outcome == "busy":
                stop.wait(min(1.0, float(response.headers.get("Retry-After", 1))))

    clients = [threading.Thread(target=client, daemon=True) for _ in range(queued)]
    clients += [threading.Thread(target=annotator, daemon=True) for _ in range(webhooks)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)  # let the queue fill
    latencies = []
    started = time.monotonic()
    predicted_before = counts["predicted"]
    health = requests.Session()
    while time.monotonic() - started < seconds:
        sent = time.perf_counter()
        assert health.get(f"{url}/health", timeout=60).ok
        latencies.append(time.perf_counter() - sent)
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    predicted = counts["predicted"] - predicted_before
    stop.set()
    for thread in clients:
        thread.join(timeout=600)
    milliseconds = np.array(latencies) * 1000
    learnt = _metric(health, url, 'emerdiff_background_total{name="learning_done"}')
    return {
        "threads": threads,
        "queued_clients": queued,
        "seconds": round(elapsed, 1),
        "health_requests": len(latencies),
        "health_p50_ms": round(float(np.percentile(milliseconds, 50)), 1),
        "health_p99_ms": round(float(np.percentile(milliseconds, 99)), 1),
        "health_max_ms": round(float(milliseconds.max()), 1),
        "predictions_per_s": round(predicted / elapsed, 3),
        "answers": counts,
        **({"webhook_clients": webhooks, "webhook_answers": webhook_counts, "webhooks_learnt": learnt}
           if webhooks else {}),
    }


def _metric(session: requests.Session, url: str, series: str) -> float:
    for line in session.get(f"{url}/metrics", timeout=60).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _default_model(work: Path) -> str:
    if (BUNDLED_MODEL_DIR / "model_index.json").exists():
        return "bundled"
    from segmentor.toy.architecture import TINY_TEST_SPEC, build_model_folder

    return str(build_model_folder(TINY_TEST_SPEC, work / "tiny-model", seed=0))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.RequestException:  # not listening yet, or the worker still loading the model
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not answer /health within 300 s")


if __name__ == "__main__":
    raise SystemExit(main())
