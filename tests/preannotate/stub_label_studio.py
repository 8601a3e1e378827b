"""A small Label Studio stand-in speaking the API routes the job uses, able to fail on purpose.

It serves what label-studio-sdk 2.1.2 requests (project, paged task list with predictions, prediction
list/create/delete) with Label Studio's response shapes, keeps every request in a log, and can answer
the next requests with a status of choice, or store a prediction and then answer 500 (a lost response).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

TOKEN = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class StubState:
    label_config: str
    tasks: dict[int, dict]  # task id -> data
    predictions: dict[int, dict] = field(default_factory=dict)  # prediction id -> prediction
    fail_next: list[int] = field(default_factory=list)  # statuses for the next requests, in order
    lose_next_create_responses: int = 0  # creates that store the prediction, then answer 500
    refuse_creates: int | None = None  # answer every create with this status (reads still work)
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_prediction(self, task: int, model_version: str, result: list | None = None) -> int:
        prediction_id = next(self._ids)
        self.predictions[prediction_id] = {
            "id": prediction_id, "task": task, "model_version": model_version, "result": result or [],
            "score": 0.5, "project": 1,
        }
        return prediction_id

    def predictions_of(self, task: int, model_version: str | None = None) -> list[dict]:
        return [
            prediction for prediction in self.predictions.values()
            if prediction["task"] == task and model_version in (None, prediction["model_version"])
        ]

    def creates(self) -> list[str]:
        return [path for method, path in self.log if method == "POST"]


def create_stub_app(state: StubState) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def log_auth_and_failures():
        with state.lock:
            state.log.append((request.method, request.path))
            if request.headers.get("Authorization") != f"Token {TOKEN}":
                return jsonify(detail="Authentication credentials were not provided."), 401
            if state.fail_next:
                return jsonify(detail="failing on purpose"), state.fail_next.pop(0)
        return None

    @app.get("/api/projects/<int:project>/")
    def project(project: int):
        if project != 1:
            return jsonify(detail="Not found."), 404
        return jsonify(id=1, title="stub", label_config=state.label_config)

    @app.get("/api/tasks/")
    def tasks():
        page, size = int(request.args.get("page", 1)), int(request.args.get("page_size", 100))
        ids = sorted(state.tasks)
        if "query" in request.args:  # only selectedItems.included, the form the job sends
            ids = [task for task in ids if task in json.loads(request.args["query"])["selectedItems"]["included"]]
        start = (page - 1) * size
        if start >= len(ids) and page > 1:
            return jsonify(detail="Invalid page."), 404
        chosen = ids[start:start + size]
        with_predictions = request.args.get("fields") == "all"
        payload = [
            {"id": task, "data": state.tasks[task], "project": 1,
             **({"predictions": state.predictions_of(task)} if with_predictions else {})}
            for task in chosen
        ]
        return jsonify(tasks=payload, total=len(ids), total_annotations=0, total_predictions=len(state.predictions))

    @app.get("/api/predictions/")
    def list_predictions():
        task = request.args.get("task", type=int)
        return jsonify([p for p in state.predictions.values() if task is None or p["task"] == task])

    @app.post("/api/predictions/")
    def create_prediction():
        body = request.get_json()
        if state.refuse_creates is not None:
            return jsonify(detail="failing on purpose"), state.refuse_creates
        with state.lock:
            prediction_id = state.add_prediction(body["task"], body["model_version"], body["result"])
            state.predictions[prediction_id]["score"] = body.get("score")
            if state.lose_next_create_responses:
                state.lose_next_create_responses -= 1
                return jsonify(detail="stored, but the answer is lost"), 500
        return jsonify(state.predictions[prediction_id]), 201

    @app.delete("/api/predictions/<int:prediction>/")
    def delete_prediction(prediction: int):
        state.predictions.pop(prediction, None)
        return "", 204

    return app


@contextmanager
def running_stub(state: StubState) -> Iterator[str]:
    """Serve the stub on a free 127.0.0.1 port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, create_stub_app(state), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
