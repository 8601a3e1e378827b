"""Every setting of the service, read from environment variables only, checked once at start-up.

Each field documents its variable and default; README's "ML backend" section lists them for users.
An invalid value raises :class:`SettingsError` naming the variable, so a misconfigured container stops
at start instead of failing on the first request.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from converters.polygons import DEFAULT_MAX_VERTICES, DEFAULT_TOLERANCE
from ml_backend.core.errors import TaskError
from ml_backend.core.tls import ca_bundle_from_env
from ml_backend.core.urls import http_origin
from segmentor.config import DEFAULT_PRESET, PRESETS, EmerDiffConfig
from segmentor.loading import DEFAULT_MODEL
from segmentor.zeroshot.dense import DEFAULT_MODE as DEFAULT_CLIP_MODE
from segmentor.zeroshot.dense import MODES as CLIP_MODES
from segmentor.zeroshot.text import TEMPLATE_SETS

T = TypeVar("T")

_DEFAULTS = EmerDiffConfig()


def default_cache_dir() -> Path:
    """CACHE_DIR's default, ~/.cache/emerdiff-ml-backend, read from HOME when a Settings is made (not at
    import), so that a process, or a test, that points HOME elsewhere never writes into the real one."""
    return Path("~/.cache/emerdiff-ml-backend").expanduser()


def default_data_dir() -> Path:
    """DATA_DIR's default, ~/.local/share/emerdiff-ml-backend, read from HOME like :func:`default_cache_dir`."""
    return Path("~/.local/share/emerdiff-ml-backend").expanduser()


# Cost grows with 2 x segments modulated runs per image; the paper tests 10-40.
MAX_NUM_SEGMENTS = 100
# Upper bounds of the region knobs (environment and emerdiff-* attributes): far above any useful
# value, low enough that no value overflows or makes a request run away.
MAX_MIN_AREA = 100_000_000
MAX_TOLERANCE = 1000.0
MAX_VERTICES = 100_000
# Upstream's variable names (label-studio-ml-backend examples) -> ours; either may be set, not both.
# MODEL_DIR is upstream's state folder (what a backend keeps between runs), so it names DATA_DIR here;
# the model to load is EMERDIFF_MODEL, which upstream has no name for.
ALIASES = {
    "MODEL_DIR": "DATA_DIR",
    "DEVICE": "EMERDIFF_DEVICE",
    "THREADS": "GUNICORN_THREADS",
    "LABEL_STUDIO_HOST": "LABEL_STUDIO_URL",
    "LABEL_STUDIO_ACCESS_TOKEN": "LABEL_STUDIO_API_KEY",
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    # EMERDIFF_MODEL: hub id, local diffusers folder, or "bundled" (the small offline model).
    model: str = DEFAULT_MODEL
    # EMERDIFF_DEVICE: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # EMERDIFF_DTYPE: "auto" (float16 on CUDA, float32 on CPU), "float32", "float16", "bfloat16".
    dtype: str = "auto"
    # EMERDIFF_NUM_SEGMENTS: k-means clusters = segments per image, 1..100 (default: the segmentor's).
    num_segments: int = _DEFAULTS.num_segments
    # EMERDIFF_PRESET: "paper" (the full method) or "fast" (under a quarter of its FLOPs; agreement with
    # "paper" measured in docs/PERFORMANCE.md).
    preset: str = DEFAULT_PRESET
    # EMERDIFF_SEED: seed of the forward noise and k-means.
    seed: int = _DEFAULTS.seed
    # EMERDIFF_MIN_AREA: segments (and polygon pieces) under this many pixels are merged away / dropped.
    min_area: int = 10
    # EMERDIFF_POLYGON_TOLERANCE: polygon simplification tolerance in pixels (0 = exact contour).
    polygon_tolerance: float = DEFAULT_TOLERANCE
    # EMERDIFF_MAX_VERTICES: most vertices per polygon.
    max_vertices: int = DEFAULT_MAX_VERTICES
    # EMERDIFF_DEFAULT_LABEL: label of new segments when a control names none and has this label.
    default_label: str | None = None
    # LABEL_STUDIO_URL: base URL of Label Studio (uploads, local files, cloud presigning). Unset: none.
    label_studio_url: str | None = None
    # LABEL_STUDIO_API_KEY: legacy token, or personal access token (JWT refresh token, exchanged).
    label_studio_api_key: str | None = field(default=None, repr=False)
    # LOCAL_FILES_DOCUMENT_ROOT: read /data/local-files/?d=... from this folder instead of over HTTP.
    local_files_document_root: Path | None = None
    # ALLOWED_IMAGE_HOSTS: comma-separated hosts plain http(s) image URLs may point at; "*.example.com"
    # matches sub-domains, "*" any host. Empty (default): any host with a public address (Label
    # Studio's own policy); private addresses still need ALLOW_PRIVATE_IMAGE_ADDRESSES.
    allowed_image_hosts: tuple[str, ...] = ()
    # ALLOW_PRIVATE_IMAGE_ADDRESSES: let image downloads reach private, loopback and link-local
    # addresses (Label Studio's own host is always allowed). Default false.
    allow_private_image_addresses: bool = False
    # MAX_IMAGE_BYTES: largest image file downloaded or read (default 50 MiB).
    max_image_bytes: int = 50 * 1024 * 1024
    # MAX_IMAGE_PIXELS: largest image decoded, width x height (default 40 megapixels).
    max_image_pixels: int = 40_000_000
    # FETCH_TIMEOUT: seconds for connecting, for each read, and for a whole download.
    fetch_timeout: float = 20.0
    # CACHE_DIR: folder of the segmentation cache; "off" disables it.
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    # DATA_DIR: folder of what the service keeps (the label memory of label learning); "off" disables
    # label learning.
    data_dir: Path | None = field(default_factory=default_data_dir)
    # BASIC_AUTH_USER / BASIC_AUTH_PASS: require HTTP basic auth on every route but /health and /.
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    # LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_level: str = "INFO"
    # HOST / PORT: address gunicorn binds to.
    host: str = "0.0.0.0"
    port: int = 9090
    # GUNICORN_THREADS: request threads of the single worker (predictions still run one at a time).
    threads: int = 4
    # GUNICORN_TIMEOUT: seconds a request may take before gunicorn restarts the worker; must exceed
    # Label Studio's 100 s prediction timeout.
    worker_timeout: int = 300
    # GUNICORN_GRACEFUL_TIMEOUT: seconds a stopping worker gets to finish the requests in flight; keep it
    # under the container's stop grace period (Docker: 10 s unless stop_grace_period / --stop-timeout).
    graceful_timeout: int = 8
    # MAX_REQUEST_BYTES: largest request body (answered 413 beyond it). Default 16 MiB.
    max_request_bytes: int = 16 * 1024 * 1024
    # MAX_TASKS_PER_REQUEST: most tasks in one /predict (answered 400 beyond it). High: Label Studio sends a
    # whole selection in one request; MAX_REQUEST_BYTES bounds its size and PREDICT_BUDGET_SECONDS its time.
    max_tasks_per_request: int = 100_000
    # PREDICT_BUDGET_SECONDS: seconds a /predict spends answering tasks; the tasks left then get no result
    # (Label Studio stores nothing and asks again) while their segmentations go on in the background.
    # Keep it plus FETCH_TIMEOUT plus one segmentation under Label Studio's ML_TIMEOUT_PREDICT (100 s).
    predict_budget_seconds: float = 50.0
    # BACKGROUND_QUEUE_SIZE: segmentations waiting in the background (each holds an image reference, no
    # bytes); beyond it a task is left for a later request.
    background_queue_size: int = 10_000
    # LEARNING_QUEUE_SIZE: label-learning webhooks waiting for the background learner (each holds its
    # parsed payload); beyond it a webhook is answered 503 with Retry-After, logged and counted, and
    # "Start Training" (or `memory rebuild`) learns what was refused.
    learning_queue_size: int = 100
    # MAX_SMART_PROMPTS: most smart-tool prompts (keypoints, rectangles) in one /predict's context; more
    # fail every task with a context error (each prompt costs a pass over the image).
    max_smart_prompts: int = 100
    # CA_BUNDLE: PEM file (or OpenSSL hashed folder) of the certificate authorities trusted for HTTPS to
    # Label Studio and image hosts. Unset: REQUESTS_CA_BUNDLE, then SSL_CERT_FILE, then certifi's bundle.
    ca_bundle: Path | None = None
    # MAX_SEGMENTATIONS_PER_TASK: most distinct segmentations (controls with different emerdiff-segments
    # / emerdiff-min-area) one label config may ask of every image.
    max_segmentations_per_task: int = 2
    # PREDICT_QUEUE_SIZE: /predict requests admitted at once, the running one included; more get 503 with
    # Retry-After. At most GUNICORN_THREADS - 1 (one thread stays free for /health). Default threads - 2.
    predict_queue_size: int = 2
    # CACHE_MAX_BYTES: size bound of CACHE_DIR; least recently used entries go first. Default 10 GiB.
    cache_max_bytes: int = 10 * 1024**3
    # EMERDIFF_CLIP_MODEL: the CLIP of zero-shot labels (ml_backend.labels.zeroshot): "bundled", a local
    # CLIPModel folder, or a hub id already in the Hugging Face cache. Unset (default): zero-shot off.
    clip_model: str | None = None
    # EMERDIFF_CLIP_MODE: how CLIP's last block is rebuilt for dense features: maskclip, sclip, clearclip, naclip.
    clip_mode: str = DEFAULT_CLIP_MODE
    # EMERDIFF_CLIP_TEMPLATES: prompt templates: "default" (8 photo/scene templates) or "plain" (the bare words).
    clip_templates: str = "default"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); unset or empty variables keep defaults."""
        env = _Env(_with_aliases(os.environ if environ is None else environ))
        defaults = cls()
        settings = cls(
            model=env.text("EMERDIFF_MODEL", defaults.model),
            device=env.text("EMERDIFF_DEVICE", defaults.device),
            dtype=env.choice("EMERDIFF_DTYPE", defaults.dtype, ("auto", "float32", "float16", "bfloat16")),
            num_segments=env.integer("EMERDIFF_NUM_SEGMENTS", defaults.num_segments, 1, MAX_NUM_SEGMENTS),
            preset=env.choice("EMERDIFF_PRESET", defaults.preset, tuple(PRESETS)),
            seed=env.integer("EMERDIFF_SEED", defaults.seed, 0, 2**63 - 1),
            min_area=env.integer("EMERDIFF_MIN_AREA", defaults.min_area, 0, MAX_MIN_AREA),
            polygon_tolerance=env.number(
                "EMERDIFF_POLYGON_TOLERANCE", defaults.polygon_tolerance, 0.0, MAX_TOLERANCE
            ),
            max_vertices=env.integer("EMERDIFF_MAX_VERTICES", defaults.max_vertices, 3, MAX_VERTICES),
            default_label=env.optional("EMERDIFF_DEFAULT_LABEL"),
            label_studio_url=env.parsed("LABEL_STUDIO_URL", None, _base_url),
            label_studio_api_key=env.optional("LABEL_STUDIO_API_KEY"),
            local_files_document_root=env.parsed("LOCAL_FILES_DOCUMENT_ROOT", None, _document_root),
            allowed_image_hosts=env.parsed("ALLOWED_IMAGE_HOSTS", (), _host_patterns),
            allow_private_image_addresses=env.boolean("ALLOW_PRIVATE_IMAGE_ADDRESSES", False),
            max_image_bytes=env.integer("MAX_IMAGE_BYTES", defaults.max_image_bytes, 1, None),
            max_image_pixels=env.integer("MAX_IMAGE_PIXELS", defaults.max_image_pixels, 1, None),
            fetch_timeout=env.number("FETCH_TIMEOUT", defaults.fetch_timeout, 0.1, 3600.0),
            cache_dir=env.parsed("CACHE_DIR", defaults.cache_dir, _cache_dir),
            data_dir=env.parsed("DATA_DIR", defaults.data_dir, _cache_dir),
            basic_auth_user=env.optional("BASIC_AUTH_USER"),
            basic_auth_pass=env.optional("BASIC_AUTH_PASS"),
            log_level=env.choice("LOG_LEVEL", defaults.log_level, _LOG_LEVELS, upper=True),
            host=env.text("HOST", defaults.host),
            port=env.integer("PORT", defaults.port, 1, 65535),
            threads=env.integer("GUNICORN_THREADS", defaults.threads, 2, 64),
            worker_timeout=env.integer("GUNICORN_TIMEOUT", defaults.worker_timeout, 101, None),
            graceful_timeout=env.integer("GUNICORN_GRACEFUL_TIMEOUT", defaults.graceful_timeout, 1, 3600),
            max_request_bytes=env.integer("MAX_REQUEST_BYTES", defaults.max_request_bytes, 1024, None),
            max_tasks_per_request=env.integer("MAX_TASKS_PER_REQUEST", defaults.max_tasks_per_request, 1, None),
            predict_budget_seconds=env.number(
                "PREDICT_BUDGET_SECONDS", defaults.predict_budget_seconds, 0.0, 3600.0
            ),
            background_queue_size=env.integer("BACKGROUND_QUEUE_SIZE", defaults.background_queue_size, 1, None),
            learning_queue_size=env.integer("LEARNING_QUEUE_SIZE", defaults.learning_queue_size, 1, None),
            max_smart_prompts=env.integer("MAX_SMART_PROMPTS", defaults.max_smart_prompts, 1, None),
            ca_bundle=_ca_bundle(environ if environ is not None else os.environ),
            max_segmentations_per_task=env.integer(
                "MAX_SEGMENTATIONS_PER_TASK", defaults.max_segmentations_per_task, 1, 16
            ),
            cache_max_bytes=env.integer("CACHE_MAX_BYTES", defaults.cache_max_bytes, 1024 * 1024, None),
            clip_model=env.optional("EMERDIFF_CLIP_MODEL"),
            clip_mode=env.choice("EMERDIFF_CLIP_MODE", defaults.clip_mode, CLIP_MODES),
            clip_templates=env.choice("EMERDIFF_CLIP_TEMPLATES", defaults.clip_templates, tuple(TEMPLATE_SETS)),
        )
        workers = env.integer("WORKERS", 1, 1, None)
        if workers > 1:
            raise SettingsError(
                f"WORKERS={workers}: this backend runs one worker (one model per process and GPU); "
                "run one container per GPU, and raise THREADS for more concurrent requests"
            )
        queue = env.integer("PREDICT_QUEUE_SIZE", max(1, settings.threads - 2), 1, settings.threads - 1)
        settings = dataclasses.replace(settings, predict_queue_size=queue)
        if (settings.basic_auth_user is None) != (settings.basic_auth_pass is None):
            raise SettingsError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together (or neither)")
        credentials = (("BASIC_AUTH_USER", settings.basic_auth_user), ("BASIC_AUTH_PASS", settings.basic_auth_pass))
        for name, secret in credentials:
            if secret is not None and not _latin1(secret):
                # Label Studio (requests) sends basic-auth credentials in Latin-1: these it can never send.
                raise SettingsError(f"{name} has characters beyond Latin-1, which Label Studio cannot send in "
                                    "basic auth: choose one of ASCII or Latin-1 characters")
        return settings

    @property
    def basic_auth_enabled(self) -> bool:
        return self.basic_auth_user is not None


class _Env:
    """Typed reads of environment variables; each failure names the variable and the value."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def parsed(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        value = self.optional(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as error:
            raise SettingsError(f"{name}={value!r}: {error}") from error

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
        value = self.text(name, default)
        value = value.upper() if upper else value
        if value not in choices:
            raise SettingsError(f"{name}={value!r}: must be one of {', '.join(choices)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._environ.get(name)
        if value is None:
            return default
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        raise SettingsError(f"{name}={value!r}: must be true or false (1/0, yes/no, on/off)")

    def integer(self, name: str, default: int, low: int, high: int | None) -> int:
        return self.parsed(name, default, lambda text: parse_integer(text, low, high))

    def number(self, name: str, default: float, low: float, high: float | None = None) -> float:
        return self.parsed(name, default, lambda text: parse_number(text, low, high))


def parse_integer(text: str, low: int, high: int | None) -> int:
    """``text`` as an integer in ``[low, high]`` (no upper bound when None); ValueError says the bounds."""
    bounds = f"an integer between {low} and {high}" if high is not None else f"an integer >= {low}"
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"must be {bounds}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"must be {bounds}")
    return value


def parse_number(text: str, low: float, high: float | None = None) -> float:
    """``text`` as a finite number in ``[low, high]`` (no upper bound when None); ValueError otherwise."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= low and (high is None or value <= high)):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"must be a finite number {bounds}")
    return value


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _with_aliases(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with each upstream alias (ALIASES) copied to our name; both set and different: error."""
    merged = dict(environ)
    for alias, name in ALIASES.items():
        value = environ.get(alias, "").strip()
        if not value:
            continue
        ours = environ.get(name, "").strip()
        if ours and ours != value:
            raise SettingsError(f"{alias}={value!r} and {name}={ours!r} disagree: set one of them")
        merged[name] = value
    return merged


def _base_url(value: str) -> str:
    try:
        http_origin(value)
    except TaskError as error:
        raise ValueError(
            f"must be an http:// or https:// URL with a host, e.g. http://label-studio:8080 ({error})"
        ) from None
    parts = urlsplit(value)
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    return value.rstrip("/")


def _document_root(value: str) -> Path:
    root = Path(value).expanduser()
    if not root.is_dir():
        raise ValueError("is not an existing folder")
    resolved = root.resolve()
    if resolved == Path(resolved.anchor):
        raise ValueError("must not be the file-system root: it would expose every file")
    return resolved


def _host_patterns(value: str) -> tuple[str, ...]:
    patterns = tuple(host.strip().lower() for host in value.split(",") if host.strip())
    for pattern in patterns:
        name = pattern.removeprefix("*.")
        if pattern != "*" and (not name or "*" in name or "/" in name or ":" in name):
            raise ValueError(f"{pattern!r} is not a host name, '*.domain' or '*' (no scheme, port or path)")
    return patterns


def _ca_bundle(environ: Mapping[str, str]) -> Path | None:
    """CA_BUNDLE, else the standard REQUESTS_CA_BUNDLE / SSL_CERT_FILE (ml_backend.core.tls)."""
    try:
        return ca_bundle_from_env(environ)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _cache_dir(value: str) -> Path | None:
    return None if value.lower() == "off" else Path(value).expanduser()
