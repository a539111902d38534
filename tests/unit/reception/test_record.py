"""Case records as DICOM: the node's own KOS and SR pass reception byte for byte; a copy changed
anywhere, or made with another key, is de-identified like any input (its free text removed)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from teachfile.api.tce import build_record, key_image_uids, read_manifest
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pipeline import Reception
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.record import is_own_record, record_updated
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
P, Q = Pseudonymizer(b"k" * 32), Pseudonymizer(b"q" * 32)
RECORD = {"title": "Aortic dissection", "keywords": ["aorta", "CTA"],
          "history": "Tearing chest pain.", "findings": "Intimal flap.",
          "diagnosis": "Stanford type A dissection", "differential": "Intramural hematoma",
          "discussion": "Surgical emergency.", "author": "Teaching team"}


def _reception(pseudo: Pseudonymizer) -> Reception:
    prof = load_profile("teaching", CONFIG)
    return Reception(Deidentifier(prof, pseudo), TranscodePolicy.from_mapping(prof.transcoding),
                     None)


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def stored() -> pydicom.Dataset:
    """A CT as the node stores it (de-identified, sealed)."""
    raw = _bytes(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    decision = _reception(P).process(raw)
    assert decision.store and decision.data
    return pydicom.dcmread(io.BytesIO(decision.data))


def test_own_record_passes_reception_unchanged(stored: pydicom.Dataset) -> None:
    key = [(str(stored.SeriesInstanceUID), str(stored.SOPClassUID), str(stored.SOPInstanceUID))]
    kos, sr = build_record(stored, RECORD, key, P, "2026-12-01T10:00:00+00:00")
    for ds in (kos, sr):
        assert is_own_record(ds, P) and not is_own_record(ds, Q)
        raw = _bytes(ds)
        decision = _reception(P).process(raw)
        assert decision.store and decision.data == raw
        assert decision.transcode_reason == "own-record"
        back = pydicom.dcmread(io.BytesIO(raw))
        assert back.StudyInstanceUID == stored.StudyInstanceUID
        assert back.PatientID == stored.PatientID
        assert record_updated(back) == "2026-12-01T10:00:00+00:00"
    fields = read_manifest(pydicom.dcmread(io.BytesIO(_bytes(sr))))
    assert fields is not None
    assert {k: fields[k] for k in RECORD} == RECORD
    assert key_image_uids(kos) == [str(stored.SOPInstanceUID)]


def test_changed_or_foreign_record_is_deidentified(stored: pydicom.Dataset) -> None:
    _, sr = build_record(stored, RECORD, [], P, "v1")
    sr.ContentSequence[3].TextValue = "Seen by Dr Smith"  # edited after sealing
    assert not is_own_record(sr, P)
    decision = _reception(P).process(_bytes(sr))
    assert decision.store and decision.data
    out = pydicom.dcmread(io.BytesIO(decision.data))
    assert "Smith" not in str(out)
    _, foreign = build_record(stored, RECORD, [], Q, "v1")  # another key
    decision = _reception(P).process(_bytes(foreign))
    assert decision.store and decision.data and b"Intimal flap" not in decision.data


def test_record_uids_are_stable_per_study_and_new_per_version(stored: pydicom.Dataset) -> None:
    a_kos, a_sr = build_record(stored, RECORD, [], P, "v1")
    b_kos, b_sr = build_record(stored, RECORD, [], P, "v2")
    assert a_sr.SeriesInstanceUID == b_sr.SeriesInstanceUID
    assert a_sr.SOPInstanceUID != b_sr.SOPInstanceUID
    assert a_kos.SeriesInstanceUID != a_sr.SeriesInstanceUID
