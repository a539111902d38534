"""The seal: valid for the node's own output only."""

from __future__ import annotations

from pydicom.dataset import Dataset

from teachfile.reception import seal
from teachfile.reception.pseudonym import Pseudonymizer

P, Q = Pseudonymizer(b"k" * 32), Pseudonymizer(b"q" * 32)


def _ds() -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.1", "2.25.2", "2.25.3"
    ds.PatientID, ds.PatientName = "TF1", "TF^A"
    ds.DeidentificationMethod = "teaching 1"
    return ds


def test_seal_verifies() -> None:
    ds = _ds()
    assert not seal.verify(ds, P)
    seal.seal(ds, P)
    assert seal.verify(ds, P)
    assert ds.DeidentificationMethod[0] == "teaching 1"
    seal.seal(ds, P)  # resealing replaces, never accumulates
    assert len(ds.DeidentificationMethod) == 2 and seal.verify(ds, P)


def test_other_key_fails() -> None:
    ds = _ds()
    seal.seal(ds, Q)
    assert not seal.verify(ds, P)


def test_changed_identifier_fails() -> None:
    for kw, value in [("PatientID", "X"), ("StudyInstanceUID", "2.25.9"), ("PatientName", "A^B"),
                      ("SOPInstanceUID", "2.25.8"), ("SeriesInstanceUID", "2.25.7")]:
        ds = _ds()
        seal.seal(ds, P)
        setattr(ds, kw, value)
        assert not seal.verify(ds, P), kw


def test_changed_profile_text_and_forgery_fail() -> None:
    ds = _ds()
    seal.seal(ds, P)
    ds.DeidentificationMethod = ["other 2", ds.DeidentificationMethod[1]]
    assert not seal.verify(ds, P)
    ds = _ds()
    ds.DeidentificationMethod = ["teaching 1", "TEACHFILE-SEAL:" + "0" * 32]
    assert not seal.verify(ds, P)
    ds = _ds()
    seal.seal(ds, P)
    ds.DeidentificationMethod = [*ds.DeidentificationMethod, ds.DeidentificationMethod[1]]
    assert not seal.verify(ds, P)
