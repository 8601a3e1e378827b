"""gunicorn settings, from the same environment variables as the app (see ml_backend/settings.py).

One worker per process holds the model in GPU memory, so one worker (run one container per GPU);
its threads keep /health answering while a prediction holds the GPU lock. Settings are validated here
already, so a bad variable stops the server before a worker starts.
"""

import sys

from ml_backend.settings import Settings, SettingsError

try:
    _settings = Settings.from_env()
except SettingsError as error:
    sys.exit(f"emerdiff ml_backend: invalid setting: {error}")

bind = (
    f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host else f"{_settings.host}:{_settings.port}"
)
workers = 1
worker_class = "gthread"
threads = _settings.threads
# Above Label Studio's 100 s prediction timeout: a long batch must not get its worker killed.
timeout = _settings.worker_timeout
graceful_timeout = 30
# The model loads inside the worker: CUDA must not be initialised in the master before forking.
preload_app = False
loglevel = _settings.log_level.lower()
accesslog = "-"
errorlog = "-"
