"""The Flask app speaking Label Studio's ML backend 2.x contract (see docs/labelstudio.md).

Routes: GET /health and / (open), POST /setup, POST /predict, POST /webhook, GET /metrics (Prometheus).
Every error is JSON; a malformed request gets 400, a body over MAX_REQUEST_BYTES 413, a /predict beyond
the prediction queue 503 with Retry-After (``ml_backend.service.admission``), and /predict answers one entry per
task even when tasks fail.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.settings import Settings
from ml_backend.labels.learning import LearningError
from ml_backend.model import TRAINING_EVENTS, EmerDiffModel, Runtime
from ml_backend.segmentation.cache import SegmentationCache
from ml_backend.service.admission import PredictionQueue, QueueFullError
from segmentor import DiffusionModel, load_model
from segmentor.zeroshot import load_clip

logger = logging.getLogger(__name__)

OPEN_ENDPOINTS = frozenset({"health", "static"})
WEBHOOK_RETRY_AFTER_S = 5


class BadRequestError(ValueError):
    """The request body is not what the route expects; answered with 400 and the message."""


def create_app(settings: Settings | None = None, model: DiffusionModel | None = None) -> Flask:
    """The app; loads the model from ``settings.model`` unless an already loaded ``model`` is given."""
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)
    # Every check that needs no model runs before the model loads (minutes for Stable Diffusion).
    SegmentationCache.check_writable(settings.cache_dir)
    clip = None
    if settings.clip_model is not None:  # seconds, before the minutes of SD: a wrong CLIP fails at once
        logger.info("loading CLIP %s for zero-shot labels (mode %s)", settings.clip_model, settings.clip_mode)
        clip = load_clip(settings.clip_model, device=settings.device, dtype=settings.dtype)
    if model is None:
        logger.info("loading model %s (device %s, dtype %s)", settings.model, settings.device, settings.dtype)
        model = load_model(settings.model, device=settings.device, dtype=settings.dtype)
    runtime = Runtime.create(settings, model, clip)
    logger.info(
        "ready: model %s (identity %s), version %s", model.reference, model.identity, runtime.default_version
    )

    queue = PredictionQueue(settings.predict_queue_size, runtime.metrics)

    app = Flask(__name__)
    app.extensions["emerdiff"] = runtime
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe_latency(response: Response) -> Response:
        if "started" in g:
            route = request.endpoint or "unknown"
            runtime.metrics.request_seconds.labels(route).observe(time.perf_counter() - g.started)
        return response

    @app.before_request
    def require_basic_auth() -> Response | tuple[Response, int, dict] | None:
        if not settings.basic_auth_enabled or request.endpoint in OPEN_ENDPOINTS:
            return None
        if _credentials_match(settings):
            return None
        return jsonify(error="authentication required"), 401, {"WWW-Authenticate": 'Basic realm="emerdiff"'}

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(status="UP", model_class=EmerDiffModel.__name__, model_version=runtime.default_version)

    @app.post("/setup")
    def setup() -> tuple[Response, int]:
        runtime.metrics.increment("requests", "setup")
        body = _json_body()
        schema = body.get("schema")
        if schema is None or schema == "":
            return jsonify(model_version=runtime.default_version), 200
        model = EmerDiffModel(runtime, label_config=schema, project_id=body.get("project"))
        try:
            return jsonify(model_version=model.setup()), 200
        except ProjectConfigError as error:
            # Label Studio shows only "400 Client Error": the reason has to be in our log.
            logger.warning("/setup refused the label config of project %r: %s", body.get("project"), error)
            return jsonify(error=f"label config: {error}"), 400

    @app.post("/predict")
    def predict() -> Response:
        runtime.metrics.increment("requests", "predict")
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequestError("'tasks' must be a list of tasks")
        if len(tasks) > settings.max_tasks_per_request:
            raise BadRequestError(
                f"{len(tasks)} tasks in one request exceed MAX_TASKS_PER_REQUEST={settings.max_tasks_per_request}"
                " (send smaller batches, or raise the limit)"
            )
        label_config = body.get("label_config")
        if not isinstance(label_config, str) or not label_config.strip():
            raise BadRequestError("'label_config' must be the project's label config XML")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequestError("'params' must be an object")
        model = EmerDiffModel(runtime, label_config=label_config, project_id=body.get("project"))
        with queue.admit(), runtime.metrics.timed("predict"):
            results = model.predict(tasks, context=params.get("context"))
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int] | tuple[Response, int, dict]:
        runtime.metrics.increment("requests", "webhook")
        body = _json_body()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequestError("'action' must be the webhook event name")
        if action not in TRAINING_EVENTS:
            return jsonify(status="ignored", action=action), 200
        try:
            result = EmerDiffModel(runtime).fit(action, body)
        except LearningError as error:  # nothing was learnt; the reason is logged and answered
            logger.warning("webhook %s: %s: %s", action, error.reason, error)
            runtime.metrics.increment("webhook_failures", error.reason)
            # 502/503: Label Studio or the memory is busy or away, the same webhook may succeed later.
            retry = {"Retry-After": str(WEBHOOK_RETRY_AFTER_S)} if error.status in (502, 503) else {}
            return jsonify(status="error", action=action, reason=error.reason, error=str(error)), error.status, retry
        if result.get("queued"):  # accepted: the background learner applies it (its log says how it went)
            return jsonify(status="queued", action=action, result=result), 202
        return jsonify(status="ok", action=action, result=result), 201

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(runtime.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(QueueFullError)
    def queue_full(error: QueueFullError) -> tuple[Response, int, dict]:
        return jsonify(error=str(error)), 503, {"Retry-After": str(error.retry_after)}

    @app.errorhandler(BadRequestError)
    def bad_request(error: BadRequestError) -> tuple[Response, int]:
        return jsonify(error=str(error)), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(error=f"{error.name}: {error.description}"), error.code or 500

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(error).__name__}: {error}"), 500

    return app


def _json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequestError("the request body is JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object (Content-Type: application/json)")
    return body


def _credentials_match(settings: Settings) -> bool:
    credentials = _basic_credentials(request.headers.get("Authorization", ""))
    if credentials is None:
        return False
    username, password = credentials
    # Every comparison always runs, so the time taken does not tell which part was wrong.
    user_ok = _secret_matches(username, settings.basic_auth_user)
    pass_ok = _secret_matches(password, settings.basic_auth_pass)
    return user_ok and pass_ok


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """The raw user and password bytes of a Basic ``Authorization`` header; None when it is not one.

    Kept as bytes: Label Studio (requests) encodes non-ASCII credentials as Latin-1, browsers and curl as
    UTF-8, and decoding them as one text (as werkzeug does) would make the other never match.
    """
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    return (username, password) if colon else None


def _secret_matches(given: bytes, expected: str) -> bool:
    """``given`` is ``expected`` in UTF-8 or in Latin-1 (both compared, constant time)."""
    utf8 = expected.encode("utf-8")
    try:
        latin1 = expected.encode("latin-1")
    except UnicodeEncodeError:  # beyond Latin-1 only UTF-8 can carry it
        latin1 = utf8
    matches = [hmac.compare_digest(given, utf8), hmac.compare_digest(given, latin1)]
    return any(matches)


def _configure_logging(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("ml_backend").setLevel(level)
