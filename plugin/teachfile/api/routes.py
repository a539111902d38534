"""Handlers of ``/teachfile/*`` as plain functions: a request in, a status and JSON out.

The entry script maps Orthanc's REST callback onto :func:`dispatch`; tests can call it directly.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import pydicom

from ..errors import REASONS
from ..node.service import Service
from ..reception.audit import Finding, audit_dataset
from ..reception.explain import explain
from ..reception.ocr import ocr_available, residual_text
from . import cases, portal
from .types import Request, Response, error


def _status(service: Service, req: Request) -> Response:
    return Response(200, service.status())


def _refusals(service: Service, req: Request) -> Response:
    try:
        limit = int(req.query.get("limit", "100"))
    except ValueError:
        return error(400, "limit must be an integer")
    if limit < 0:
        return error(400, "limit must not be negative")
    aet = req.query.get("aet")
    items = service.state.refusals(None if aet else limit)
    if aet:
        # What a storescu user needs after "Unknown Status: 0x110": their own refusals.
        items = [r for r in items if (r.get("calling_aet") or "").strip() == aet.strip()][:limit]
    for r in items:
        r["explanation"] = REASONS.get(r["reason"], "")
        r["dimse_status"] = dimse_status_text(r["reason"]) if r["origin"] == "dicom" else None
    return Response(200, {"count": len(items), "refusals": items})


def dimse_status_text(reason: str) -> str:
    """The DIMSE status a C-STORE sender saw for a refusal with ``reason`` (as storescu prints
    it); see :meth:`Service.cstore_filter`."""
    return "0xC000" if reason == "parse-error" else "0x0110"


def _profile(service: Service, req: Request) -> Response:
    return Response(200, service.profile_json())


def _openapi(service: Service, req: Request) -> Response:
    return Response(200, openapi_document())


def openapi_document() -> dict[str, Any]:
    text = resources.files("teachfile").joinpath("data/openapi.json").read_text()
    return json.loads(text)


AUDIT_PAGE = 100


def _int_arg(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    value = int(raw)  # ValueError -> 400 below
    if not lo <= value <= hi:
        raise ValueError(name)
    return value


def _audit(service: Service, req: Request) -> Response:
    """Scan stored instances, a page at a time (``offset``/``limit``): long scans progress by
    following ``next_offset`` until it is null."""
    if req.orthanc is None:
        return error(503, "the audit needs the Orthanc API")
    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        return error(400, "the body must be JSON")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    studies = body.get("studies", [])
    identifiers = body.get("identifiers", [])
    if not (isinstance(studies, list) and all(isinstance(s, str) for s in studies)):
        return error(400, "studies must be a list of Orthanc study ids")
    if not (isinstance(identifiers, list) and all(isinstance(s, str) for s in identifiers)):
        return error(400, "identifiers must be a list of strings")
    # Paging from the query string or, since Orthanc's Python plugin 4.0 does not pass the query
    # string of a POST to plugins, from the body.
    paging = {**{k: str(v) for k, v in body.items() if k in ("offset", "limit")}, **req.query}
    try:
        offset = _int_arg(paging, "offset", 0, 0, 10**9)
        limit = _int_arg(paging, "limit", AUDIT_PAGE, 1, 1000)
    except ValueError:
        return error(400, "offset must be >= 0 and limit between 1 and 1000")
    instances: list[str] = []
    if studies:
        for study in studies:
            if not study.replace("-", "").isalnum():
                return error(400, "study ids are Orthanc identifiers")
            try:
                items = json.loads(req.orthanc.get(f"/studies/{study}/instances"))
            except Exception:  # noqa: BLE001 - Orthanc answers 404 by raising
                return error(404, f"no such study: {study}")
            instances.extend(i["ID"] for i in items)
    else:
        instances = json.loads(req.orthanc.get("/instances"))
    instances.sort()
    page = instances[offset:offset + limit]
    ocr = service.settings.ocr_audit and ocr_available()
    results = []
    for iid in page:
        data = req.orthanc.get(f"/instances/{iid}/file")
        entry: dict[str, Any] = {"instance": iid}
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not ocr)
        except Exception:  # noqa: BLE001 - an unreadable instance is a finding, not a 500
            found = [Finding("unreadable")]
            entry.update(clean=False, findings=[f.as_json() for f in found])
            results.append(entry)
            continue
        found = audit_dataset(ds, service.pseudonymizer, service.profile, identifiers)
        if ocr and "PixelData" in ds:
            # The words may be identifying: they go to this authenticated caller only, never
            # to a log.
            try:
                words = residual_text(ds)
            except Exception as exc:  # noqa: BLE001 - an audit reports, it does not fail
                entry["ocr_error"] = type(exc).__name__
                words = []
            if words:
                found.append(Finding("residual-text", "(7FE0,0010)", "PixelData"))
                entry["residual_text"] = words
        entry.update(clean=not found, findings=[f.as_json() for f in found])
        results.append(entry)
    end = offset + len(page)
    return Response(200, {
        "total": len(instances),
        "offset": offset,
        "limit": limit,
        "scanned": len(page),
        "next_offset": end if end < len(instances) else None,
        "progress": round(end / len(instances), 4) if instances else 1.0,
        "ocr": bool(ocr),
        "clean": sum(1 for r in results if r["clean"]),
        "with_findings": sum(1 for r in results if not r["clean"]),
        "instances": results,
    })


def _explain(service: Service, req: Request) -> Response:
    """What reception would do with the body's DICOM file; nothing is stored, logged or
    counted, and the caller's own values come back to the caller only."""
    if not req.body:
        return error(400, "the body must be a DICOM file (Content-Type: application/dicom)")
    return Response(200, explain(service.reception, req.body))


_ROUTES: dict[str, tuple[str, Callable[[Service, Request], Response]]] = {
    "/teachfile/status": ("GET", _status),
    "/teachfile/refusals": ("GET", _refusals),
    "/teachfile/profile": ("GET", _profile),
    "/teachfile/openapi.json": ("GET", _openapi),
    "/teachfile/audit": ("POST", _audit),
    "/teachfile/explain": ("POST", _explain),
}

#: The regular expression the entry script registers with Orthanc.
ROUTE_REGEX = "/teachfile/.*"

ParamHandler = Callable[..., Response]


@functools.cache
def _param_routes() -> tuple[tuple[re.Pattern[str], Mapping[str, ParamHandler]], ...]:
    """Parametrised paths; named groups become keyword arguments of the handler."""
    return (
        (re.compile(r"^/teachfile/search$"), {"GET": cases.search}),
        (re.compile(r"^/teachfile/cases/(?P<study>[^/]+)$"),
         {"GET": cases.get_case, "PUT": cases.put_case}),
        (re.compile(r"^/teachfile/cases/(?P<study>[^/]+)/send$"), {"POST": cases.send_case}),
    )


def _method_not_allowed(req: Request, allow: str) -> Response:
    resp = error(405, f"{req.path} answers {allow} only")
    resp.body["allow"] = allow
    return resp


def forbidden(service: Service, user: str | None, method: str, uri: str) -> Response:
    """A 403 that says which role the request needs and which one the caller has."""
    from ..node.roles import required_role

    need = required_role(method, uri)
    role = service.roles.role_of(user)
    return error(403, f"{method} {uri.split('?', 1)[0]} needs the {need} role; user "
                 f"{user!r} is a {role or 'nobody'}", "role", required_role=need, role=role)


def dispatch(service: Service, req: Request) -> Response:
    if req.path.startswith(portal.PREFIXES):
        return portal.dispatch(service, req)
    path = req.path.rstrip("/")
    route = _ROUTES.get(path)
    if route is not None:
        method, handler = route
        if req.method != method:
            return _method_not_allowed(req, method)
        return handler(service, req)
    for pattern, methods in _param_routes():
        match = pattern.match(path)
        if match is None:
            continue
        param_handler = methods.get(req.method)
        if param_handler is None:
            return _method_not_allowed(req, ",".join(methods))
        return param_handler(service, req, **match.groupdict())
    return error(404, f"no such endpoint: {req.path}")
