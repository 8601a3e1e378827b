"""Real HTTP servers on 127.0.0.1 for the backend's download tests: a stand-in for Label Studio
(uploads, token refresh, presigning) and a plain file host. Each records the requests it served."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def fake_jwt(claims: dict) -> str:
    """A JWT-shaped token (unsigned): the backend reads only its shape and claims."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


PERSONAL_ACCESS_TOKEN = fake_jwt({"token_type": "refresh", "exp": 4102444800, "user_id": 1})
ACCESS_TOKEN = fake_jwt({"token_type": "access", "exp": 4102444800, "user_id": 1})


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    completed: bool = False  # the whole response was sent (False: the client hung up first)
    body_bytes_sent: int = 0  # of a trickled body, how many bytes the client took before hanging up


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True  # False: stream without Content-Length, end by closing
    delay_s: float = 0.0  # wait before the status line (a slow server)
    trickle_s: float = 0.0  # send the body one byte at a time, this long apart


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up (a deadline, a cap, a refused redirect) is what the tests provoke."""


class FakeServer:
    """A threaded HTTP server; ``routes`` maps a path (with query) to a :class:`Route`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.required_authorization: str | None = None  # answered 401 without it (except token refresh)
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def requests_to(self, path_prefix: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.startswith(path_prefix)]

    def respond(self, handler: BaseHTTPRequestHandler, body: bytes) -> Route:
        """The route for a request (subclasses add dynamic routes)."""
        return self.routes.get(handler.path, Route(status=404, body=b"not found"))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve(b"")

            def do_POST(self) -> None:
                self._serve(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _serve(self, body: bytes) -> None:
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                server.seen.append(seen)
                route = server.respond(self, body)
                try:
                    self._send(route, seen)
                except OSError:  # the client hung up (a deadline or a cap): recorded as incomplete
                    self.close_connection = True
                    return
                seen.completed = True

            def _send(self, route: Route, seen: Seen) -> None:
                time.sleep(route.delay_s)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.send_length:
                    self.send_header("Content-Length", str(len(route.body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if not route.trickle_s:
                    self.wfile.write(route.body)
                    return
                for index in range(len(route.body)):
                    self.wfile.write(route.body[index : index + 1])
                    self.wfile.flush()
                    seen.body_bytes_sent = index + 1
                    time.sleep(route.trickle_s)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        return Handler


class FakeLabelStudio(FakeServer):
    """Label Studio's routes the backend uses: /data/upload, /api/token/refresh/, /tasks/<id>/presign/."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads: dict[str, bytes] = {}  # path under /data/upload/ -> bytes
        self.presign_target: str | None = None  # URL prefix the presign route redirects to
        self.access_tokens = [ACCESS_TOKEN]  # handed out by successive refreshes (the last one repeats)

    def respond(self, handler: BaseHTTPRequestHandler, body: bytes) -> Route:
        path = urlsplit(handler.path).path
        if handler.command == "POST" and path == "/api/token/refresh/":
            refresh = json.loads(body or b"{}").get("refresh")
            if refresh == PERSONAL_ACCESS_TOKEN:
                access = self.access_tokens.pop(0) if len(self.access_tokens) > 1 else self.access_tokens[0]
                return Route(
                    body=json.dumps({"access": access}).encode(),
                    headers={"Content-Type": "application/json"},
                )
            return Route(status=401, body=b'{"detail": "Token is invalid or expired"}')
        if (
            self.required_authorization
            and handler.headers.get("Authorization") != self.required_authorization
        ):
            return Route(status=401, body=b'{"detail": "Authentication credentials were not provided."}')
        if path.startswith("/data/upload/") and path.removeprefix("/data/upload/") in self.uploads:
            return Route(body=self.uploads[path.removeprefix("/data/upload/")])
        if path.startswith("/tasks/") and path.endswith("/presign/") and self.presign_target:
            encoded = parse_qs(urlsplit(handler.path).query)["fileuri"][0]
            uri = base64.urlsafe_b64decode(encoded).decode()
            return Route(status=303, headers={"Location": self.presign_target + "/" + uri.split("://", 1)[1]})
        return super().respond(handler, body)
