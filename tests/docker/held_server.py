"""An image host that holds each download until the test releases it: a request provably in flight."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Longest a held download waits for release, so that a failing test never leaves a thread behind.
_HOLD_LIMIT_S = 300.0


class HeldImageServer:
    """Serves ``body`` as image/png on every GET, but only once :meth:`release` is called."""

    def __init__(self, host: str, body: bytes) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.arrived.set()
                server._released.wait(_HOLD_LIMIT_S)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer((host, 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://{host}:{self._http.server_address[1]}/held.png"

    def release(self) -> None:
        self._released.set()

    @contextmanager
    def serving(self) -> Iterator[HeldImageServer]:
        thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release()
            self._http.shutdown()
            self._http.server_close()
            thread.join(timeout=10)
