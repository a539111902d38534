"""Refusals a sender can find (``?aet=``) and JSON errors with a reason (no Orthanc)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from teachfile.api import routes as rest
from teachfile.node.roles import required_role
from teachfile.node.service import Service, Settings

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"


def _service(tmp_path: Path) -> Service:
    config = {"StorageDirectory": str(tmp_path / "storage"), "RegisteredUsers": {"admin": "pw"},
              "Teachfile": {"ConfigDirectory": str(CONFIG), "DataDirectory": str(tmp_path),
                            "Testing": {"ForceFailure": "refusal"}}}
    env = {"TEACHFILE_KEY": "ab" * 32, "TEACHFILE_TESTING": "1"}
    return Service(Settings.from_orthanc_config(config, env), env)


def _refuse(svc: Service, aet: str) -> None:
    buf = io.BytesIO()
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(buf, enforce_file_format=True)
    _, tomb = svc.receive(buf.getvalue(), "dicom")
    assert tomb is not None
    svc.cstore_filter(len(tomb), lambda: tomb, aet)


def test_refusals_of_one_calling_aet_with_reason_and_status(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    for aet in ("STORESCU", "OTHER", "STORESCU"):
        _refuse(svc, aet)
    resp = rest.dispatch(svc, rest.Request("GET", "/teachfile/refusals",
                                           {"aet": "STORESCU", "limit": "5"}))
    assert resp.status == 200 and resp.body["count"] == 2
    item = resp.body["refusals"][0]
    assert item["calling_aet"] == "STORESCU" and item["dimse_status"] == "0x0110"
    assert item["explanation"] == "a test-only switch forced this refusal"
    everyone = rest.dispatch(svc, rest.Request("GET", "/teachfile/refusals", {}))
    assert everyone.body["count"] == 3


def test_every_teachfile_error_has_a_reason(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    for req, status, reason in (
            (rest.Request("GET", "/teachfile/nowhere", {}), 404, "not-found"),
            (rest.Request("POST", "/teachfile/status", {}), 405, "method-not-allowed"),
            (rest.Request("GET", "/teachfile/refusals", {"limit": "x"}), 400, "bad-request")):
        resp = rest.dispatch(svc, req)
        assert resp.status == status
        assert resp.body["reason"] == reason and resp.body["error"] and \
            resp.body["status"] == status


def test_the_role_a_request_needs() -> None:
    assert required_role("GET", "/teachfile/status") == "viewer"
    assert required_role("PUT", "/teachfile/cases/abc") == "contributor"
    assert required_role("POST", "/tools/reset") == "admin"
