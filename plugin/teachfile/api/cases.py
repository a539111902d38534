"""Teaching cases across the network: label a study, find it on any node, send it.

A case is a stored study plus a record (title, keywords, diagnosis, notes): the model and its
durable store are in :mod:`teachfile.node.records`, keyed by the pseudonymous Study Instance UID,
so that the record survives a re-send, an overwrite, a ``/modify`` or the study's deletion and
restore. The title is also written into Study Description, because that is the one place every
DICOM node can search: a C-FIND on ``*aortic*`` finds the case from anywhere; reception keeps it
there (it writes the case title into every instance of a case it stores).

A study may be named by its Orthanc id or by its Study Instance UID everywhere below.

Handlers are plain functions over the internal REST API (``req.orthanc``); the pure parts
(patterns, merging and the bounded fan-out in :mod:`teachfile.api.casesearch`) are plain
functions for unit tests.
"""

from __future__ import annotations

import functools
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..node.records import (
    DIAGNOSIS_MAX,
    KEYWORD_MAX,
    KEYWORDS_MAX,
    NOTES_MAX,
    TITLE_MAX,
    CaseError,
    CaseRecord,
    CaseStore,
    StoredCase,
    is_uid,
    node_store,
    now_iso,
    update_record,
)
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

__all__ = ["DIAGNOSIS_MAX", "KEYWORDS_MAX", "KEYWORD_MAX", "NOTES_MAX", "TITLE_MAX", "CaseError",
           "CaseRecord", "update_record"]

#: The Orthanc metadata index where records lived before the case store (read once, then moved
#: into the store).
CASE_METADATA = "4601"
#: Its name when the configuration declares it in ``UserMetadata``.
CASE_METADATA_NAME = "teachfile-case"

DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 30  # a viewer may search; one search must not hold the node for minutes

_STUDY_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
_KEEP_UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


def record_matches(query: str, record: CaseRecord) -> bool:
    """Whether ``query`` (DICOM wildcards allowed) occurs in the title, a keyword, the
    diagnosis or the notes, ignoring case: what the node itself can search beyond Study
    Description."""
    return any(text_matches(query, t) for t in record.texts())


# -- Orthanc calls -------------------------------------------------------------------------------


def _json(data: bytes) -> Any:
    return json.loads(data) if data else None


def _study(api: OrthancApi, study: str) -> dict[str, Any] | None:
    try:
        return _json(api.get(f"/studies/{study}"))
    except Exception:  # noqa: BLE001 - Orthanc answers 404 by raising
        return None


def _lookup_uid(api: OrthancApi, uid: str) -> str | None:
    try:
        found = _json(api.post("/tools/lookup", uid.encode())) or []
    except Exception:  # noqa: BLE001
        return None
    ids = [f.get("ID") for f in found if isinstance(f, Mapping) and f.get("Type") == "Study"]
    return str(ids[0]) if ids else None


def _legacy_record(api: OrthancApi, study: str) -> CaseRecord | None:
    """A record an earlier version kept as Orthanc metadata, if any."""
    try:
        raw = api.get(f"/studies/{study}/metadata/{CASE_METADATA}")
    except Exception:  # noqa: BLE001 - no record
        return None
    try:
        return CaseRecord.from_json(raw)
    except ValueError:
        return None


def _instance_count(api: OrthancApi, study: str) -> int:
    return len(_json(api.get(f"/studies/{study}/instances")) or [])


@dataclass(frozen=True)
class Located:
    """A study named in a request: what Orthanc and the case store know of it."""

    uid: str
    study: str | None  # the Orthanc id, when the study is stored
    info: Mapping[str, Any] | None  # Orthanc's /studies/{id}, when stored
    case: StoredCase | None


def _store(service: Service | None) -> CaseStore | None:
    return getattr(service, "cases", None) or node_store()


def read_record(api: OrthancApi, study: str,
                service: Service | None = None) -> CaseRecord | None:
    """The case record of a study (Orthanc id or Study Instance UID), or None when it is no
    case: for callers that hold no Service (the portal's library). It reads the case store, so
    it answers after re-sends too; a record an earlier version kept as Orthanc metadata is
    moved into the store on the way."""
    found = locate(service, api, study)
    if isinstance(found, Response) or found.case is None:
        return None
    return found.case.record


def locate(service: Service | None, api: OrthancApi, ref: str) -> Located | Response:
    """Resolve an Orthanc id or a Study Instance UID; a stored study or a known case."""
    store = _store(service)
    if _STUDY_ID.match(ref):
        info = _study(api, ref)
        if info is None:
            case = store.by_study_id(ref) if store else None
            if case is None:
                return error(404, f"no such study: {ref}")
            return Located(case.study_instance_uid, None, None, case)
        uid = str(info.get("MainDicomTags", {}).get("StudyInstanceUID", ""))
        study: str | None = ref
    elif is_uid(ref):
        uid = ref
        study = _lookup_uid(api, ref)
        info = _study(api, study) if study else None
        if info is None:
            study = None
    else:
        return error(400, "the study must be an Orthanc study id or a Study Instance UID")
    case = None
    if store is not None and is_uid(uid):
        try:
            case = store.get(uid)
        except (OSError, ValueError):
            return error(500, "the node's record of this case cannot be read")
        if case is None and study is not None:
            legacy = _legacy_record(api, study)
            if legacy is not None:  # move it into the store, once
                case = StoredCase(uid, legacy, study, legacy.updated or now_iso())
                store.put(case)
    if info is None and case is None:
        return error(404, f"no such study: {ref}")
    return Located(uid, study, info, case)


def _case_json(api: OrthancApi, found: Located) -> dict[str, Any]:
    tags = (found.info or {}).get("MainDicomTags", {})
    rec = found.case.record if found.case else CaseRecord()
    return {
        "study": found.study or (found.case.study if found.case else None),
        "study_instance_uid": found.uid,
        "title": rec.title if found.case and rec.title else tags.get("StudyDescription", ""),
        "keywords": list(rec.keywords),
        "diagnosis": rec.diagnosis,
        "notes": rec.notes,
        "labelled": found.case is not None,
        "updated": rec.updated or None,
        "stored": found.info is not None,
        "instances": _instance_count(api, found.study) if found.study else 0,
    }


def _request(service: Service | None, req: Request,
             ref: str) -> tuple[OrthancApi, Located, Any] | Response:
    """The API, the located study and the JSON body of a request, or the error to answer."""
    if req.orthanc is None:
        return error(503, "cases need the Orthanc API")
    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        return error(400, "the body must be JSON")
    found = locate(service, req.orthanc, ref)
    if isinstance(found, Response):
        return found
    return req.orthanc, found, body


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
    parsed = _request(service, req, study)
    if isinstance(parsed, Response):
        return parsed
    api, found, _ = parsed
    return Response(200, _case_json(api, found))


def _rewrite_title(api: OrthancApi, study: str, title: str) -> Response | None:
    """Rewrite Study Description of every instance with Orthanc's /modify, keeping every UID;
    the node recognises its own sealed output, so pseudonyms stay and the new instances replace
    the old ones (``OverwriteInstances``). None on success, else the error to answer."""
    before = _instance_count(api, study)
    try:
        job = _json(api.post(f"/studies/{study}/modify", json.dumps({
            "Replace": {"StudyDescription": title},
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
    # Overwritten instances do not refresh the study's tags in Orthanc's index (only a study
    # created anew gets them): without this, C-FIND would still answer the old title.
    api.post(f"/studies/{study}/reconstruct", b"")
    return None


def put_case(service: Service, req: Request, study: str) -> Response:
    """Label a case: the record goes to the case store first, so that reception writes the new
    title into the instances the rewrite produces (and into any later re-send)."""
    parsed = _request(service, req, study)
    if isinstance(parsed, Response):
        return parsed
    api, found, body = parsed
    store = _store(service)
    if store is None:
        return error(503, "the node has no case store")
    if found.info is None or found.study is None:
        return error(404, "the study is not stored on this node (its record is kept; label "
                     "it again once the study is back)")
    sid = found.study
    current_title = str(found.info.get("MainDicomTags", {}).get("StudyDescription", ""))
    with store.locked():
        previous = store.get(found.uid)
        current = previous.record if previous else (
            found.case.record if found.case else CaseRecord(title=current_title))
        try:
            record = update_record(current, body)
        except CaseError as exc:
            return error(400, str(exc))
        created = previous.created if previous else now_iso()
        info: Mapping[str, Any] = found.info
        if record.title and record.title != current_title:
            store.put(StoredCase(found.uid, record, sid, created))
            failed = _rewrite_title(api, sid, record.title)
            if failed is not None:
                if previous is not None:
                    store.put(previous)
                else:
                    store.delete(found.uid)
                return failed
            info = _study(api, sid) or info
        # The profile cleans descriptions on reception: the record keeps what was stored.
        stored_title = str(info.get("MainDicomTags", {}).get("StudyDescription", ""))
        case = StoredCase(found.uid, replace(record, title=stored_title), sid, created)
        store.put(case)
    return Response(200, _case_json(api, Located(found.uid, sid, info, case)))


def send_case(service: Service, req: Request, study: str) -> Response:
    """C-STORE a case to a configured node as an Orthanc job, in its stored syntax."""
    parsed = _request(service, req, study)
    if isinstance(parsed, Response):
        return parsed
    api, found, body = parsed
    target = body.get("target") if isinstance(body, Mapping) else None
    if not isinstance(target, str) or not target:
        return error(400, "target must name a configured DICOM node (GET /modalities)")
    if target not in (_json(api.get("/modalities")) or []):
        return error(400, "target is not a configured DICOM node (GET /modalities)")
    if found.study is None:
        return error(404, f"no such study: {study}")
    job = _json(api.post(f"/modalities/{target}/store", json.dumps({
        "Resources": [found.study], "Asynchronous": True}).encode()))
    job_id = str((job or {}).get("ID", ""))
    return Response(200, {"study": found.study, "target": target, "job": job_id,
                          "job_path": f"/jobs/{job_id}"})


def _local_hits(service: Service | None, api: OrthancApi, aet: str, q: str) -> list[Hit]:
    """The node's own index: Study Description without regard to case, plus the case records
    (keywords, diagnosis, notes), which only this node (and its replicas) hold."""
    found = _json(api.post("/tools/find", json.dumps({
        "Level": "Study", "Query": {"StudyDescription": f"*{q}*"}, "CaseSensitive": False,
        "Limit": MAX_RESULTS}).encode())) or []
    ids = list(dict.fromkeys(found))
    store = _store(service)
    if store is not None:
        for case in store.all():
            if len(ids) >= MAX_RESULTS:
                break
            if not record_matches(q, case.record):
                continue
            sid = case.study if case.study and _study(api, case.study) else \
                _lookup_uid(api, case.study_instance_uid)
            if sid and sid not in ids:
                ids.append(sid)
    hits = []
    for study in ids[:MAX_RESULTS]:
        info = _study(api, study)
        if info is None:
            continue
        tags = info.get("MainDicomTags", {})
        uid = str(tags.get("StudyInstanceUID", ""))
        record = None
        if store is not None and is_uid(uid):
            try:
                stored = store.get(uid)
            except (OSError, ValueError):
                stored = None
            record = stored.record.as_json() if stored else None
        series = _json(api.get(f"/studies/{study}/series")) or []
        hits.append(Hit("local", aet, uid, tags.get("StudyDescription", ""),
                        tags.get("StudyDate", ""),
                        tuple(sorted({s.get("MainDicomTags", {}).get("Modality", "")
                                      for s in series} - {""})),
                        sum(len(s.get("Instances", [])) for s in series),
                        study, record))
    return hits


def query_text(raw: str | None) -> str:
    """The search text as the user typed it.

    Orthanc 1.10 hands plugins the query string undecoded (``%20`` and the ``+`` of form
    encoding, as browsers, curl and requests send a space, arrive as such), so both are decoded
    here. A node that already decoded it loses nothing: a decoded string has no escapes left,
    except for a literal ``%XX`` or ``+`` typed on purpose, which no title needs."""
    return urllib.parse.unquote_plus(raw or "")


def search(service: Service, req: Request) -> Response:
    """Fan a C-FIND out to every configured node, and search the local index, at once."""
    api = req.orthanc
    if api is None:
        return error(503, "the search needs the Orthanc API")
    try:
        q = parse_query(query_text(req.query.get("q")))
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
        local = NodeOutcome("ok", tuple(_local_hits(service, api, own_aet, q)))
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
