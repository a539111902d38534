"""Teaching cases across the network: label a study, find it on any node, send it.

A case is a stored study plus a record (title, keywords, diagnosis, notes). The title is written
into Study Description, because that is the one place every DICOM node can search: a C-FIND on
``*aortic*`` finds the case from anywhere. The rest of the record is node-local Orthanc metadata
(one JSON entry, index :data:`CASE_METADATA`), which needs no configuration; declaring
``"UserMetadata": {"teachfile-case": 4601}`` only gives it a readable name.

Handlers are plain functions over the internal REST API (``req.orthanc``); the pure parts
(records here; patterns, merging and the bounded fan-out in :mod:`teachfile.api.casesearch`)
are plain functions for unit tests.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..node.service import Service
from .casesearch import (
    MAX_RESULTS,
    Hit,
    NodeOutcome,
    cfind_patterns,
    cfind_study_descriptions,
    classify_failure,
    fan_out,
    merge_hits,
    parse_query,
    peers_from_modalities,
    text_matches,
)
from .types import OrthancApi, Request, Response, error

#: The Orthanc metadata index holding a case record (user range 1024-65535).
CASE_METADATA = "4601"
#: Its name when the configuration declares it in ``UserMetadata``.
CASE_METADATA_NAME = "teachfile-case"

TITLE_MAX = 64  # Study Description is an LO
KEYWORD_MAX = 64
KEYWORDS_MAX = 32
DIAGNOSIS_MAX = 1024
NOTES_MAX = 10000
DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 30  # a viewer may search; one search must not hold the node for minutes

_STUDY_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_KEEP_UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


class CaseError(ValueError):
    """A request the client must fix (HTTP 400); the message names fields, never values."""


# -- the case record ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRecord:
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

    def matches(self, query: str) -> bool:
        """Whether ``query`` (DICOM wildcards allowed) occurs in the title, a keyword or the
        diagnosis, ignoring case: what the node itself can search beyond Study Description."""
        return any(text_matches(query, t) for t in (self.title, self.diagnosis, *self.keywords))


def _text(body: Mapping[str, Any], name: str, limit: int, *, oneline: bool) -> str | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if not isinstance(value, str):
        raise CaseError(f"{name} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise CaseError(f"{name} is longer than {limit} characters")
    bad = _FORBIDDEN if oneline else re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    if bad.search(value):
        raise CaseError(f"{name} contains control characters"
                        + (" or a backslash" if oneline else ""))
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


def update_record(current: CaseRecord, body: Any, now: str | None = None) -> CaseRecord:
    """The record after a PUT: fields present in ``body`` replace, absent ones stay."""
    if not isinstance(body, Mapping):
        raise CaseError("the body must be a JSON object")
    unknown = set(body) - {"title", "keywords", "diagnosis", "notes"}
    if unknown:
        raise CaseError("unknown fields: " + ", ".join(sorted(unknown)))
    title = _text(body, "title", TITLE_MAX, oneline=True)
    if title == "":
        raise CaseError("title must not be empty")
    keywords = _keywords(body)
    diagnosis = _text(body, "diagnosis", DIAGNOSIS_MAX, oneline=False)
    notes = _text(body, "notes", NOTES_MAX, oneline=False)
    return CaseRecord(
        title=current.title if title is None else title,
        keywords=current.keywords if keywords is None else keywords,
        diagnosis=current.diagnosis if diagnosis is None else diagnosis,
        notes=current.notes if notes is None else notes,
        updated=now or datetime.now(UTC).isoformat(timespec="seconds"),
    )

# -- Orthanc calls -------------------------------------------------------------------------------


def _json(data: bytes) -> Any:
    return json.loads(data) if data else None


def _study(api: OrthancApi, study: str) -> dict[str, Any] | None:
    try:
        return _json(api.get(f"/studies/{study}"))
    except Exception:  # noqa: BLE001 - Orthanc answers 404 by raising
        return None


def read_record(api: OrthancApi, study: str) -> CaseRecord | None:
    try:
        raw = api.get(f"/studies/{study}/metadata/{CASE_METADATA}")
    except Exception:  # noqa: BLE001 - no record yet
        return None
    try:
        return CaseRecord.from_json(raw)
    except ValueError:
        return None


def _instance_count(api: OrthancApi, study: str) -> int:
    return len(_json(api.get(f"/studies/{study}/instances")) or [])


def _case_json(api: OrthancApi, study: str, info: Mapping[str, Any],
               record: CaseRecord | None) -> dict[str, Any]:
    tags = info.get("MainDicomTags", {})
    rec = record or CaseRecord()
    return {
        "study": study,
        "study_instance_uid": tags.get("StudyInstanceUID", ""),
        "title": tags.get("StudyDescription", ""),
        "keywords": list(rec.keywords),
        "diagnosis": rec.diagnosis,
        "notes": rec.notes,
        "labelled": record is not None,
        "updated": rec.updated or None,
        "instances": _instance_count(api, study),
    }


def _check_study(req: Request, study: str) -> Response | None:
    if req.orthanc is None:
        return error(503, "cases need the Orthanc API")
    if not _STUDY_ID.match(study):
        return error(400, "the study must be an Orthanc study id")
    return None


def _study_request(req: Request, study: str) -> tuple[OrthancApi, Any] | Response:
    """The API and the JSON body of a request about one study, or the error to answer."""
    bad = _check_study(req, study)
    if bad:
        return bad
    assert req.orthanc is not None
    try:
        return req.orthanc, json.loads(req.body or b"{}")
    except ValueError:
        return error(400, "the body must be JSON")


JOB_POLL = 0.05
JOB_WAIT = 600.0


def wait_for_job(api: OrthancApi, job_id: str, limit: float = JOB_WAIT) -> dict[str, Any]:
    """Wait for an Orthanc job and return its content.

    A synchronous /modify from a REST handler deadlocks: the plugin holds the interpreter lock
    during the call while the job's new instances wait for it in the reception callback. So the
    job runs asynchronously and this loop sleeps (which releases the lock) between polls.
    """
    end = time.monotonic() + limit
    while True:
        job = _json(api.get(f"/jobs/{job_id}")) or {}
        state = job.get("State")
        if state == "Success":
            return dict(job.get("Content") or {})
        if state in ("Failure", "Paused") or time.monotonic() > end:
            raise RuntimeError(f"job {job_id} ended as {state}")
        time.sleep(JOB_POLL)


# -- handlers ------------------------------------------------------------------------------------


def get_case(service: Service, req: Request, study: str) -> Response:
    bad = _check_study(req, study)
    if bad:
        return bad
    assert req.orthanc is not None
    info = _study(req.orthanc, study)
    if info is None:
        return error(404, f"no such study: {study}")
    return Response(200, _case_json(req.orthanc, study, info, read_record(req.orthanc, study)))


def put_case(service: Service, req: Request, study: str) -> Response:
    """Label a case. A changed title rewrites the study with Orthanc's /modify, keeping every
    UID; the node recognises its own sealed output, so pseudonyms stay and the new instances
    replace the old ones (``OverwriteInstances``)."""
    parsed = _study_request(req, study)
    if isinstance(parsed, Response):
        return parsed
    api, body = parsed
    info = _study(api, study)
    if info is None:
        return error(404, f"no such study: {study}")
    current_title = info.get("MainDicomTags", {}).get("StudyDescription", "")
    current = read_record(api, study) or CaseRecord(title=current_title)
    try:
        record = update_record(current, body)
    except CaseError as exc:
        return error(400, str(exc))
    if record.title and record.title != current_title:
        before = _instance_count(api, study)
        try:
            job = _json(api.post(f"/studies/{study}/modify", json.dumps({
                "Replace": {"StudyDescription": record.title},
                "Keep": _KEEP_UIDS,
                "Force": True,
                "Asynchronous": True,
            }).encode()))
            result = wait_for_job(api, str(job["ID"]))
        except Exception:  # noqa: BLE001 - Orthanc raised or the job failed
            return error(500, "the node could not rewrite the study; nothing was changed")
        if result.get("ID") != study:
            return error(500, "the rewrite did not keep the study's identity")
        if _instance_count(api, study) != before:
            return error(500, "the rewrite did not replace every instance")
        # Overwritten instances do not refresh the study's tags in Orthanc's index (only a
        # study created anew gets them): without this, C-FIND would still answer the old title.
        api.post(f"/studies/{study}/reconstruct", b"")
        info = _study(api, study) or info
    stored_title = info.get("MainDicomTags", {}).get("StudyDescription", "")
    # The profile cleans descriptions on reception: the record keeps what was stored.
    record = CaseRecord(stored_title, record.keywords, record.diagnosis, record.notes,
                        record.updated)
    api.put(f"/studies/{study}/metadata/{CASE_METADATA}", json.dumps(record.as_json()).encode())
    return Response(200, _case_json(api, study, info, record))


def send_case(service: Service, req: Request, study: str) -> Response:
    """C-STORE a case to a configured node as an Orthanc job, in its stored syntax."""
    parsed = _study_request(req, study)
    if isinstance(parsed, Response):
        return parsed
    api, body = parsed
    target = body.get("target") if isinstance(body, Mapping) else None
    if not isinstance(target, str) or not target:
        return error(400, "target must name a configured DICOM node (GET /modalities)")
    if target not in (_json(api.get("/modalities")) or []):
        return error(400, "target is not a configured DICOM node (GET /modalities)")
    if _study(api, study) is None:
        return error(404, f"no such study: {study}")
    job = _json(api.post(f"/modalities/{target}/store", json.dumps({
        "Resources": [study], "Asynchronous": True}).encode()))
    job_id = str((job or {}).get("ID", ""))
    return Response(200, {"study": study, "target": target, "job": job_id,
                          "job_path": f"/jobs/{job_id}"})

def _local_hits(api: OrthancApi, aet: str, q: str) -> list[Hit]:
    """The node's own index: Study Description without regard to case, plus the case records
    (keywords, diagnosis), which only this node holds."""
    found = _json(api.post("/tools/find", json.dumps({
        "Level": "Study", "Query": {"StudyDescription": f"*{q}*"}, "CaseSensitive": False,
        "Limit": MAX_RESULTS}).encode())) or []
    ids = list(dict.fromkeys(found))
    records: dict[str, CaseRecord] = {}
    for study in _json(api.get("/studies")) or []:
        meta = _json(api.get(f"/studies/{study}/metadata?expand")) or {}
        raw = meta.get(CASE_METADATA) or meta.get(CASE_METADATA_NAME)
        if raw is None:
            continue
        try:
            records[study] = CaseRecord.from_json(raw)
        except ValueError:
            continue
        if records[study].matches(q) and study not in ids:
            ids.append(study)
    hits = []
    for study in ids[:MAX_RESULTS]:
        info = _study(api, study)
        if info is None:
            continue
        tags = info.get("MainDicomTags", {})
        series = _json(api.get(f"/studies/{study}/series")) or []
        hits.append(Hit("local", aet, tags.get("StudyInstanceUID", ""),
                        tags.get("StudyDescription", ""), tags.get("StudyDate", ""),
                        tuple(sorted({s.get("MainDicomTags", {}).get("Modality", "")
                                      for s in series} - {""})),
                        sum(len(s.get("Instances", [])) for s in series),
                        study, records[study].as_json() if study in records else None))
    return hits


def search(service: Service, req: Request) -> Response:
    """Fan a C-FIND out to every configured node, and search the local index, at once."""
    api = req.orthanc
    if api is None:
        return error(503, "the search needs the Orthanc API")
    try:
        # Orthanc decodes %XX but leaves the '+' of form encoding (a space, as curl and
        # requests send it) alone: either way it becomes a one-character wildcard.
        q = parse_query((req.query.get("q") or "").replace("+", "?"))
    except ValueError as exc:
        return error(400, str(exc))
    try:
        timeout = int(req.query.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        return error(400, "timeout must be an integer")
    if not 1 <= timeout <= MAX_TIMEOUT:
        return error(400, f"timeout must be between 1 and {MAX_TIMEOUT} seconds")
    peers = peers_from_modalities(_json(api.get("/modalities?expand")) or {})
    own_aet = str((_json(api.get("/system")) or {}).get("DicomAet", ""))
    tasks: dict[str, Callable[[], Sequence[Hit]]] = {
        p.name: functools.partial(cfind_study_descriptions, p, own_aet, q, timeout)
        for p in peers
    }
    # One association per node, every spelling on it: the node's whole answer is bounded.
    outcomes = fan_out(tasks, timeout * (1 + len(cfind_patterns(q)))) if tasks else {}
    try:
        local = NodeOutcome("ok", tuple(_local_hits(api, own_aet, q)))
    except Exception as exc:  # noqa: BLE001
        local = classify_failure(exc)
    nodes = [{"node": "local", "aet": own_aet, "status": local.status,
              "count": len(local.hits), "detail": local.detail}]
    for p in peers:
        o = outcomes[p.name]
        nodes.append({"node": p.name, "aet": p.aet, "status": o.status, "count": len(o.hits),
                      "detail": o.detail})
    results = merge_hits([*local.hits, *(h for o in outcomes.values() for h in o.hits)])
    return Response(200, {"query": q, "count": len(results), "results": results,
                          "nodes": nodes})
