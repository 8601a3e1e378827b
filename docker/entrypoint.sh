#!/usr/bin/env bash
# Starts the EmerDiff ML backend: checks the environment, then replaces itself with gunicorn (the repo's
# config, ml_backend/gunicorn_conf.py). Works inside the image and from a checkout alike; arguments are
# passed on to gunicorn (e.g. --no-control-socket when several instances share a machine).
#   PYTHON  interpreter holding the requirements (default: python on PATH, /opt/venv in the image)
# Every other variable is a setting of the service: see ml_backend/settings.py and docs/DEPLOY.md.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$APP_DIR"
PYTHON="${PYTHON:-python}"

fail() {
    echo "entrypoint: $*" >&2
    exit 64  # EX_USAGE: the configuration is wrong, restarting will not help
}

command -v "$PYTHON" >/dev/null 2>&1 || fail "no Python interpreter '$PYTHON' (set PYTHON)"

# Settings.from_env checks every variable once and names the bad one; print that line, not a traceback.
"$PYTHON" - <<'PY' || fail "invalid environment, see the line above"
import sys

from ml_backend.settings import Settings, SettingsError

try:
    Settings.from_env()
except SettingsError as error:
    sys.exit(f"entrypoint: {error}")
PY

# A hub model is downloaded into HF_HOME on first start: a volume the service user cannot write would
# only fail minutes later, deep inside the download.
if [[ -n "${HF_HOME:-}" ]]; then
    mkdir -p "$HF_HOME" 2>/dev/null || fail "HF_HOME=$HF_HOME cannot be created by user $(id -un)"
    [[ -w "$HF_HOME" ]] || fail "HF_HOME=$HF_HOME is not writable by user $(id -un) (uid $(id -u))"
fi

if [[ -n "${LABEL_STUDIO_URL:-}" && -z "${LABEL_STUDIO_API_KEY:-}" ]]; then
    echo "entrypoint: warning: LABEL_STUDIO_URL is set without LABEL_STUDIO_API_KEY; images uploaded to" \
         "Label Studio (/data/upload/...) cannot be downloaded without it" >&2
fi

exec "$PYTHON" -m gunicorn -c ml_backend/gunicorn_conf.py "$@" ml_backend.wsgi:app
