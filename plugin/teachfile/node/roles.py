"""Who may do what over HTTP: roles enforced on every request, Orthanc's own endpoints included.

Orthanc authenticates (401 for a missing or wrong password) before the plugin's request filter
runs; the filter then decides by role. Three roles, smallest first:

- ``viewer``: read, query, download. GET and HEAD anywhere, plus the few POST endpoints that only
  read (find, lookup, archive and media downloads, queries to remote modalities).
- ``contributor``: a viewer who may also upload (``POST /instances``, STOW-RS), label cases and
  ask what reception would do with a file (``POST /teachfile/explain``).
- ``admin``: everything.

A user configured without a role is a viewer: an unlisted account gets the least power.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

ROLES = ("viewer", "contributor", "admin")

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: POST endpoints that read only: creating a download, searching, or querying a remote node.
_VIEWER_POSTS = tuple(re.compile(p) for p in (
    r"^/tools/find$",
    r"^/tools/lookup$",
    r"^/tools/create-archive$",
    r"^/tools/create-media(-extended)?$",
    r"^/(patients|studies|series)/[^/]+/(archive|media)$",
    r"^/modalities/[^/]+/(query|echo)$",
    r"^/queries/[^/]+/answers/[^/]+/(query-instances|query-series|query-studies)$",
    r"^/teachfile/audit$",
))

#: What a contributor may add on top of a viewer.
_CONTRIBUTOR_WRITES = tuple((m, re.compile(p)) for m, p in (
    ("POST", r"^/instances$"),
    ("POST", r"^/dicom-web/studies(/[^/]+)?$"),
    ("POST", r"^/teachfile/dicom-web/studies$"),
    ("PUT", r"^/teachfile/cases/[^/]+$"),
    ("POST", r"^/teachfile/cases/[^/]+/send$"),
    ("POST", r"^/teachfile/explain$"),
    # The portal: author a case, edit conference lists, retrieve a remote case.
    ("PUT", r"^/teachfile/portal/cases/[^/]+$"),
    ("PUT", r"^/teachfile/portal/conferences$"),
    ("POST", r"^/teachfile/portal/retrieve$"),
))


@dataclass(frozen=True)
class Roles:
    """User name -> role, from the ``Teachfile.Roles`` configuration."""

    by_user: Mapping[str, str]

    @classmethod
    def from_config(cls, section: Mapping[str, object] | None,
                    users: Mapping[str, object] | None = None) -> Roles:
        raw = {str(k): str(v) for k, v in (section or {}).items()}
        for user, role in raw.items():
            if role not in ROLES:
                raise ConfigError(f"Teachfile.Roles: user {user!r} has unknown role {role!r}; "
                                  f"choose one of {', '.join(ROLES)}")
        # The node's own administrator account is an admin unless configured otherwise.
        if users and "admin" in users and "admin" not in raw:
            raw["admin"] = "admin"
        return cls(raw)

    def role_of(self, user: str | None) -> str | None:
        if user is None:
            return None
        return self.by_user.get(user, "viewer")

    def allows(self, user: str | None, method: str, uri: str) -> bool:
        """Whether ``user`` may send ``method uri`` (``uri`` without the query string)."""
        role = self.role_of(user)
        if role is None:
            return False
        return allowed(role, method, uri)


def allowed(role: str, method: str, uri: str) -> bool:
    method = method.upper()
    path = uri.split("?", 1)[0].rstrip("/") or "/"
    if role == "admin":
        return True
    if method in _READ_METHODS:
        return True
    if method == "POST" and any(p.match(path) for p in _VIEWER_POSTS):
        return True
    if role == "contributor":
        return any(m == method and p.match(path) for m, p in _CONTRIBUTOR_WRITES)
    return False


def required_role(method: str, uri: str) -> str:
    """The smallest role that may send ``method uri`` (what a 403 tells the user)."""
    return next((r for r in ROLES if allowed(r, method, uri)), "admin")


def basic_user(headers: Mapping[str, str]) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (Orthanc checked the password)."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, _ = decoded.partition(":")
    return user if sep else None
