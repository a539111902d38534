"""Bringing a running Orthanc in line with a roster over its REST API, without a restart.

Orthanc's ``/modalities`` routes change the live modality table. Those changes survive a
restart only when the server runs with ``DicomModalitiesInDatabase: true``; otherwise the
configuration file wins again at the next start, so ``render`` + restart remains the durable path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests

from ..errors import TeachfileError
from ..neterrors import explain
from .model import Roster
from .render import server_modalities

#: The keys the roster decides; Orthanc reports more (LocalAet, Timeout, ...) that we leave be.
COMPARED_KEYS = ("AET", "Host", "Port", "Manufacturer", "AllowEcho", "AllowFind", "AllowMove",
                 "AllowGet", "AllowStore")


class RemoteError(TeachfileError):
    """The server could not be reached or refused a request."""


@dataclass(frozen=True)
class ModalityDiff:
    added: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def lines(self) -> list[str]:
        """Human-readable, one change per line, sorted by modality name."""
        out = [f"+ {name}: {_short(body)}" for name, body in sorted(self.added.items())]
        for name, (old, new) in sorted(self.changed.items()):
            what = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in COMPARED_KEYS
                             if old.get(k) != new[k])
            out.append(f"~ {name}: {what}")
        out.extend(f"- {name}" for name in self.removed)
        return out


@dataclass(frozen=True)
class EchoResult:
    name: str
    aet: str
    host: str
    port: int
    status: str  # "reachable" | "unreachable" | "not configured"

    @property
    def ok(self) -> bool:
        return self.status == "reachable"


def _short(body: dict[str, Any]) -> str:
    allowed = [k[5:].lower() for k in COMPARED_KEYS if k.startswith("Allow") and body.get(k)]
    return f"{body['AET']}@{body['Host']}:{body['Port']} [{' '.join(allowed)}]"


class OrthancClient:
    """The few REST calls the roster needs; a thin wrapper so errors become RemoteError."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if user is not None:
            self.session.auth = (user, password or "")
        self.timeout = timeout

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout,
                                            **kwargs)
        except requests.RequestException as exc:
            raise RemoteError(explain(exc, self.url, self.timeout)) from None
        if response.status_code in (401, 403):
            raise RemoteError(f"{method} {path}: HTTP {response.status_code} (check --user and"
                              " --password)")
        return response

    def modalities(self) -> dict[str, dict[str, Any]]:
        response = self._call("GET", "/modalities?expand")
        if response.status_code != 200:
            raise RemoteError(f"GET /modalities: HTTP {response.status_code}")
        data = response.json()
        if not isinstance(data, dict):
            raise RemoteError("GET /modalities?expand did not answer an object (Orthanc < 1.7?)")
        return data

    def put_modality(self, name: str, body: dict[str, Any]) -> None:
        response = self._call("PUT", f"/modalities/{name}", json=body)
        if response.status_code != 200:
            raise RemoteError(f"PUT /modalities/{name}: HTTP {response.status_code}")

    def delete_modality(self, name: str) -> None:
        response = self._call("DELETE", f"/modalities/{name}")
        if response.status_code != 200:
            raise RemoteError(f"DELETE /modalities/{name}: HTTP {response.status_code}")

    def echo(self, name: str, timeout: int = 5) -> str:
        """C-ECHO from the server to one of its modalities."""
        response = self._call("POST", f"/modalities/{name}/echo", json={"Timeout": timeout})
        if response.status_code == 200:
            return "reachable"
        if response.status_code == 404:
            return "not configured"
        return "unreachable"


def diff_modalities(current: dict[str, dict[str, Any]],
                    desired: dict[str, dict[str, Any]]) -> ModalityDiff:
    added = {n: b for n, b in desired.items() if n not in current}
    changed = {}
    for name in desired.keys() & current.keys():
        old = {k: current[name].get(k) for k in COMPARED_KEYS}
        if any(old[k] != desired[name][k] for k in COMPARED_KEYS):
            changed[name] = (old, desired[name])
    removed = tuple(sorted(current.keys() - desired.keys()))
    return ModalityDiff(added, changed, removed)


def apply_roster(client: OrthancClient, roster: Roster, dry_run: bool = False) -> ModalityDiff:
    """Add, change and remove the server's modalities so they equal the roster's."""
    diff = diff_modalities(client.modalities(), server_modalities(roster))
    if not dry_run:
        for name, body in sorted(diff.added.items()):
            client.put_modality(name, body)
        for name, (_, body) in sorted(diff.changed.items()):
            client.put_modality(name, body)
        for name in diff.removed:
            client.delete_modality(name)
    return diff


def verify_roster(client: OrthancClient, roster: Roster, timeout: int = 5,
                  parallel: int = 8) -> list[EchoResult]:
    """C-ECHO every participant from the server, in roster order.

    The echoes run ``parallel`` at a time: each costs the server an association (~40 ms), and
    a participant whose machine is off costs the whole timeout, which must not add up over a
    room of 20 (or a department of 1,000).
    """
    from concurrent.futures import ThreadPoolExecutor

    participants = list(roster.participants)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(participants) or 1))) as pool:
        statuses = list(pool.map(lambda p: client.echo(p.name, timeout), participants))
    return [EchoResult(p.name, p.aet, p.host, p.port, st)
            for p, st in zip(participants, statuses, strict=True)]


def format_table(results: list[EchoResult]) -> str:
    rows = [("NAME", "AET", "ADDRESS", "STATUS")]
    rows += [(r.name, r.aet, f"{r.host}:{r.port}", r.status) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
                     + "  " + row[3] for row in rows)
