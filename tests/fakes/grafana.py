"""A loopback Grafana that checks annotation requests the way the real HTTP API would.

It serves ``POST /api/annotations`` only and answers like Grafana: 401 without the expected
bearer token, 400 when the JSON does not have the documented shape (``time`` in epoch
milliseconds as an integer, ``tags`` a list of strings, ``text`` a non-empty string,
``dashboardUID`` a string when present), 200 ``{"message": "Annotation added", "id": N}``
otherwise. Tests make it fail (``fail_next``) or hang (``hold``: the answer waits until the
test sets the event, or ``hold_max_s`` passes) on demand and read what it received from
``requests`` / ``annotations`` (a request's ``status`` stays 0 until it is answered).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from .loopback import LoopbackHTTP


@dataclass
class GrafanaRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any
    status: int = 0


def check_annotation(body: Any) -> list[str]:
    """Problems with an annotation body, per Grafana's HTTP API documentation."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    problems = []
    t = body.get("time")
    if not isinstance(t, int) or isinstance(t, bool):
        problems.append("time must be an integer (epoch milliseconds)")
    if "timeEnd" in body and not isinstance(body["timeEnd"], int):
        problems.append("timeEnd must be an integer")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
        problems.append("tags must be a list of strings")
    if not isinstance(body.get("text"), str) or not body["text"]:
        problems.append("text is required")
    if "dashboardUID" in body and not isinstance(body["dashboardUID"], str):
        problems.append("dashboardUID must be a string")
    if "panelId" in body and not isinstance(body["panelId"], int):
        problems.append("panelId must be an integer")
    return problems


class FakeGrafana:
    def __init__(self, token: str | None = "glsa_test_token") -> None:
        self.token = token
        self.requests: list[GrafanaRequest] = []
        self.annotations: list[dict[str, Any]] = []
        self.hold: threading.Event | None = None
        self.hold_max_s = 30.0
        self._fail: list[int] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http = LoopbackHTTP(self._serve)

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        with self._lock:
            self._fail.extend([status] * times)

    def start(self) -> FakeGrafana:
        self._http.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.stop()

    def __enter__(self) -> FakeGrafana:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._http.url

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = GrafanaRequest(h.command, h.path, headers, body)
        with self._lock:
            self.requests.append(req)
            fail = self._fail.pop(0) if self._fail else None
        if self.hold is not None:
            self.hold.wait(self.hold_max_s)
            if self._stopping.is_set():
                return
        status, payload = self._answer(req, fail)
        req.status = status
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            h.close_connection = True

    def _answer(self, req: GrafanaRequest, fail: int | None) -> tuple[int, dict[str, Any]]:
        if req.path != "/api/annotations" or req.method != "POST":
            return 404, {"message": "Not found"}
        if self.token is not None and req.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        if fail is not None:
            return fail, {"message": "injected failure"}
        if not req.headers.get("content-type", "").startswith("application/json"):
            return 400, {"message": "bad request data: content type"}
        problems = check_annotation(req.body)
        if problems:
            return 400, {"message": "bad request data: " + "; ".join(problems)}
        with self._lock:
            self.annotations.append(req.body)
            n = len(self.annotations)
        return 200, {"message": "Annotation added", "id": n}
