"""Docker HEALTHCHECK of the ML backend: exit 0 when GET /health answers {"status": "UP"}, else 1.

Standard library only, so the image needs no curl. Reads PORT like the service (default 9090). When the
entrypoint is holding on a configuration error, the reason is printed, so that `docker inspect` shows it.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

# Written by docker/entrypoint.sh when it does not start the service (ON_CONFIG_ERROR=hold).
CONFIG_ERROR_FILE = Path(os.environ.get("TMPDIR") or "/tmp") / "emerdiff-config-error"


def main() -> int:
    if CONFIG_ERROR_FILE.exists():
        print(f"healthcheck: not started, configuration error: {CONFIG_ERROR_FILE.read_text().strip()}")
        return 1
    url = f"http://127.0.0.1:{os.environ.get('PORT') or '9090'}/health"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = json.load(response).get("status")
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1
    if status != "UP":
        print(f"healthcheck: {url} reports status {status!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
