"""The request and response types every ``/teachfile`` handler speaks, in a module of their own
so that the router and the handlers both build on them without importing each other."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class OrthancApi(Protocol):
    """The slice of Orthanc's internal REST API the handlers need. Each call raises on an
    Orthanc error (as the ``orthanc`` module does)."""

    def get(self, uri: str) -> bytes: ...

    def post(self, uri: str, body: bytes) -> bytes: ...

    def put(self, uri: str, body: bytes) -> bytes: ...

    def delete(self, uri: str) -> None: ...


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes = b""
    user: str | None = None
    orthanc: OrthancApi | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Response:
    status: int
    body: Any

    def encode(self) -> bytes:
        return json.dumps(self.body, indent=2, sort_keys=False).encode()


#: A short, stable code for each error status, so clients can branch on ``reason``.
REASON_BY_STATUS = {400: "bad-request", 401: "unauthenticated", 403: "forbidden",
                    404: "not-found", 405: "method-not-allowed", 409: "conflict",
                    413: "too-large", 422: "unprocessable", 500: "internal-error",
                    503: "unavailable"}


def error(status: int, message: str, reason: str | None = None, **extra: Any) -> Response:
    """Every ``/teachfile`` error: ``{"error": message, "reason": code, "status": status}``."""
    return Response(status, {"error": message,
                             "reason": reason or REASON_BY_STATUS.get(status, "error"),
                             "status": status, **extra})
