"""A small Label Studio stand-in speaking the API routes the job uses, able to fail on purpose.

It serves what label-studio-sdk 2.1.2 requests (project, paged task list with predictions and
annotations, prediction list/create/delete, presigned cloud images) with Label Studio's response shapes,
keeps every request in a log, and can misbehave on purpose: answer the next requests with a status of
choice (and a long body), store a prediction and then answer 500 (a lost response), redirect creates,
answer every task page with the first one and no total, replace the task list's answer, or trickle the
project's answer a byte at a time.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify, redirect, request
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
    annotations: dict[int, list[dict]] = field(default_factory=dict)  # task id -> its annotations
    cloud_objects: dict[str, bytes] = field(default_factory=dict)  # "s3://bucket/key" -> the object's bytes
    error_body: str = "failing on purpose"  # the detail of the fail_next answers
    repeat_first_page: bool = False  # every task page answers page 1's tasks, without a total
    tasks_answer: object = None  # when set: the JSON of every task list answer, whatever was asked
    redirect_creates: tuple[int, str] | None = None  # (status, Location) answering every create
    trickle_project: float | None = None  # seconds between the bytes of the project's answer
    create_answer: dict | None = None  # when set: every create answers 201 with this, storing nothing
    fail_task_pages: dict[int, int] = field(default_factory=dict)  # page -> the status it always answers
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
                return jsonify(detail=state.error_body), state.fail_next.pop(0)
        return None

    @app.get("/api/projects/<int:project>/")
    def project(project: int):
        if project != 1:
            return jsonify(detail="Not found."), 404
        body = json.dumps({"id": 1, "title": "stub", "label_config": state.label_config})
        if state.trickle_project is None:
            return Response(body, mimetype="application/json")
        delay = state.trickle_project

        def trickle() -> Iterator[bytes]:
            # Whitespace before JSON is JSON: a complete, valid answer, just slow (a few seconds at most).
            for _ in range(int(3 / delay)):
                time.sleep(delay)
                yield b" "
            yield body.encode()

        return Response(trickle(), mimetype="application/json")

    @app.get("/api/tasks/")
    def tasks():
        if state.tasks_answer is not None:
            return jsonify(state.tasks_answer)
        page, size = int(request.args.get("page", 1)), int(request.args.get("page_size", 100))
        if page in state.fail_task_pages:
            return jsonify(detail=state.error_body), state.fail_task_pages[page]
        ids = sorted(state.tasks)
        if request.args.get("only_annotated") == "true":
            ids = [task for task in ids if state.annotations.get(task)]
        if state.repeat_first_page:
            # Page 1 again and again; after 20 pages an empty one, so that a client that never stops
            # asking still ends (its test then fails on what it did, instead of hanging).
            listed = sum(method == "GET" and path == "/api/tasks/" for method, path in state.log)
            if listed > 20:
                return jsonify(tasks=[])
            page = 1
        if "query" in request.args:  # only selectedItems.included, the form the job sends
            ids = [task for task in ids if task in json.loads(request.args["query"])["selectedItems"]["included"]]
        start = (page - 1) * size
        if start >= len(ids) and page > 1:
            return jsonify(detail="Invalid page."), 404
        chosen = ids[start:start + size]
        with_predictions = request.args.get("fields") == "all"
        payload = [
            {"id": task, "data": state.tasks[task], "project": 1,
             **({"predictions": state.predictions_of(task), "annotations": state.annotations.get(task, [])}
                if with_predictions else {})}
            for task in chosen
        ]
        if state.repeat_first_page:
            return jsonify(tasks=payload)
        return jsonify(tasks=payload, total=len(ids), total_annotations=0, total_predictions=len(state.predictions))

    @app.get("/tasks/<int:task>/presign/")
    def presign(task: int):
        uri = base64.urlsafe_b64decode(request.args["fileuri"]).decode()
        if task not in state.tasks or uri not in state.cloud_objects:
            return jsonify(detail="Not found."), 404
        # Label Studio answers with a redirect to the storage's presigned URL.
        return redirect(f"/fake-storage/{base64.urlsafe_b64encode(uri.encode()).decode()}", code=303)

    @app.get("/fake-storage/<key>")
    def storage_object(key: str):
        return Response(state.cloud_objects[base64.urlsafe_b64decode(key).decode()], mimetype="image/png")

    @app.get("/api/predictions/")
    def list_predictions():
        task = request.args.get("task", type=int)
        return jsonify([p for p in state.predictions.values() if task is None or p["task"] == task])

    @app.post("/api/predictions/")
    def create_prediction():
        body = request.get_json()
        if state.create_answer is not None:
            return jsonify(state.create_answer), 201
        if state.redirect_creates is not None:
            status, location = state.redirect_creates
            return redirect(location, code=status)
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
    with serving(create_stub_app(state)) as url:
        yield url


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
