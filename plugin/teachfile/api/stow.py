"""STOW-RS (PS3.18 10.5) answered by what was stored: ``POST /teachfile/dicom-web/studies``.

The DICOMweb plugin's own STOW-RS (1.7 on Debian bookworm, and still 1.2x) cannot say what the
node did: it posts each part to Orthanc's built-in ``/instances`` and answers with the
*received* UIDs and Retrieve URLs built from them (which do not exist on this node: it stores
pseudonymous UIDs), and with HTTP 200 when the node refused everything (1.7). Orthanc runs a
plugin's chunked STOW handler before any other plugin's route, so the node cannot answer at
``/dicom-web/studies`` itself; this route is the conformant one:

- every stored instance in the Referenced SOP Sequence (0008,1199) with its *stored* SOP Class
  and SOP Instance UIDs and a Retrieve URL (WADO-RS, served by the DICOMweb plugin) that works;
- every refused one in the Failed SOP Sequence (0008,1198) with the UIDs it was sent with and a
  Failure Reason (0008,1197): 0xC000 for bytes the node cannot read, 0x0110 otherwise;
- HTTP 200 when all were stored, 202 when some were, 409 when none was, 400 for a body that is
  not multipart/related.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

import pydicom

from ..errors import UNREADABLE
from .types import OrthancApi

CANNOT_UNDERSTAND, PROCESSING_FAILURE = 0xC000, 0x0110
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_multipart(body: bytes) -> list[tuple[dict[str, str], bytes]] | None:
    """The parts of a multipart/related body, boundary taken from its first delimiter line;
    None when the body is not multipart."""
    start = body.find(b"--")
    if start < 0:
        return None
    line_end = body.find(b"\n", start)
    if line_end < 0:
        return None
    boundary = body[start + 2:line_end].rstrip(b"\r")
    if not boundary or len(boundary) > 200:
        return None
    delim = b"--" + boundary
    parts = []
    for chunk in body[start:].split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:] if chunk.startswith(
            b"\n") else chunk
        m = _HEADER_END.search(chunk)
        if m is None:
            return None
        headers = {}
        for line in chunk[:m.start()].decode("latin-1").splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        content = chunk[m.end():]
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        parts.append((headers, content))
    return parts


def _received_uids(part: bytes) -> tuple[str, str]:
    try:
        ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - unreadable: the failure names no UID
        return "", ""


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def stow(body: bytes, api: OrthancApi, upload: Callable[[bytes], tuple[list[Any], list[str]]],
         wado_root: str) -> tuple[int, dict[str, Any]]:
    """Store each part through ``upload`` (bytes -> (refusals, stored Orthanc IDs)) and build
    the PS3.18 response. ``wado_root`` is the absolute DICOMweb root, ending with '/'."""
    parts = split_multipart(body)
    if not parts:
        return 400, {"error": "the body must be multipart/related with application/dicom parts",
                     "status": 400}
    referenced, failed = [], []
    studies: set[str] = set()
    for headers, content in parts:
        ctype = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
        sop_class, sop_uid = _received_uids(content)
        refusals: list[Any] = []
        stored: list[str] = []
        if ctype == "application/dicom":
            refusals, stored = upload(content)
        if not stored:
            unreadable = ctype != "application/dicom" or (
                bool(refusals) and all(r.reason in UNREADABLE for r in refusals))
            failed.append({"00081150": _uid(sop_class), "00081155": _uid(sop_uid),
                           "00081197": {"vr": "US", "Value": [
                               CANNOT_UNDERSTAND if unreadable else PROCESSING_FAILURE]}})
            continue
        for iid in stored:
            inst = json.loads(api.get(f"/instances/{iid}"))
            series = json.loads(api.get(f"/series/{inst['ParentSeries']}"))
            study = json.loads(api.get(f"/studies/{series['ParentStudy']}"))
            st = study["MainDicomTags"]["StudyInstanceUID"]
            se = series["MainDicomTags"]["SeriesInstanceUID"]
            sop = inst["MainDicomTags"]["SOPInstanceUID"]
            cls = api.get(f"/instances/{iid}/metadata/SopClassUid").decode().strip()
            studies.add(st)
            referenced.append({
                "00081150": _uid(cls), "00081155": _uid(sop),
                "00081190": {"vr": "UR", "Value": [
                    f"{wado_root}studies/{st}/series/{se}/instances/{sop}"]}})
    answer: dict[str, Any] = {}
    if len(studies) == 1:
        answer["00081190"] = {"vr": "UR", "Value": [f"{wado_root}studies/{studies.pop()}"]}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    answer["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    return status, answer
