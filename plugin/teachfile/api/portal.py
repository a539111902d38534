"""The teaching-file portal: its static page (``/teachfile/ui/``) and the JSON and image
endpoints it calls (``/teachfile/portal/...``).

Every call the page makes is one of these (or an existing ``/teachfile`` endpoint), documented in
the OpenAPI document, and each checks the caller's role itself as well as the node's request
filter: the page only hides what a role cannot do.

Images: the page asks for a frame's stored values (16-bit or 8-bit, Orthanc's ``numpy`` answer,
decoded from the stored JPEG 2000 by Orthanc's decoder) and applies window/level itself, so a
drag re-renders without a round trip and a scrolled stack is drawn from memory.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from ..errors import TeachfileError
from ..node.service import Service
from . import cases, tce
from .portalcore import (
    HIDDEN_FIELDS,
    CaseSummary,
    ConferenceStore,
    Conflict,
    Extras,
    LibraryQuery,
    PortalError,
    identifier_warnings,
    is_orthanc_id,
    is_true,
    search_library,
    update_extras,
    validate_lists,
)
from .types import OrthancApi, Request, Response, error

log = logging.getLogger("teachfile.portal")

#: Orthanc metadata index of the portal's template extras (beside the case record's 4601).
EXTRAS_METADATA = "4602"
EXTRAS_METADATA_NAME = "teachfile-portal"
#: How long a library entry is trusted without a change naming its study.
SUMMARY_TTL = 600.0
STALE_PER_CALL = 50
THUMB_HEIGHT = 128

_ROLE_RANK = {"viewer": 0, "contributor": 1, "admin": 2}
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png", ".json": "application/json"}


@dataclass(frozen=True)
class Blob(Response):
    """A response that is not JSON: a page, a script, an image, an archive."""

    content_type: str = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        return bytes(self.body)


def _json(data: bytes) -> Any:
    return json.loads(data) if data else None


def _role(service: Service, req: Request) -> str:
    return service.roles.role_of(req.user) or "viewer"


def _needs(service: Service, req: Request, role: str) -> Response | None:
    if _ROLE_RANK.get(_role(service, req), 0) < _ROLE_RANK[role]:
        return error(403, f"this needs the {role} role")
    return None


def _api(req: Request) -> OrthancApi:
    if req.orthanc is None:
        raise PortalError("the portal needs the Orthanc API")
    return req.orthanc


def _body(req: Request) -> Any:
    try:
        return json.loads(req.body or b"{}")
    except ValueError:
        raise PortalError("the body must be JSON") from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- static files --------------------------------------------------------------------------------


def static(service: Service, req: Request, name: str = "") -> Response:
    name = name or "index.html"
    if "/" in name.strip("/") or name.startswith(".") or ".." in name:
        return error(404, "no such file")
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    ctype = _STATIC_TYPES.get(suffix)
    if ctype is None:
        return error(404, "no such file")
    item = resources.files("teachfile.api").joinpath("ui").joinpath(name)
    try:
        data = item.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return error(404, "no such file")
    return Blob(200, data, ctype, (("Cache-Control", "no-cache"),))


# -- the library index ---------------------------------------------------------------------------


class _Library:
    """Study summaries kept up to date from Orthanc's change log.

    The first call reads every study; later calls read only ``/changes`` since the last one and
    re-read the studies it names (new instances and series, record metadata written by any
    process, deletions). The change log lives in the index, so a record written by another
    replica of a PostgreSQL index shows up too. A summary older than :data:`SUMMARY_TTL` is read
    again anyway, for the changes the log does not map to a study (an instance deleted from a
    study that still has others).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, CaseSummary]] = {}
        self._series_study: dict[str, str] = {}
        self._seq: int | None = None

    def invalidate(self, study: str) -> None:
        with self._lock:
            self._entries.pop(study, None)

    def _study_of(self, api: OrthancApi, change: Mapping[str, Any]) -> str | None:
        kind, rid = change.get("ResourceType"), str(change.get("ID", ""))
        if kind == "Study":
            return rid
        try:
            if kind == "Series":
                if rid not in self._series_study:
                    self._series_study[rid] = str(
                        (_json(api.get(f"/series/{rid}")) or {})["ParentStudy"])
                return self._series_study[rid]
            if kind == "Instance":
                series = str((_json(api.get(f"/instances/{rid}")) or {})["ParentSeries"])
                if series not in self._series_study:
                    self._series_study[series] = str(
                        (_json(api.get(f"/series/{series}")) or {})["ParentStudy"])
                return self._series_study[series]
        except Exception:  # noqa: BLE001 - deleted since: its study is re-read by age
            return None
        return None

    def _changed(self, api: OrthancApi) -> tuple[set[str], set[str]]:
        dirty: set[str] = set()
        gone: set[str] = set()
        while True:
            page = _json(api.get(f"/changes?since={self._seq}&limit=1000")) or {}
            for change in page.get("Changes", []):
                if change.get("ChangeType") == "Deleted" and change.get("ResourceType") == "Study":
                    gone.add(str(change.get("ID")))
                    continue
                if change.get("ResourceType") == "Patient":
                    continue
                study = self._study_of(api, change)
                if study:
                    dirty.add(study)
            self._seq = int(page.get("Last", self._seq or 0))
            if page.get("Done", True) or not page.get("Changes"):
                return dirty, gone

    def all(self, api: OrthancApi) -> list[CaseSummary]:
        now = time.monotonic()
        with self._lock:
            if self._seq is None:
                self._seq = int((_json(api.get("/changes?last")) or {}).get("Last", 0))
                wanted = set(_json(api.get("/studies")) or [])
                self._entries.clear()
            else:
                dirty, gone = self._changed(api)
                for study in gone | dirty:
                    self._entries.pop(study, None)
                wanted = (set(self._entries) | dirty) - gone
            # A few old entries per call, so that they do not all expire in one slow call.
            stale = set(sorted(s for s, (at, _) in self._entries.items()
                               if now - at > SUMMARY_TTL)[:STALE_PER_CALL])
            for study in (wanted - set(self._entries)) | stale:
                try:
                    self._entries[study] = (now, summarize(api, study))
                except Exception:  # noqa: BLE001 - a study deleted meanwhile
                    self._entries.pop(study, None)
            return [summary for _, summary in self._entries.values()]


LIBRARY = _Library()


def read_extras(api: OrthancApi, study: str) -> Extras:
    try:
        return Extras.from_json(api.get(f"/studies/{study}/metadata/{EXTRAS_METADATA}"))
    except Exception:  # noqa: BLE001 - none yet
        return Extras()


def _record(api: OrthancApi, study: str, title: str) -> dict[str, Any]:
    rec = cases.read_record(api, study)
    extras = read_extras(api, study)
    out: dict[str, Any] = {
        "title": title,
        "keywords": list(rec.keywords) if rec else [],
        "diagnosis": rec.diagnosis if rec else "",
        "notes": rec.notes if rec else "",
        **extras.as_json(),
    }
    out["updated"] = extras.updated or (rec.updated if rec else "")
    return out


_PIXEL_LESS = {"SR", "KO", "PR", "DOC", "RTSTRUCT", "RTPLAN", "SEG"}


def summarize(api: OrthancApi, study: str, info: Mapping[str, Any] | None = None) -> CaseSummary:
    info = info or _json(api.get(f"/studies/{study}")) or {}
    tags = info.get("MainDicomTags", {})
    series = _json(api.get(f"/studies/{study}/series")) or []
    record = _record(api, study, tags.get("StudyDescription", ""))
    modalities = sorted({s.get("MainDicomTags", {}).get("Modality", "") for s in series} - {""})
    bodies = sorted({s.get("MainDicomTags", {}).get("BodyPartExamined", "") for s in series}
                    - {""})
    images = [s for s in series
              if s.get("MainDicomTags", {}).get("Modality", "") not in _PIXEL_LESS]
    thumb = None
    if record.get("key_images"):
        thumb = record["key_images"][0]
    elif images:
        biggest = max(images, key=lambda s: len(s.get("Instances", [])))
        inst = sorted(biggest.get("Instances", []))
        thumb = inst[len(inst) // 2] if inst else None
    # The record's own KOS and SR are not images of the case.
    return CaseSummary(study, tags.get("StudyInstanceUID", ""), tags.get("StudyDescription", ""),
                       tags.get("StudyDate", ""), tuple(m for m in modalities
                                                        if m not in ("KO", "SR")),
                       tuple(bodies), len(images),
                       sum(len(s.get("Instances", [])) for s in images), thumb, record)


# -- handlers ------------------------------------------------------------------------------------


def me(service: Service, req: Request) -> Response:
    role = _role(service, req)
    from .nifti import dcm2niix_available

    return Response(200, {"user": req.user, "role": role,
                          "may_author": _ROLE_RANK[role] >= 1, "may_admin": role == "admin",
                          "nifti": dcm2niix_available()})


def library(service: Service, req: Request) -> Response:
    query = LibraryQuery.from_query(req.query)
    return Response(200, search_library(LIBRARY.all(_api(req)), query))


def _study_or_404(api: OrthancApi, study: str) -> dict[str, Any] | None:
    if not is_orthanc_id(study):
        raise PortalError("the study must be an Orthanc study id")
    try:
        return _json(api.get(f"/studies/{study}"))
    except Exception:  # noqa: BLE001 - Orthanc answers 404 by raising
        return None


def _series_json(api: OrthancApi, s: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    tags = s.get("MainDicomTags", {})
    inst = sorted(s.get("Instances", []))
    marked = [i for i in inst if i in keys]
    return {"series": s.get("ID"), "description": tags.get("SeriesDescription", ""),
            "modality": tags.get("Modality", ""), "number": tags.get("SeriesNumber", ""),
            "instances": len(inst), "key_images": marked,
            "viewable": tags.get("Modality", "") not in _PIXEL_LESS,
            "thumbnail": marked[0] if marked else (inst[len(inst) // 2] if inst else None)}


def get_case(service: Service, req: Request, study: str) -> Response:
    api = _api(req)
    info = _study_or_404(api, study)
    if info is None:
        return error(404, f"no such study: {study}")
    unknown = is_true(req.query.get("unknown"))
    summary = summarize(api, study, info)
    keys = set(summary.record.get("key_images", []))
    series = [_series_json(api, s, keys) for s in _json(api.get(f"/studies/{study}/series")) or []]
    # Key images first, then the series in their numbers' order.
    series.sort(key=lambda s: (not s["key_images"], not s["viewable"],
                               _num(s["number"]), s["description"]))
    out = summary.as_json(unknown)
    out["series_list"] = series
    out["hidden"] = list(HIDDEN_FIELDS) if unknown else []
    return Response(200, out)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1e9


def put_case(service: Service, req: Request, study: str) -> Response:
    """Save the template: title, keywords and diagnosis through the case record (so the title
    reaches Study Description and every node's C-FIND), the rest beside it."""
    denied = _needs(service, req, "contributor")
    if denied:
        return denied
    api = _api(req)
    body = _body(req)
    if not isinstance(body, Mapping):
        raise PortalError("the body must be a JSON object")
    known = {"title", "keywords", "diagnosis", "notes", "key_images", *Extras().as_json()}
    unknown = set(body) - known - {"created", "updated"}
    if unknown:
        raise PortalError("unknown fields: " + ", ".join(sorted(unknown)))
    info = _study_or_404(api, study)
    if info is None:
        return error(404, f"no such study: {study}")
    current = read_extras(api, study)
    extras = update_extras(current, body, _now())
    record_body = {k: body[k] for k in ("title", "keywords", "diagnosis", "notes")
                   if k in body and body[k] is not None}
    current_record = cases.read_record(api, study)
    if record_body or current_record is None:
        if "title" not in record_body:
            record_body["title"] = info.get("MainDicomTags", {}).get("StudyDescription", "") \
                or "Untitled case"
        resp = cases.put_case(service, Request("PUT", f"/teachfile/cases/{study}", {},
                                               json.dumps(record_body).encode(), req.user, api),
                              study)
        if resp.status != 200:
            return resp
    api.put(f"/studies/{study}/metadata/{EXTRAS_METADATA}",
            json.dumps(extras.as_json()).encode())
    LIBRARY.invalidate(study)
    record_error = None
    try:
        write_record_objects(service, api, study, summarize(api, study).record, extras.updated)
    except Exception as exc:  # noqa: BLE001 - the record is saved; its DICOM copy is not
        record_error = type(exc).__name__
        log.warning("the case record of a study could not be written as DICOM: %s",
                    record_error)
    LIBRARY.invalidate(study)
    out = get_case(service, Request("GET", req.path, {}, b"", req.user, api), study)
    if out.status == 200:
        out.body["warnings"] = identifier_warnings(
            {k: v for k, v in body.items() if k != "key_images"})
        out.body["dicom_record"] = "written" if record_error is None else "failed"
    return out


# -- the record as DICOM (IHE TCE) ---------------------------------------------------------------


def _record_series(api: OrthancApi, study: str) -> list[dict[str, Any]]:
    return [s for s in _json(api.get(f"/studies/{study}/series")) or []
            if s.get("MainDicomTags", {}).get("SeriesDescription") in (
                tce.RECORD_SERIES_DESCRIPTION, tce.KOS_SERIES_DESCRIPTION)
            and s.get("MainDicomTags", {}).get("Modality") in ("SR", "KO")]


def write_record_objects(service: Service, api: OrthancApi, study: str,
                         record: Mapping[str, Any], version: str) -> list[str]:
    """Write the record as a KOS and an SR into the study, then drop older versions."""
    import io

    import pydicom

    old = {i for s in _record_series(api, study) for i in s.get("Instances", [])}
    images = [i for i in _json(api.get(f"/studies/{study}/instances")) or [] if i["ID"] not in old]
    if not images:
        raise RuntimeError("the study has no instance to take its identifiers from")
    template = pydicom.dcmread(io.BytesIO(api.get(f"/instances/{images[0]['ID']}/file")),
                               stop_before_pixels=True)
    keys = []
    for iid in record.get("key_images", []):
        try:
            tags = _json(api.get(f"/instances/{iid}/simplified-tags")) or {}
        except Exception:  # noqa: BLE001 - a key image deleted since
            continue
        keys.append((str(tags.get("SeriesInstanceUID", "")), str(tags.get("SOPClassUID", "")),
                     str(tags.get("SOPInstanceUID", ""))))
    kos, sr = tce.build_record(template, record, keys, service.pseudonymizer, version)
    new = []
    for ds in (kos, sr):
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        answer = _json(api.post("/instances", buf.getvalue())) or {}
        new.append(str(answer.get("ID", "")))
    for iid in old - set(new):
        api.delete(f"/instances/{iid}")
    return new


def import_record(service: Service, api: OrthancApi, instance: str) -> str:
    """Index a record object that arrived (a send from another node, a restored backup): its
    fields become this node's case record unless the node holds the same or a newer one.
    Returns what was done, for the log (no data)."""
    import io

    import pydicom

    from ..reception.record import is_own_record, record_updated

    ds = pydicom.dcmread(io.BytesIO(api.get(f"/instances/{instance}/file")))
    if not is_own_record(ds, service.pseudonymizer):
        return "not-a-record"
    version = record_updated(ds)
    study = str((_json(api.get(f"/instances/{instance}/study")) or {}).get("ID", ""))
    current = read_extras(api, study)
    fields = tce.read_manifest(ds)
    if fields is not None:
        if current.updated and current.updated >= version:
            return "up-to-date"
        body = {k: fields.get(k, "") for k in ("title", "keywords", "diagnosis", "notes")}
        body = {k: v for k, v in body.items() if v}
        if body:
            resp = cases.put_case(service, Request("PUT", f"/teachfile/cases/{study}", {},
                                                   json.dumps(body).encode(), None, api), study)
            if resp.status != 200:
                return "record-refused"
        merged = {**current.as_json(), **{k: fields.get(k, "") for k in
                                          ("history", "findings", "differential", "discussion",
                                           "references", "author")}}
        merged["updated"] = version
        merged["created"] = current.created or version
        api.put(f"/studies/{study}/metadata/{EXTRAS_METADATA}", json.dumps(merged).encode())
        LIBRARY.invalidate(study)
        return "imported"
    uids = tce.key_image_uids(ds)
    if current.updated and current.updated > version:
        return "up-to-date"
    ids = []
    for uid in uids:
        found = [f["ID"] for f in _json(api.post("/tools/lookup", uid.encode())) or []
                 if f.get("Type") == "Instance"]
        if not found:
            return "retry"  # the key image itself has not arrived yet
        ids += found
    if ids and list(current.key_images) != ids:
        extras = current.as_json()
        extras["key_images"] = ids  # "updated" stays: the SR's fields may still be due
        api.put(f"/studies/{study}/metadata/{EXTRAS_METADATA}", json.dumps(extras).encode())
        LIBRARY.invalidate(study)
        return "key-images-imported"
    return "up-to-date"


def series(service: Service, req: Request, series_id: str) -> Response:
    """The frames of a series in display order, with what the page needs to draw them."""
    api = _api(req)
    if not is_orthanc_id(series_id):
        raise PortalError("the series must be an Orthanc series id")
    try:
        info = _json(api.get(f"/series/{series_id}")) or {}
    except Exception:  # noqa: BLE001
        return error(404, f"no such series: {series_id}")
    try:
        ordered = _json(api.get(f"/series/{series_id}/ordered-slices")) or {}
        frames = []
        for item in ordered.get("Slices", []):
            # "/instances/<id>/frames/<n>", in geometric order, multi-frame instances included
            parts = item.strip("/").split("/")
            frames.append({"instance": parts[1], "frame": int(parts[3])})
        if not frames:
            raise ValueError("no slices")
    except Exception:  # noqa: BLE001 - no geometry: the instances in their numbers' order
        insts = _json(api.get(f"/series/{series_id}/instances")) or []
        insts.sort(key=lambda i: (_num(i.get("MainDicomTags", {}).get("InstanceNumber")),
                                  i.get("ID")))
        frames = []
        for i in insts:
            count = int(_num(i.get("MainDicomTags", {}).get("NumberOfFrames") or 1) or 1)
            frames += [{"instance": i["ID"], "frame": n} for n in range(count)]
    pixel: dict[str, Any] = {}
    if frames:
        tags = _json(api.get(f"/instances/{frames[0]['instance']}/simplified-tags")) or {}
        pixel = _pixel_info(tags)
    return Response(200, {"series": series_id, "study": info.get("ParentStudy"),
                          "modality": info.get("MainDicomTags", {}).get("Modality", ""),
                          "description": info.get("MainDicomTags", {}).get(
                              "SeriesDescription", ""),
                          "count": len(frames), "frames": frames, "pixel": pixel})


def _first_number(value: Any, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        return float(str(value).split("\\")[0])
    except ValueError:
        return default


def _pixel_info(tags: Mapping[str, Any]) -> dict[str, Any]:
    width = tags.get("WindowWidth")
    center = tags.get("WindowCenter")
    return {
        "rows": int(_first_number(tags.get("Rows"), 0)),
        "columns": int(_first_number(tags.get("Columns"), 0)),
        "samples": int(_first_number(tags.get("SamplesPerPixel"), 1)),
        "photometric": str(tags.get("PhotometricInterpretation", "")),
        "bits_stored": int(_first_number(tags.get("BitsStored"), 8)),
        "signed": str(tags.get("PixelRepresentation", "0")) == "1",
        "slope": _first_number(tags.get("RescaleSlope"), 1.0),
        "intercept": _first_number(tags.get("RescaleIntercept"), 0.0),
        "window_center": _first_number(center, 0.0) if center not in (None, "") else None,
        "window_width": _first_number(width, 0.0) if width not in (None, "") else None,
    }


_J2K_MAGIC = (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def frame_pixels(service: Service, req: Request, instance: str, frame: str) -> Response:
    """A frame's stored values as a NumPy ``.npy`` array.

    The node stores JPEG 2000, which Orthanc 1.10's ``numpy`` route cannot decode (it tries only
    the built-in DCMTK decoder): the codestream (``/frames/N/raw``) is decoded here with
    OpenJPEG through imagecodecs, which releases the interpreter lock while it decodes. Other
    syntaxes go through Orthanc's own ``numpy`` answer."""
    api = _api(req)
    if not is_orthanc_id(instance) or not frame.isdigit():
        raise PortalError("an Orthanc instance id and a frame number")
    cache = (("Cache-Control", "private, max-age=86400"),)
    try:
        raw = api.get(f"/instances/{instance}/frames/{int(frame)}/raw")
    except Exception:  # noqa: BLE001
        return error(404, "no such frame")
    if raw.startswith(_J2K_MAGIC):
        try:
            return Blob(200, npy_bytes(decode_j2k(raw)), "application/octet-stream", cache)
        except Exception:  # noqa: BLE001 - fall back on Orthanc's decoders
            pass
    try:
        data = api.get(f"/instances/{instance}/frames/{int(frame)}/numpy")
    except Exception:  # noqa: BLE001
        return error(404, "this frame cannot be decoded")
    return Blob(200, data, "application/octet-stream", cache)


def decode_j2k(codestream: bytes) -> Any:
    import imagecodecs

    return imagecodecs.jpeg2k_decode(codestream)


def npy_bytes(array: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


_THUMBS: dict[str, bytes] = {}
_THUMBS_MAX = 2000


def thumbnail(service: Service, req: Request, instance: str) -> Response:
    api = _api(req)
    if not is_orthanc_id(instance):
        raise PortalError("an Orthanc instance id")
    data = _THUMBS.get(instance)
    if data is None:
        try:
            data = api.get(f"/instances/{instance}/rendered?height={THUMB_HEIGHT}")
        except Exception:  # noqa: BLE001
            return error(404, "no such image, or it cannot be rendered")
        if len(_THUMBS) >= _THUMBS_MAX:
            _THUMBS.pop(next(iter(_THUMBS)))
        _THUMBS[instance] = data
    return Blob(200, data, "image/png", (("Cache-Control", "private, max-age=86400"),))


def archive(service: Service, req: Request, study: str) -> Response:
    """The case as a ZIP of DICOM files, or (``media=1``) as DICOMDIR media."""
    api = _api(req)
    if _study_or_404(api, study) is None:
        return error(404, f"no such study: {study}")
    kind = "media" if is_true(req.query.get("media")) else "archive"
    data = api.get(f"/studies/{study}/{kind}")
    return Blob(200, data, "application/zip",
                (("Content-Disposition", f'attachment; filename="case-{study[:8]}-{kind}.zip"'),))


def nifti(service: Service, req: Request, study: str) -> Response:
    """The case as NIfTI (dcm2niix, one .nii.gz + BIDS sidecar per series) in a ZIP; 404 when
    this node has no dcm2niix (the page then offers no such download)."""
    from .nifti import dcm2niix_available, nifti_zip

    if not dcm2niix_available():
        return error(404, "NIfTI export needs dcm2niix on the node (apt-get install dcm2niix)")
    api = _api(req)
    if _study_or_404(api, study) is None:
        return error(404, f"no such study: {study}")
    try:
        data = nifti_zip(api, study)
    except TeachfileError as exc:
        return error(422, str(exc))
    return Blob(200, data, "application/zip",
                (("Content-Disposition", f'attachment; filename="case-{study[:8]}-nifti.zip"'),))


def _store(service: Service) -> ConferenceStore:
    directory = service.settings.storage_dir or service.settings.data_dir
    return ConferenceStore(directory)


def get_conferences(service: Service, req: Request) -> Response:
    return Response(200, _store(service).read())


def put_conferences(service: Service, req: Request) -> Response:
    denied = _needs(service, req, "contributor")
    if denied:
        return denied
    body = _body(req)
    if not isinstance(body, Mapping):
        raise PortalError("the body must be a JSON object")
    lists = validate_lists(body.get("lists"))
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise PortalError("version must be the string read from GET")
    try:
        return Response(200, _store(service).write(lists, version, req.user))
    except Conflict:
        resp = error(409, "the conference lists changed since they were read; reload them")
        resp.body["current"] = _store(service).read()
        return resp


def quiz(service: Service, req: Request) -> Response:
    """A random case carrying a keyword, for a quiz in unknown mode."""
    keyword = (req.query.get("keyword") or "").strip().casefold()
    found = [c.study for c in LIBRARY.all(_api(req))
             if not keyword or keyword in {k.casefold() for k in c.record.get("keywords", [])}]
    if not found:
        return error(404, "no case carries this keyword")
    return Response(200, {"study": random.choice(found), "among": len(found)})


def nodes(service: Service, req: Request) -> Response:
    mods = _json(_api(req).get("/modalities?expand")) or {}
    out = [{"name": name, "aet": str(m.get("AET", "")), "host": str(m.get("Host", "")),
            "port": m.get("Port")} for name, m in sorted(mods.items())]
    return Response(200, {"nodes": out})


def echo(service: Service, req: Request, name: str) -> Response:
    denied = _needs(service, req, "admin")
    if denied:
        return denied
    api = _api(req)
    if name not in (_json(api.get("/modalities")) or []):
        return error(404, "no such configured node")
    start = time.monotonic()
    try:
        api.post(f"/modalities/{name}/echo", b'{"Timeout": 5}')
        ok = True
    except Exception:  # noqa: BLE001 - Orthanc raises when the echo fails
        ok = False
    return Response(200, {"node": name, "ok": ok,
                          "ms": round((time.monotonic() - start) * 1000, 1)})


def retrieve(service: Service, req: Request) -> Response:
    """C-MOVE a remote case to this node (a result of the network search)."""
    denied = _needs(service, req, "contributor")
    if denied:
        return denied
    api = _api(req)
    body = _body(req)
    if not isinstance(body, Mapping):
        raise PortalError("the body must be a JSON object")
    node, uid = body.get("node"), body.get("study_instance_uid")
    if not isinstance(node, str) or node not in (_json(api.get("/modalities")) or []):
        raise PortalError("node must name a configured DICOM node")
    if not isinstance(uid, str) or not uid or len(uid) > 64 or \
            not all(c.isdigit() or c == "." for c in uid):
        raise PortalError("study_instance_uid must be a UID")
    # Through a query and its asynchronous retrieve job: on Orthanc 1.10 a C-MOVE started with
    # /modalities/{id}/move runs while this handler waits, and the incoming C-STOREs then wait
    # for the interpreter this handler holds (a deadlock until the association times out).
    query = _json(api.post(f"/modalities/{node}/query", json.dumps({
        "Level": "Study", "Query": {"StudyInstanceUID": uid}}).encode())) or {}
    own = str((_json(api.get("/system")) or {}).get("DicomAet", ""))
    job = _json(api.post(f"/queries/{query.get('ID', '')}/retrieve", json.dumps({
        "TargetAet": own, "Asynchronous": True}).encode())) or {}
    job_id = str(job.get("ID", ""))
    return Response(200, {"node": node, "study_instance_uid": uid, "job": job_id,
                          "job_path": f"/jobs/{job_id}"})


def network(service: Service, req: Request) -> Response:
    """The fan-out search of ``GET /teachfile/search``, for the page: in unknown mode the answer
    fields of the case records are left out of the results, as in the library."""
    resp = cases.search(service, req)
    if resp.status == 200 and is_true(req.query.get("unknown")):
        for result in resp.body.get("results", []):
            if isinstance(result.get("case"), dict):
                result["case"] = {k: v for k, v in result["case"].items()
                                  if k not in (*HIDDEN_FIELDS, "notes")}
    return resp


def job(service: Service, req: Request, job_id: str) -> Response:
    """The state of a send or a retrieve the page started."""
    if not job_id.replace("-", "").isalnum():
        raise PortalError("a job id")
    try:
        info = _json(_api(req).get(f"/jobs/{job_id}")) or {}
    except Exception:  # noqa: BLE001
        return error(404, "no such job")
    return Response(200, {"job": job_id, "state": info.get("State", ""),
                          "progress": info.get("Progress", 0)})


# -- routing -------------------------------------------------------------------------------------

Handler = Callable[..., Response]
_P = "/teachfile/portal"
_ROUTES: tuple[tuple[str, Mapping[str, Handler]], ...] = (
    (r"^/teachfile/ui$", {"GET": static}),
    (r"^/teachfile/ui/(?P<name>[^/]*)$", {"GET": static}),
    (rf"^{_P}/me$", {"GET": me}),
    (rf"^{_P}/library$", {"GET": library}),
    (rf"^{_P}/cases/(?P<study>[^/]+)$", {"GET": get_case, "PUT": put_case}),
    (rf"^{_P}/cases/(?P<study>[^/]+)/archive$", {"GET": archive}),
    (rf"^{_P}/cases/(?P<study>[^/]+)/nifti$", {"GET": nifti}),
    (rf"^{_P}/series/(?P<series_id>[^/]+)$", {"GET": series}),
    (rf"^{_P}/instances/(?P<instance>[^/]+)/frames/(?P<frame>[^/]+)$", {"GET": frame_pixels}),
    (rf"^{_P}/instances/(?P<instance>[^/]+)/thumbnail$", {"GET": thumbnail}),
    (rf"^{_P}/conferences$", {"GET": get_conferences, "PUT": put_conferences}),
    (rf"^{_P}/quiz$", {"GET": quiz}),
    (rf"^{_P}/nodes$", {"GET": nodes}),
    (rf"^{_P}/nodes/(?P<name>[^/]+)/echo$", {"POST": echo}),
    (rf"^{_P}/retrieve$", {"POST": retrieve}),
    (rf"^{_P}/network$", {"GET": network}),
    (rf"^{_P}/jobs/(?P<job_id>[^/]+)$", {"GET": job}),
)
PREFIXES = ("/teachfile/ui", "/teachfile/portal")


def dispatch(service: Service, req: Request) -> Response:
    import re

    path = req.path if req.path.startswith("/teachfile/ui/") else req.path.rstrip("/")
    for pattern, methods in _ROUTES:
        match = re.match(pattern, path)
        if match is None:
            continue
        handler = methods.get(req.method)
        if handler is None:
            resp = error(405, f"{req.path} answers {','.join(methods)} only")
            resp.body["allow"] = ",".join(methods)
            return resp
        try:
            return handler(service, req, **match.groupdict())
        except PortalError as exc:
            return error(400, str(exc))
    return error(404, f"no such endpoint: {req.path}")
