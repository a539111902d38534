"""STOW-RS answered by what was stored (api/stow.py), with a fake internal API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from teachfile.api.stow import split_multipart, stow


def _multipart(parts: list[bytes], boundary: str = "b-1") -> bytes:
    return b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p
                    + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()


def test_split_multipart() -> None:
    parts = split_multipart(_multipart([b"one\r\n--not-the-end", b"two"]))
    assert parts is not None
    assert [c for _, c in parts] == [b"one\r\n--not-the-end", b"two"]
    assert parts[0][0]["content-type"] == "application/dicom"
    assert split_multipart(b"plain text") is None


@dataclass
class _Refusal:
    reason: str


class _Api:
    def get(self, uri: str) -> bytes:
        if uri.endswith("/metadata/SopClassUid"):
            return b"1.2.840.10008.5.1.4.1.1.2"
        kind, ident = uri.strip("/").split("/")[:2]
        out: dict[str, Any] = {
            "instances": {"ParentSeries": "se", "MainDicomTags": {"SOPInstanceUID": "2.25.3"}},
            "series": {"ParentStudy": "st", "MainDicomTags": {"SeriesInstanceUID": "2.25.2"}},
            "studies": {"ParentPatient": "p", "MainDicomTags": {"StudyInstanceUID": "2.25.1"}},
        }[kind]
        return json.dumps(out).encode()

    def post(self, uri: str, body: bytes) -> bytes:
        raise AssertionError

    def put(self, uri: str, body: bytes) -> bytes:
        raise AssertionError

    def delete(self, uri: str) -> None:
        raise AssertionError


def _upload(part: bytes) -> tuple[list[Any], list[str]]:
    if part == b"good":
        return [], ["iid"]
    if part == b"short":
        return [_Refusal("pixel-data-short")], []
    return [_Refusal("burned-in")], []


def test_status_and_sequences_follow_what_was_stored() -> None:
    root = "http://node/dicom-web/"
    status, answer = stow(_multipart([b"good"]), _Api(), _upload, root)
    assert status == 200 and "00081198" not in answer
    (ref,) = answer["00081199"]["Value"]
    assert ref["00081155"]["Value"] == ["2.25.3"]
    assert ref["00081190"]["Value"] == [
        root + "studies/2.25.1/series/2.25.2/instances/2.25.3"]
    assert answer["00081190"]["Value"] == [root + "studies/2.25.1"]
    status, answer = stow(_multipart([b"good", b"short", b"burned"]), _Api(), _upload, root)
    assert status == 202
    reasons = [f["00081197"]["Value"][0] for f in answer["00081198"]["Value"]]
    assert reasons == [0xC000, 0x0110]
    status, answer = stow(_multipart([b"short"]), _Api(), _upload, root)
    assert status == 409 and answer["00081199"]["Value"] == []
    assert stow(b"nothing", _Api(), _upload, root)[0] == 400
