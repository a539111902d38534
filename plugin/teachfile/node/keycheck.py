"""Catching nodes that share an index and storage but not the pseudonym key.

Several Orthanc processes over one PostgreSQL index and one storage directory (scale-out) must
share the key: pseudonyms, shifted dates and UIDs are derived from it, so a node with another
key files the same patient's instances under other pseudonyms and splits every study it touches,
silently. Each node therefore compares its key's fingerprint with the one recorded for the shared
storage and refuses to receive when they differ.

Where the fingerprint is recorded: a small file at the root of the shared storage directory,
created with ``O_CREAT | O_EXCL`` so that exactly one node's fingerprint wins even when nodes start
at the same moment. Orthanc's global properties would be the natural place, but on Orthanc 1.10.1
with the PostgreSQL index plugin 4.0 a property set by a plugin is private to the server that set
it (measured: node B does not see node A's property, they are keyed by DatabaseServerIdentifier),
so they cannot compare nodes. The storage directory is shared by construction in every supported
topology (native and Docker); with a storage plugin (PostgreSQL, S3), point the check at any shared
directory instead.

Only the fingerprint (a keyed hash, see :func:`teachfile.reception.pseudonym.fingerprint`) is
written, never the key.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

#: The file, at the root of the shared storage directory, that records the cluster's key.
MARKER_NAME = "teachfile-key-fingerprint.json"
#: The alarm / refusal reason a mismatch is counted under.
REASON = "key-mismatch"

_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{8,64}$")

FIRST = "first"  # this node recorded its fingerprint: it defines the cluster's key
MATCH = "match"  # the recorded fingerprint is this node's
MISMATCH = "mismatch"  # another key was recorded first: this node must not receive
UNAVAILABLE = "unavailable"  # the record cannot be read or written: cannot tell


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of comparing this node's key with the cluster's."""

    state: str
    local: str
    recorded: str | None
    detail: str = ""

    @property
    def may_receive(self) -> bool:
        """Whether the node may store instances. ``unavailable`` is allowed on purpose: a node
        without a shared directory (a single node with a storage plugin) must still work; the
        status shows that nothing was checked."""
        return self.state != MISMATCH

    def as_json(self) -> dict[str, Any]:
        """For ``/teachfile/status`` (``key_check``): fingerprints are public, keys are not."""
        out: dict[str, Any] = {"state": self.state, "local_fingerprint": self.local,
                               "cluster_fingerprint": self.recorded,
                               "may_receive": self.may_receive}
        if self.detail:
            out["detail"] = self.detail
        return out


def decide(recorded: str | None, local: str, *, created: bool = False) -> KeyCheck:
    """Compare the recorded fingerprint (``None``: nothing recorded) with this node's.

    ``created`` says that ``recorded`` was written by this node just now.
    """
    if not _FINGERPRINT_RE.match(local):
        raise ValueError("the local key fingerprint is malformed")
    if recorded is None:
        return KeyCheck(UNAVAILABLE, local, None, "no fingerprint is recorded")
    if not _FINGERPRINT_RE.match(recorded):
        return KeyCheck(UNAVAILABLE, local, None, "the recorded fingerprint is malformed")
    if recorded != local:
        return KeyCheck(MISMATCH, local, recorded,
                        "another pseudonym key is recorded for this storage: nodes with "
                        "different keys split studies; give every node the same key")
    return KeyCheck(FIRST if created else MATCH, local, recorded)


def _read(path: Path) -> str | None:
    data = json.loads(path.read_text(encoding="utf-8"))
    value = data.get("key_fingerprint") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def check_directory(directory: Path, local: str) -> KeyCheck:
    """Record ``local`` in ``directory`` unless a fingerprint is recorded there; compare.

    Safe to call from several processes at once and repeatedly (at start-up, then from time to
    time): the first writer wins, everyone else compares. The record
    is written to a private temporary file and hard-linked into place, so it appears complete or
    not at all. Never raises for I/O problems: they give ``unavailable`` with a PHI-free detail.
    """
    directory = Path(directory)
    path = directory / MARKER_NAME
    created = False
    try:
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".{MARKER_NAME}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"key_fingerprint": local}, f)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                    created = True
                except FileExistsError:
                    pass  # another node won the race: compare with its record
            finally:
                tmp.unlink(missing_ok=True)
        recorded = _read(path)
    except (OSError, ValueError) as exc:
        return replace(decide(None, local), detail=f"cannot use {MARKER_NAME}: "
                       f"{type(exc).__name__}")
    return decide(recorded, local, created=created)
