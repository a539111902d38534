#!/usr/bin/env python3
"""Turn the Docker secrets into the Orthanc configuration fragment the image merges last.

The official ``orthancteam/orthanc`` image reads ``/etc/orthanc/*.json``, then the environment;
``ORTHANC_JSON`` is merged over the files key by key. The admin password and the PostgreSQL
password live in Docker secrets (files), which the image cannot map onto ``RegisteredUsers`` by
itself without changing the user name's case, so ``docker/entrypoint.sh`` runs this script and
exports its output as ``ORTHANC_JSON``; nothing secret is written to disk or to the compose file.
The pseudonym key is only checked here (the plugin reads ``TEACHFILE_KEY_FILE`` itself), so a
missing or malformed key stops the container with a clear message instead of a node that refuses
everything.

Standard library only: it runs in the image's Python before anything else is set up. Messages
name files and variables, never secret values.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_ADMIN_FILE = "/run/secrets/teachfile_admin_password"
DEFAULT_POSTGRES_FILE = "/run/secrets/postgres_password"
ADMIN_USER = "admin"


class SecretError(Exception):
    """A secret is missing or unusable; the message is safe to print."""


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretError(f"{what}: {path} does not exist (run docker/init-secrets.sh)") from None
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path} ({type(exc).__name__})") from None
    if not value:
        raise SecretError(f"{what}: {path} is empty")
    if "\n" in value:
        raise SecretError(f"{what}: {path} must hold one line")
    return value


def _check_key(path: Path) -> None:
    text = _read_secret(path, "pseudonym key")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SecretError(f"pseudonym key: {path} is not hexadecimal") from None
    if len(key) < 16:
        raise SecretError(f"pseudonym key: {path} is shorter than 128 bits")


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Nested merge, ``extra`` winning: the same rule the image applies to its sources."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k),
                                                                          Mapping) else v
    return out


def fragment(env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration fragment for ``ORTHANC_JSON``, merged over any ``ORTHANC_JSON`` given."""
    admin_file = Path(env.get("TEACHFILE_ADMIN_PASSWORD_FILE") or DEFAULT_ADMIN_FILE)
    out: dict[str, Any] = {"RegisteredUsers": {ADMIN_USER: _read_secret(admin_file,
                                                                         "admin password")}}
    pg_file = env.get("TEACHFILE_POSTGRES_PASSWORD_FILE")
    if pg_file:
        out["PostgreSQL"] = {"Password": _read_secret(Path(pg_file), "PostgreSQL password")}
    if env.get("TEACHFILE_KEY_FILE"):
        _check_key(Path(env["TEACHFILE_KEY_FILE"]))
    elif not env.get("TEACHFILE_KEY"):
        # A node alone may generate its key in its data directory; replicas must not.
        print("teachfile: no TEACHFILE_KEY_FILE: the node generates its own pseudonym key; "
              "replicas would not share it", file=sys.stderr)
    given = env.get("ORTHANC_JSON")
    if given:
        try:
            base = json.loads(given)
        except ValueError:
            raise SecretError("ORTHANC_JSON is not valid JSON") from None
        if not isinstance(base, dict):
            raise SecretError("ORTHANC_JSON must be a JSON object")
        out = merge(base, out)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        print(json.dumps(fragment(os.environ)))
    except SecretError as exc:
        print(f"teachfile: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
