"""Orthanc's own ``PUT``/``DELETE /modalities/{name}``, made to last.

Orthanc keeps a modality added over REST in memory only (``DicomModalitiesInDatabase`` false),
so it would vanish at the next start, when the launcher rewrites ``orthanc.json``. The plugin
serves ``/modalities/{name}`` itself: it validates the entry, lets Orthanc apply it at once
(its internal API) and writes it to ``$TEACHFILE_DATA/network.json``, which the launcher merges
at every start. Only an admin reaches ``PUT``/``DELETE`` (the role filter runs first).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..node import network
from .types import Request, Response, error

#: The regular expression the entry script registers (Orthanc matches the whole URI, so
#: ``/modalities/{name}/echo`` and siblings stay Orthanc's).
MODALITY_REGEX = "/modalities/([^/]+)"


def modality(data_dir: Path, req: Request, name: str) -> Response:
    if req.orthanc is None:
        return error(503, "this endpoint needs the Orthanc API")
    path = network.network_path(data_dir)
    if req.method == "GET":
        try:
            return Response(200, json.loads(req.orthanc.get(f"/modalities/{name}")))
        except Exception:  # noqa: BLE001 - Orthanc raises for an unknown modality
            return error(404, f"no modality named {name!r}")
    if req.method == "PUT":
        try:
            body = json.loads(req.body or b"null")
            entry = network.Modality.from_orthanc(name, body)
        except ValueError:
            return error(400, "the body must be JSON")
        except ConfigError as exc:
            return error(400, str(exc))
        try:
            req.orthanc.put(f"/modalities/{name}", json.dumps(entry.to_orthanc()).encode())
        except Exception:  # noqa: BLE001
            return error(400, "Orthanc refused this modality")
        network.update(path, lambda net: net.with_modality(entry))
        return Response(200, {"name": name, **entry.to_json(), "persistent": True})
    if req.method == "DELETE":
        try:
            req.orthanc.delete(f"/modalities/{name}")
        except Exception:  # noqa: BLE001
            return error(404, f"no modality named {name!r}")
        net = network.load(path)
        if name in net.modalities:
            network.update(path, lambda n: n.without_modality(name))
        return Response(200, {"name": name, "deleted": True})
    resp = error(405, f"{req.path} answers GET,PUT,DELETE only")
    resp.body["allow"] = "GET,PUT,DELETE"
    return resp
