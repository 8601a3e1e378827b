#!/usr/bin/env bash
# Starts the EmerDiff ML backend: checks the configuration (docker/preflight.py), then replaces itself with
# gunicorn (the repo's config, ml_backend/gunicorn_conf.py). Works inside the image and from a checkout
# alike; arguments are passed on to gunicorn (e.g. --no-control-socket when several instances share a
# machine).
#   PYTHON           interpreter holding the requirements (default: python on PATH, /opt/venv in the image)
#   ON_CONFIG_ERROR  exit (default): exit 64 on a configuration error.
#                    hold (the image's default): report it, then wait until stopped and exit 64 then.
#                    Docker's restart policies cannot tell exit codes apart: `unless-stopped` restarts a
#                    container that exits 64 in a loop, and `on-failure` does not start again a backend
#                    that stopped cleanly when the Docker daemon restarts (host reboot). A held container
#                    stays up, unhealthy, with the reason in its log and its health status.
# Every other variable is a setting of the service: see ml_backend/core/settings.py and docs/DEPLOY.md.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$APP_DIR"
PYTHON="${PYTHON:-python}"
# Read by docker/healthcheck.py, so that the container's health status names the error.
ERROR_FILE="${TMPDIR:-/tmp}/emerdiff-config-error"
EX_USAGE=64

config_error() {
    local message="$1"
    echo "entrypoint: $message" >&2
    if [[ "${ON_CONFIG_ERROR:-exit}" == hold ]]; then
        printf '%s\n' "$message" > "$ERROR_FILE"
        echo "entrypoint: not starting; waiting to be stopped (ON_CONFIG_ERROR=hold). Fix the setting," \
             "then recreate the container." >&2
        # SIGTERM (docker stop) ends the wait at once; the exit status still says "configuration".
        trap 'kill "$!" 2>/dev/null; exit "$EX_USAGE"' TERM INT
        sleep infinity &
        wait "$!"
    fi
    exit "$EX_USAGE"
}

rm -f "$ERROR_FILE"
case "${ON_CONFIG_ERROR:-exit}" in
    exit | hold) ;;
    *) ON_CONFIG_ERROR=exit config_error "ON_CONFIG_ERROR=${ON_CONFIG_ERROR}: must be exit or hold" ;;
esac
command -v "$PYTHON" >/dev/null 2>&1 || config_error "no Python interpreter '$PYTHON' (set PYTHON)"

# Settings, writable folders, model folder: the line preflight prints names the variable.
if ! problem="$(PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" docker/preflight.py 2>&1)"; then
    config_error "${problem#entrypoint: }"
fi

if [[ -n "${LABEL_STUDIO_URL:-}" && -z "${LABEL_STUDIO_API_KEY:-}" ]]; then
    echo "entrypoint: warning: LABEL_STUDIO_URL is set without LABEL_STUDIO_API_KEY; images uploaded to" \
         "Label Studio (/data/upload/...) cannot be downloaded without it" >&2
fi

exec "$PYTHON" -m gunicorn -c ml_backend/gunicorn_conf.py "$@" ml_backend.wsgi:app
