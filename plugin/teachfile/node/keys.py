"""The node's secrets: the pseudonym key and the admin password.

Every pseudonym, shifted date and seal is derived from the key, so nodes that must agree
(scale-out, a department's several servers) share it by file or environment; a node alone
generates one at first start. The key's value is never logged: only :func:`fingerprint`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from ..reception.pseudonym import fingerprint

__all__ = ["fingerprint", "load_or_create_key", "load_or_create_password"]

KEY_ENV = "TEACHFILE_KEY"
KEY_FILE_ENV = "TEACHFILE_KEY_FILE"
KEY_BYTES = 32


def _write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start, so the secret is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"the pseudonym key in {where} is not hexadecimal") from None
    if len(key) < 16:
        raise ConfigError(f"the pseudonym key in {where} is shorter than 128 bits")
    return key


def load_or_create_key(default_path: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonym key, from ``TEACHFILE_KEY``, ``TEACHFILE_KEY_FILE``, or ``default_path``.

    When none exists, a new 256-bit key is written to ``default_path`` with mode 0600.
    """
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV):
        return _parse_key(env[KEY_ENV], f"${KEY_ENV}")
    path = Path(env[KEY_FILE_ENV]) if env.get(KEY_FILE_ENV) else default_path
    if path.exists():
        return _parse_key(path.read_text(), str(path))
    if env.get(KEY_FILE_ENV):
        raise ConfigError(f"${KEY_FILE_ENV} names {path}, which does not exist")
    key = secrets.token_bytes(KEY_BYTES)
    _write_secret(path, key.hex())
    return key


def load_or_create_password(path: Path,
                            environ: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The admin password and whether it was generated just now (so it is shown once)."""
    env = os.environ if environ is None else environ
    if env.get("TEACHFILE_ADMIN_PASSWORD"):
        return env["TEACHFILE_ADMIN_PASSWORD"], False
    if path.exists():
        return path.read_text().strip(), False
    password = secrets.token_urlsafe(15)
    _write_secret(path, password)
    return password, True
