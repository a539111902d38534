"""The pure half of the teaching-file portal: the case template, the library index and its
search, identifier warnings, and the conference lists' file store.

Nothing here calls Orthanc, so the rules that decide what a page may show (unknown mode hides
the answer fields from the results *and* from the search itself) are tested without a node.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..node.records import text_field

#: Template fields beyond what :class:`teachfile.api.cases.CaseRecord` holds (title, keywords,
#: diagnosis, notes), with their length limits.
EXTRA_FIELDS: dict[str, int] = {
    "history": 10000,
    "findings": 10000,
    "differential": 4000,
    "discussion": 20000,
    "references": 4000,
    "author": 128,
}
#: The fields a teacher hides in unknown mode: what the learner has to find.
HIDDEN_FIELDS = ("diagnosis", "differential", "discussion")
#: The fields full-text search reads.
SEARCH_FIELDS = ("title", "keywords", "history", "findings", "diagnosis", "differential",
                 "discussion")
KEY_IMAGES_MAX = 200
PAGE_DEFAULT = 24
PAGE_MAX = 200
SORTS = ("title", "-title", "date", "-date", "updated", "-updated", "images", "-images")

_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class PortalError(ValueError):
    """A request the client must fix (HTTP 400); the message names fields, never values."""


def is_orthanc_id(value: str) -> bool:
    return bool(_ORTHANC_ID.match(value))


# -- the template ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extras:
    """The template fields this portal adds, stored beside the case record."""

    history: str = ""
    findings: str = ""
    differential: str = ""
    discussion: str = ""
    references: str = ""
    author: str = ""
    key_images: tuple[str, ...] = ()
    created: str = ""
    updated: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"history": self.history, "findings": self.findings,
                "differential": self.differential, "discussion": self.discussion,
                "references": self.references, "author": self.author,
                "key_images": list(self.key_images), "created": self.created,
                "updated": self.updated}

    @classmethod
    def from_json(cls, data: Any) -> Extras:
        """Tolerant: a stored entry of another version must not break the library."""
        if isinstance(data, bytes | str):
            try:
                data = json.loads(data)
            except ValueError:
                return cls()
        if not isinstance(data, Mapping):
            return cls()
        texts = {f: str(data.get(f, "") or "") for f in EXTRA_FIELDS}
        return cls(**texts,
                   key_images=tuple(str(k) for k in data.get("key_images", []) or []
                                    if isinstance(k, str) and is_orthanc_id(k)),
                   created=str(data.get("created", "") or ""),
                   updated=str(data.get("updated", "") or ""))


def update_extras(current: Extras, body: Mapping[str, Any], now: str) -> Extras:
    """The extras after a save: fields present replace, absent ones stay."""
    values: dict[str, Any] = {}
    for name, limit in EXTRA_FIELDS.items():
        value = text_field(body, name, limit, oneline=False, error=PortalError)
        values[name] = getattr(current, name) if value is None else value
    keys = body.get("key_images")
    if keys is None:
        key_images = current.key_images
    else:
        if not isinstance(keys, list) or not all(isinstance(k, str) and is_orthanc_id(k)
                                                 for k in keys):
            raise PortalError("key_images must be a list of Orthanc instance ids")
        if len(keys) > KEY_IMAGES_MAX:
            raise PortalError(f"at most {KEY_IMAGES_MAX} key images")
        key_images = tuple(dict.fromkeys(keys))
    return Extras(**values, key_images=key_images, created=current.created or now, updated=now)


# -- identifier warnings -----------------------------------------------------------------------

_WARNINGS = (
    ("date", re.compile(
        r"\b(\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2}|(19|20)\d{6})\b")),
    ("date", re.compile(
        r"\b\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{2,4}\b",
        re.I)),
    ("long-number", re.compile(r"\b\d{6,}\b")),
    # The honorific in either case, the name capitalised: "Dr Smith", not "dr sign absent".
    ("honorific", re.compile(r"\b(?:[Mm]rs?|[Mm]s|[Mm]iss|[Dd]r|[Pp]rof|[Hh]err|[Ff]rau|"
                             r"[Mm]me|[Mm]lle|[Ss]ra?)\.?\s+[A-Z][a-z]+")),
)


def identifier_warnings(fields: Mapping[str, Any]) -> list[dict[str, str]]:
    """Which fields hold text that looks like an identifier (a date, a long number, a name after
    an honorific). A warning, not a refusal: "follow-up at 6 months" is fine, "seen 12/03/2021"
    is not, and only the author can tell "Dr Smith's sign" from a referring physician. The
    answer names the field and the kind, never the text."""
    out: list[dict[str, str]] = []
    for name, value in fields.items():
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if not isinstance(text, str):
                continue
            for kind, pattern in _WARNINGS:
                if pattern.search(text) and {"field": name, "kind": kind} not in out:
                    out.append({"field": name, "kind": kind})
    return out


# -- the library -------------------------------------------------------------------------------


@dataclass
class CaseSummary:
    """One case as the library lists it; ``record`` holds every template field."""

    study: str
    study_instance_uid: str
    title: str
    date: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    series: int
    instances: int
    thumbnail: str | None
    record: dict[str, Any] = field(default_factory=dict)

    def text(self, unknown: bool) -> str:
        parts: list[str] = []
        for name in SEARCH_FIELDS:
            if unknown and name in HIDDEN_FIELDS:
                continue
            value = self.title if name == "title" else self.record.get(name, "")
            parts.extend(value if isinstance(value, list) else [str(value or "")])
        return "\n".join(parts).casefold()

    def as_json(self, unknown: bool) -> dict[str, Any]:
        record = {k: v for k, v in self.record.items()
                  if not (unknown and k in HIDDEN_FIELDS)}
        return {"study": self.study, "study_instance_uid": self.study_instance_uid,
                "title": self.title, "date": self.date, "modalities": list(self.modalities),
                "body_parts": list(self.body_parts), "series": self.series,
                "instances": self.instances, "thumbnail": self.thumbnail,
                "keywords": list(record.get("keywords", [])),
                "updated": record.get("updated") or None,
                "record": record, "unknown": unknown}


@dataclass(frozen=True)
class LibraryQuery:
    q: str = ""
    modality: str = ""
    keyword: str = ""
    sort: str = "title"
    offset: int = 0
    limit: int = PAGE_DEFAULT
    unknown: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LibraryQuery:
        def num(name: str, default: int, hi: int) -> int:
            raw = query.get(name)
            if raw in (None, ""):
                return default
            try:
                value = int(str(raw))
            except ValueError:
                raise PortalError(f"{name} must be an integer") from None
            if not 0 <= value <= hi:
                raise PortalError(f"{name} must be between 0 and {hi}")
            return value

        sort = query.get("sort") or "title"
        if sort not in SORTS:
            raise PortalError("sort must be one of " + ", ".join(SORTS))
        q = " ".join((query.get("q") or "").replace("+", " ").split())
        if len(q) > 200 or _CONTROL.search(q):
            raise PortalError("q must be at most 200 characters without control characters")
        limit = num("limit", PAGE_DEFAULT, PAGE_MAX) or PAGE_DEFAULT
        return cls(q, (query.get("modality") or "").strip(), (query.get("keyword") or "").strip(),
                   sort, num("offset", 0, 10**7), limit, is_true(query.get("unknown")))


def is_true(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _sort_key(sort: str) -> Any:
    name = sort.lstrip("-")
    if name == "title":
        return lambda c: (c.title.casefold(), c.study)
    if name == "date":
        return lambda c: (c.date, c.study)
    if name == "updated":
        return lambda c: (str(c.record.get("updated") or ""), c.study)
    return lambda c: (c.instances, c.study)


def search_library(cases: Iterable[CaseSummary], query: LibraryQuery) -> dict[str, Any]:
    """Filter, sort and page the library. Every word of ``q`` must occur somewhere in the
    searchable fields (in unknown mode, not in the hidden ones: a search for the diagnosis must
    not give the unknown away)."""
    words = [w.casefold() for w in query.q.split()]
    all_cases = list(cases)
    modalities: dict[str, int] = {}
    keywords: dict[str, int] = {}
    for c in all_cases:
        for m in c.modalities:
            modalities[m] = modalities.get(m, 0) + 1
        for k in c.record.get("keywords", []):
            keywords[k] = keywords.get(k, 0) + 1
    selected = []
    for c in all_cases:
        if query.modality and query.modality not in c.modalities:
            continue
        if query.keyword and query.keyword.casefold() not in {
                k.casefold() for k in c.record.get("keywords", [])}:
            continue
        if words:
            text = c.text(query.unknown)
            if not all(w in text for w in words):
                continue
        selected.append(c)
    selected.sort(key=_sort_key(query.sort), reverse=query.sort.startswith("-"))
    page = selected[query.offset:query.offset + query.limit]
    return {
        "total": len(selected), "offset": query.offset, "limit": query.limit,
        "query": {"q": query.q, "modality": query.modality, "keyword": query.keyword,
                  "sort": query.sort, "unknown": query.unknown},
        "cases": [c.as_json(query.unknown) for c in page],
        "facets": {"modalities": dict(sorted(modalities.items())),
                   "keywords": dict(sorted(keywords.items(), key=lambda kv: (-kv[1], kv[0]))[:50])},
    }


# -- conference lists --------------------------------------------------------------------------

CONFERENCE_FILE = "teachfile-conferences.json"
LISTS_MAX = 200
LIST_CASES_MAX = 500
NAME_MAX = 80


class Conflict(Exception):
    """The lists changed since the client read them (HTTP 409): reload and apply again."""


def validate_lists(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > LISTS_MAX:
        raise PortalError(f"lists must be a list of at most {LISTS_MAX} conference lists")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for item in raw:
        if not isinstance(item, Mapping):
            raise PortalError("each list must be an object with name and cases")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX \
                or _CONTROL.search(name) or "\n" in name:
            raise PortalError(f"a list name must be 1 to {NAME_MAX} characters on one line")
        name = " ".join(name.split())
        if name.casefold() in names:
            raise PortalError("list names must be unique")
        names.add(name.casefold())
        studies = item.get("cases", [])
        if not isinstance(studies, list) or len(studies) > LIST_CASES_MAX or not all(
                isinstance(s, str) and is_orthanc_id(s) for s in studies):
            raise PortalError(f"cases must be a list of at most {LIST_CASES_MAX} Orthanc "
                              "study ids")
        out.append({"name": name, "cases": list(dict.fromkeys(studies))})
    return out


class ConferenceStore:
    """Conference lists in one JSON file at the root of Orthanc's storage directory.

    Why a file: the lists must survive restarts and be the same on every replica of one
    PostgreSQL index, and on Orthanc 1.10.1 with PostgreSQL a plugin's global property is private
    to the server that set it (see :mod:`teachfile.node.keycheck`); the storage directory is
    shared in every supported topology. Writes take an exclusive ``flock`` on a lock file and
    replace the file atomically; a version number makes concurrent edits from two browsers
    (or two replicas) a conflict instead of a lost update.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / CONFERENCE_FILE
        self.lock_path = directory / (CONFERENCE_FILE + ".lock")

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": "0", "lists": []}
        except ValueError:
            raise RuntimeError("the conference list file is not JSON") from None
        return {"version": str(data.get("version", "0")), "lists": data.get("lists", [])}

    def write(self, lists: Sequence[Mapping[str, Any]], expected_version: str | None,
              user: str | None) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.read()
                if expected_version is not None and expected_version != current["version"]:
                    raise Conflict()
                data = {"version": secrets.token_hex(8), "lists": list(lists),
                        "updated_by": user or ""}
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".conferences-")
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump(data, f)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return {"version": data["version"], "lists": data["lists"]}
