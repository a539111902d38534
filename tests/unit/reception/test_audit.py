"""The audit finds what reception should have removed, and nothing in reception's output."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from teachfile.reception.audit import audit_dataset
from teachfile.reception.deid import Deidentifier
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
KEY = bytes(range(32))


def _codes(findings) -> set[str]:
    return {f.code for f in findings}


def test_raw_instance_has_findings_and_its_deidentified_form_has_none() -> None:
    profile = load_profile("teaching", CONFIG)
    pseudo = Pseudonymizer(KEY)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    name = str(ds.PatientName)
    raw_findings = audit_dataset(ds, pseudo, profile, [name])
    assert {"identity-not-removed", "seal-invalid", "identifier-match",
            "patient-name-not-pseudonym"} <= _codes(raw_findings)
    from teachfile.reception import seal

    clean = Deidentifier(profile, pseudo).deidentify(ds)
    seal.seal(clean, pseudo)
    assert audit_dataset(clean, pseudo, profile, [name]) == []


def test_private_attributes_and_dates_are_reported_by_tag_not_value() -> None:
    profile = load_profile("basic", CONFIG)
    pseudo = Pseudonymizer(KEY)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds = Deidentifier(profile, pseudo).deidentify(ds)
    block = ds.private_block(0x0011, "SNEAKY", create=True)
    block.add_new(0x01, "LO", "SECRET VALUE")
    ds.AcquisitionDate = "20200101"
    findings = audit_dataset(ds, pseudo, profile)
    codes = _codes(findings)
    assert "private-attribute" in codes and "date-not-removed" in codes
    assert all("SECRET" not in str(f.as_json()) for f in findings)
