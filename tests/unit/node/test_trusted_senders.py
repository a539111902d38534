"""A workstation an admin trusts to clean its captures: what the OCR gate would refuse is stored
when it comes by C-STORE from that AET, and only then."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest

from captures import captures
from teachfile.errors import ConfigError
from teachfile.node.service import STATUS_PROCESSING_FAILURE, UNSTORABLE, Service, Settings
from teachfile.reception.pipeline import TRUSTED_METHOD_NOTE

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
KEY = "ab" * 32
MODALITIES = {"osirix": ["OSIRIX", "127.0.0.1", 11112],
              "ws": {"AET": "WS2", "Host": "127.0.0.1", "Port": 104}}


def _config(tmp_path: Path, trusted: Any) -> dict[str, Any]:
    return {"StorageDirectory": str(tmp_path / "storage"), "DicomModalities": MODALITIES,
            "DicomCheckModalityHost": True,
            "Teachfile": {"ConfigDirectory": str(CONFIG), "DataDirectory": str(tmp_path),
                          "TrustedCaptureSenders": trusted}}


def _service(tmp_path: Path, reads: list[str]) -> Service:
    env = {"TEACHFILE_KEY": KEY}
    svc = Service(Settings.from_orthanc_config(_config(tmp_path, ["OSIRIX", "WS2"]), env), env)
    svc.reception.text_reader = lambda ds: list(reads)  # what tesseract "reads"
    return svc


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("trusted, message", [
    (["NOBODY"], "not configured in DicomModalities: NOBODY"),
    ("OSIRIX", "must be a list"),
    ([""], "must be a list"),
])
def test_only_configured_modalities_can_be_trusted(tmp_path: Path, trusted: Any,
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_orthanc_config(_config(tmp_path, trusted), {})


def test_a_trusted_sender_stores_what_ocr_would_refuse(tmp_path: Path) -> None:
    svc = _service(tmp_path, ["W", "400"])  # window/level text the workstation leaves
    raw = _bytes(captures()["clean-grey"])
    action, data = svc.receive(raw, "dicom")
    assert action == "modify" and data and data != UNSTORABLE
    assert svc.cstore_filter(len(data), lambda: data, "OSIRIX") == 0
    stored = pydicom.dcmread(io.BytesIO(data))
    assert TRUSTED_METHOD_NOTE in list(stored.DeidentificationMethod)
    assert svc.state.snapshot()["pixels_checked_by_reason"] == {"trusted-sender": 1}

    # The same capture from another AET, or by REST: refused, saying why.
    action, data = svc.receive(raw, "dicom")
    assert svc.cstore_filter(len(data), lambda: data, "STRANGER") == STATUS_PROCESSING_FAILURE
    assert svc.receive(raw, "rest") == ("modify", UNSTORABLE)
    refusals = svc.state.refusals()
    assert [(r["origin"], r["calling_aet"]) for r in refusals] == [("rest", None),
                                                                  ("dicom", "STRANGER")]
    assert {r["reason"] for r in refusals} == {"burned-in"}
    assert all(r["detail"].endswith(";no-rule;ocr-found-text") for r in refusals)
    assert "400" not in str(refusals)  # what OCR read is told to nobody


def test_ocr_without_text_needs_no_trust(tmp_path: Path) -> None:
    svc = _service(tmp_path, [])
    action, data = svc.receive(_bytes(captures()["clean-grey"]), "dicom")
    assert svc.cstore_filter(len(data), lambda: data, "ANYONE") == 0
    assert svc.state.snapshot()["pixels_checked_by_reason"] == {"ocr-no-text": 1}


def test_bytes_other_than_prepared_are_refused(tmp_path: Path) -> None:
    svc = _service(tmp_path, ["TEXT"])
    _, data = svc.receive(_bytes(captures()["clean-grey"]), "dicom")
    other = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    assert svc.cstore_filter(len(other), lambda: other, "OSIRIX") == STATUS_PROCESSING_FAILURE
