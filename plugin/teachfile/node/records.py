"""The teaching-case record: its data model and the durable store every replica shares.

A case is a study plus a record (title, keywords, diagnosis, notes). The record must outlive
Orthanc's study resource: Orthanc deletes a study, with its metadata, when the last instance of
a 1-instance study is replaced by a re-send, and a re-send or an admin's ``/modify`` rewrites
Study Description with whatever the sender had. So the record is not Orthanc metadata: it is
kept here, keyed by the pseudonymous Study Instance UID (stable across re-sends because
pseudonyms are keyed), and reception writes the case title into Study Description of every
instance of a case it stores (see :meth:`teachfile.reception.deid.Deidentifier.deidentify`).

Where: one small JSON file per case in a directory shared by every replica, by default
``<StorageDirectory>/teachfile-cases`` (``Teachfile.CaseDirectory`` overrides it). Orthanc's
global properties would be the index's own place, but a property set by a plugin is private to
the server that set it (Orthanc 1.10 to 1.13 store plugin properties "not shared", keyed by
``DatabaseServerIdentifier``; see :mod:`teachfile.node.keycheck`, measured with the PostgreSQL
index 4.0), so replicas would not see each other's cases. The storage directory is shared by
construction in every supported topology (native scale-out and the Docker ``scale`` profile),
files are written atomically (temporary file, fsync, rename) and read-modify-write is serialised
across processes with ``flock``. A file name is the pseudonymous UID (digits and dots): no PHI.

Reception reads the store once per received instance (one ``open``; a study that is not a case
costs one failed lookup), without a cache, so a case labelled on one replica is honoured by the
next instance any replica receives.

This module is the one place the record's shape is defined; the REST handlers
(:mod:`teachfile.api.cases`) and any later consumer (a portal, a DICOM export of the record)
build on :class:`CaseRecord` and :class:`CaseStore`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import Refusal

TITLE_MAX = 64  # Study Description is an LO
KEYWORD_MAX = 64
KEYWORDS_MAX = 32
DIAGNOSIS_MAX = 1024
NOTES_MAX = 10000
#: The fields a client may set (PUT /teachfile/cases/{study}).
FIELDS = ("title", "keywords", "diagnosis", "notes")

#: Directory name of the store under Orthanc's storage directory.
DIRECTORY_NAME = "teachfile-cases"
FORMAT = "teachfile-case"
FORMAT_VERSION = 1
#: The refusal reason when the store cannot be read while an instance is received.
STORE_ERROR = "case-store-error"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_FORBIDDEN_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class CaseError(ValueError):
    """A request the client must fix (HTTP 400); the message names fields, never values."""


def is_uid(text: str) -> bool:
    return len(text) <= 64 and bool(_UID.match(text))


# -- the record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRecord:
    """What a teacher wrote about a case. ``title`` is the Study Description the node stores
    (after the profile cleaned it); ``updated`` is an ISO 8601 UTC time."""

    title: str = ""
    keywords: tuple[str, ...] = ()
    diagnosis: str = ""
    notes: str = ""
    updated: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "keywords": list(self.keywords),
                "diagnosis": self.diagnosis, "notes": self.notes, "updated": self.updated}

    @classmethod
    def from_json(cls, data: Any) -> CaseRecord:
        """A stored record; tolerant, since a node may hold records of an older version."""
        if isinstance(data, bytes | str):
            data = json.loads(data)
        if not isinstance(data, Mapping):
            return cls()
        return cls(str(data.get("title", "")),
                   tuple(str(k) for k in data.get("keywords", []) or []),
                   str(data.get("diagnosis", "")), str(data.get("notes", "")),
                   str(data.get("updated", "")))

    def texts(self) -> tuple[str, ...]:
        """Everything a search looks in."""
        return (self.title, self.diagnosis, self.notes, *self.keywords)


@dataclass(frozen=True)
class StoredCase:
    """A record with the study it belongs to, as the store holds it."""

    study_instance_uid: str
    record: CaseRecord
    #: The Orthanc study id last seen for it (deterministic from the pseudonymous Patient ID
    #: and Study Instance UID, so it stays the same across re-sends and restores).
    study: str = ""
    created: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION,
                "study_instance_uid": self.study_instance_uid, "study": self.study,
                "created": self.created, "record": self.record.as_json()}

    @classmethod
    def from_json(cls, data: Any) -> StoredCase:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError("not a teachfile case record")
        uid = str(data.get("study_instance_uid", ""))
        if not is_uid(uid):
            raise ValueError("a case record without a valid Study Instance UID")
        return cls(uid, CaseRecord.from_json(data.get("record")), str(data.get("study", "")),
                   str(data.get("created", "")))


def text_field(body: Mapping[str, Any], name: str, limit: int, *, oneline: bool,
               error: type[ValueError] = CaseError) -> str | None:
    """A text field of a request body, stripped; None when absent. The one check of every
    field an author types (case records here, the portal's template fields): the message
    names the field, never its value."""
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if not isinstance(value, str):
        raise error(f"{name} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise error(f"{name} is longer than {limit} characters")
    if (_FORBIDDEN if oneline else _FORBIDDEN_MULTILINE).search(value):
        raise error(f"{name} contains control characters" + (" or a backslash" if oneline else ""))
    return value


def _keywords(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    raw = body.get("keywords")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise CaseError("keywords must be a list of strings (or one comma-separated string)")
    out: list[str] = []
    seen: set[str] = set()
    for k in raw:
        k = " ".join(k.split())
        if not k or k.casefold() in seen:
            continue
        if len(k) > KEYWORD_MAX or _FORBIDDEN.search(k):
            raise CaseError(f"a keyword is longer than {KEYWORD_MAX} characters or has "
                            "control characters")
        seen.add(k.casefold())
        out.append(k)
    if len(out) > KEYWORDS_MAX:
        raise CaseError(f"at most {KEYWORDS_MAX} keywords")
    return tuple(out)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def update_record(current: CaseRecord, body: Any, now: str | None = None) -> CaseRecord:
    """The record after a PUT: fields present in ``body`` replace, absent ones stay."""
    if not isinstance(body, Mapping):
        raise CaseError("the body must be a JSON object")
    unknown = set(body) - set(FIELDS)
    if unknown:
        raise CaseError("unknown fields: " + ", ".join(sorted(unknown)))
    title = text_field(body, "title", TITLE_MAX, oneline=True)
    if title == "":
        raise CaseError("title must not be empty")
    keywords = _keywords(body)
    diagnosis = text_field(body, "diagnosis", DIAGNOSIS_MAX, oneline=False)
    notes = text_field(body, "notes", NOTES_MAX, oneline=False)
    return CaseRecord(
        title=current.title if title is None else title,
        keywords=current.keywords if keywords is None else keywords,
        diagnosis=current.diagnosis if diagnosis is None else diagnosis,
        notes=current.notes if notes is None else notes,
        updated=now or now_iso(),
    )


# -- the store ---------------------------------------------------------------------------------


@dataclass
class CaseStore:
    """One JSON file per case in a shared directory (see the module docstring)."""

    directory: Path
    _made: bool = field(default=False, repr=False)

    def _path(self, uid: str) -> Path:
        if not is_uid(uid):
            raise ValueError("not a Study Instance UID")
        return self.directory / f"{uid}.json"

    def _ensure(self) -> None:
        if not self._made:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made = True

    def get(self, uid: str) -> StoredCase | None:
        """The case of ``uid``, or None; raises OSError/ValueError when the file is unusable."""
        try:
            text = self._path(uid).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        stored = StoredCase.from_json(json.loads(text))
        if stored.study_instance_uid != uid:
            raise ValueError("a case record filed under another UID")
        return stored

    def title_for(self, uid: str) -> str | None:
        """The hot path of reception: the case title of a study, or None if it is no case.

        A store that cannot be read refuses the instance (:data:`STORE_ERROR`): storing it
        would silently put the sender's description back over the case title."""
        if not is_uid(uid):
            return None
        try:
            stored = self.get(uid)
        except (OSError, ValueError) as exc:
            raise Refusal(STORE_ERROR, type(exc).__name__) from None
        if stored is None or not stored.record.title:
            return None
        return stored.record.title

    def put(self, stored: StoredCase) -> None:
        """Write one case atomically: a reader sees the old file or the new one, never half."""
        self._ensure()
        path = self._path(stored.study_instance_uid)
        tmp = self.directory / f".{stored.study_instance_uid}.{secrets.token_hex(4)}.tmp"
        data = (json.dumps(stored.as_json(), indent=1, ensure_ascii=False) + "\n").encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):  # make the rename durable too
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def delete(self, uid: str) -> bool:
        try:
            self._path(uid).unlink()
        except FileNotFoundError:
            return False
        return True

    def all(self) -> Iterator[StoredCase]:
        """Every readable case; unreadable files are skipped (``get`` reports them)."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                stored = self.get(name[:-5])
            except (OSError, ValueError):
                continue
            if stored is not None:
                yield stored

    def by_study_id(self, study: str) -> StoredCase | None:
        """The case last seen under an Orthanc study id (a scan: teaching files hold
        hundreds or thousands of cases, not millions)."""
        return next((s for s in self.all() if s.study == study), None)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write of records across threads and replicas."""
        self._ensure()
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def count(self) -> int:
        try:
            return sum(1 for n in os.listdir(self.directory)
                       if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return 0


#: The node's store, for code that holds no Service (one Service per Orthanc process).
_NODE_STORE: CaseStore | None = None


def use_store(store: CaseStore) -> None:
    """Make ``store`` the node's case store (the Service does, when it starts)."""
    global _NODE_STORE
    _NODE_STORE = store


def node_store() -> CaseStore | None:
    return _NODE_STORE
