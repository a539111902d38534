"""Handlers of ``/teachfile/*`` as plain functions: a request in, a status and JSON out.

The entry script maps Orthanc's REST callback onto :func:`dispatch`; tests can call it directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .service import Service


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any

    def encode(self) -> bytes:
        return json.dumps(self.body, indent=2, sort_keys=False).encode()


def error(status: int, message: str) -> Response:
    return Response(status, {"error": message, "status": status})


def _status(service: Service, req: Request) -> Response:
    return Response(200, service.status())


def _refusals(service: Service, req: Request) -> Response:
    try:
        limit = int(req.query.get("limit", "100"))
    except ValueError:
        return error(400, "limit must be an integer")
    if limit < 0:
        return error(400, "limit must not be negative")
    items = service.state.refusals(limit)
    return Response(200, {"count": len(items), "refusals": items})


def _profile(service: Service, req: Request) -> Response:
    return Response(200, service.profile_json())


_ROUTES: dict[str, tuple[str, Callable[[Service, Request], Response]]] = {
    "/teachfile/status": ("GET", _status),
    "/teachfile/refusals": ("GET", _refusals),
    "/teachfile/profile": ("GET", _profile),
}

#: The regular expression the entry script registers with Orthanc.
ROUTE_REGEX = "/teachfile/(status|refusals|profile)"


def dispatch(service: Service, req: Request) -> Response:
    route = _ROUTES.get(req.path.rstrip("/"))
    if route is None:
        return error(404, f"no such endpoint: {req.path}")
    method, handler = route
    if req.method != method:
        return error(405, f"{req.path} answers {method} only")
    return handler(service, req)
