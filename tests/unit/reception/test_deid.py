"""The de-identification engine over pydicom's bundled files and the PHI corpus (MIDI-B style)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from teachfile.errors import Refusal
from teachfile.reception import seal
from teachfile.reception.deid import IMPLEMENTATION_CLASS_UID, Deidentifier
from teachfile.reception.profile import load_profile, profile_from_mapping
from teachfile.reception.pseudonym import Pseudonymizer

sys.path.insert(0, str(Path(__file__).parents[2]))
from phi_corpus import (  # noqa: E402
    TokenFactory,
    make_phi_corpus,
    plant_all_table_attributes,
    tokens_in,
)

CONFIG = Path(__file__).parents[3] / "orthanc-config"
KEY, OTHER_KEY = b"\x01" * 32, b"\x02" * 32
PROFILES = ("teaching", "basic")
TEST_FILES = sorted(
    p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*")
    if p.is_file() and p.suffix.lower() in (".dcm", "")
)
TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS"}


@pytest.fixture(scope="module", params=PROFILES)
def engine(request: pytest.FixtureRequest) -> Deidentifier:
    return Deidentifier(load_profile(request.param, CONFIG), Pseudonymizer(KEY))


@pytest.fixture(scope="module")
def corpus() -> dict[str, object]:
    return {i.name: i for i in make_phi_corpus()}


def _roundtrip(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _read(raw: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(raw), force=True)


def _deid_bytes(engine: Deidentifier, raw: bytes) -> bytes:
    return _roundtrip(engine.deidentify(_read(raw)))


# ------------------------------------------------------------------ every bundled file
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_bundled_file(engine: Deidentifier, path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = pydicom.dcmread(path, force=True)
            _ = src.get("SOPClassUID")
    except Exception:
        pytest.skip("pydicom cannot parse this file")
    kws = ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID", "SeriesInstanceUID")
    before = {kw: str(src.get(kw, "") or "") for kw in kws}
    try:
        out = engine.deidentify(src)
    except Refusal as r:
        assert r.reason in ("missing-uid", "unsupported")
        for v in before.values():
            assert not v or v not in str(r)
        return
    back = _read(_roundtrip(out))
    text = tokens_in(back, [v for v in before.values() if len(v) >= 4])
    assert not text
    assert back.PatientIdentityRemoved == "YES"
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert seal.verify(back, engine.pseudonymizer)
    for elem in back.iterall():
        assert not elem.tag.is_private
        if elem.VR == "PN" and elem.tag != 0x00100010 and elem.value:
            assert str(elem.value) in ("ANONYMOUS", "")


# ------------------------------------------------------------------ the PHI corpus
@pytest.mark.parametrize("name", [n for n, _ in __import__("phi_corpus").SOURCES])
def test_corpus_no_token_survives(engine: Deidentifier, corpus: dict, name: str) -> None:
    inst = corpus[name]
    raw = inst.raw()
    assert tokens_in(raw, inst.known) >= set(inst.tokens) | set(inst.dates)
    out = _deid_bytes(engine, raw)
    assert tokens_in(out, inst.known) == set()
    assert tokens_in(_read(out), inst.known) == set()


def _allowed(engine: Deidentifier, location: str) -> bool:
    """Whether the profile may leave a planted value: kept, cleaned text, recursed sequence."""
    tag = int(location[1:5] + location[6:10], 16)
    act, vr = engine._rules.get(tag), dictionary_VR(tag)
    if act == "K":
        return True
    if act == "C" and vr in TEXT_VRS:
        return True  # cleaning removes identifiers, not arbitrary words
    return vr == "SQ" and act in ("K", "C", "D", "U") and tag != 0x00401101


def test_every_table_attribute(engine: Deidentifier) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    planted = plant_all_table_attributes(ds, TokenFactory())
    raw = _roundtrip(ds)
    assert tokens_in(raw, planted) == set(planted)
    left = tokens_in(_deid_bytes(engine, raw), planted)
    unexpected = sorted(planted[v] for v in left if not _allowed(engine, planted[v]))
    assert unexpected == []
    # Every UID planted was replaced, at every level.
    assert not [v for v in left if v.startswith("1.2.826.0.1.3680043.10.54321.")]


# ------------------------------------------------------------------ MIDI-B style checks
@pytest.fixture(scope="module")
def teaching() -> Deidentifier:
    return Deidentifier(load_profile("teaching", CONFIG), Pseudonymizer(KEY))


def _deid(engine: Deidentifier, inst: object) -> Dataset:
    return _read(_deid_bytes(engine, inst.raw()))


def test_dates_shifted_consistently(teaching: Deidentifier, corpus: dict) -> None:
    outs = [_deid(teaching, corpus[n]) for n in ("rtplan", "rtstruct", "rtdose")]
    src = corpus["rtplan"].dataset
    assert {o.StudyDate for o in outs} != {src.StudyDate}
    assert len({o.StudyDate for o in outs}) == 1
    assert {o.PatientBirthDate for o in outs} == {""}  # no option keeps the birth date
    from datetime import date

    def d(s: str) -> date:
        return date(int(s[:4]), int(s[4:6]), int(s[6:]))

    # Intervals survive: study to content date is the same before and after.
    assert d(outs[0].ContentDate) - d(outs[0].StudyDate) == d(src.ContentDate) - d(src.StudyDate)
    assert outs[0].LongitudinalTemporalInformationModified == "MODIFIED"


def _patient_of(teaching: Deidentifier, pid: str, issuer: str | None = None,
                qualifier: str | None = None) -> tuple[str, str, str]:
    """(Patient ID, Patient Name, Study Date) after de-identification of a minimal instance."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.1", "1.2.3.2", "1.2.3.3"
    ds.PatientID, ds.PatientName, ds.StudyDate = pid, "Same^Name", "20200101"
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    if qualifier is not None:
        item = Dataset()
        item.UniversalEntityID = qualifier
        ds.IssuerOfPatientIDQualifiersSequence = [item]
    out = teaching.deidentify(ds)
    return str(out.PatientID), str(out.PatientName), str(out.StudyDate)


def test_patient_key_is_the_patient_id_alone(teaching: Deidentifier) -> None:
    """Issuer of Patient ID given on some instances of a study and not on others must not split
    the study: one pseudonymous patient, one date offset, whatever the issuer says. (Two
    hospitals' equal IDs therefore share a pseudonym: documented in the README.)"""
    plain = _patient_of(teaching, "12345")
    assert _patient_of(teaching, "12345", "HOSP-A") == plain
    assert _patient_of(teaching, "12345", "HOSP-B") == plain
    assert _patient_of(teaching, "12345", qualifier="1.2.826.0.1.3680043.2.1") == plain
    assert _patient_of(teaching, "12346") != plain
    assert plain[0] == teaching.pseudonymizer.patient_id("id:12345")


def test_basic_removes_dates_and_descriptions(corpus: dict) -> None:
    basic = Deidentifier(load_profile("basic", CONFIG), Pseudonymizer(KEY))
    out = _deid(basic, corpus["ct"])
    assert out.StudyDate == "" and out.PatientBirthDate == ""
    assert "StudyDescription" not in out and "ImageComments" not in out
    assert "PatientAge" not in out


def test_descriptions_cleaned_not_dropped(teaching: Deidentifier, corpus: dict) -> None:
    out = _deid(teaching, corpus["ct"])
    assert out.StudyDescription == "CT CHEST"
    assert out.SeriesDescription == "AXIAL MRN"
    assert out.ImageComments.startswith("Follow-up of")
    assert out.PatientSex == corpus["ct"].dataset.PatientSex  # patient characteristics kept


def test_uids_consistent_across_study_and_runs(corpus: dict) -> None:
    a = Deidentifier(load_profile("teaching", CONFIG), Pseudonymizer(KEY))
    b = Deidentifier(load_profile("basic", CONFIG), Pseudonymizer(KEY))
    c = Deidentifier(load_profile("teaching", CONFIG), Pseudonymizer(OTHER_KEY))
    plan, struct, dose = (_deid(a, corpus[n]) for n in ("rtplan", "rtstruct", "rtdose"))
    src = corpus["rtplan"].dataset
    assert plan.StudyInstanceUID == struct.StudyInstanceUID == dose.StudyInstanceUID
    assert plan.StudyInstanceUID != src.StudyInstanceUID
    assert plan.SOPInstanceUID != src.SOPInstanceUID
    assert plan.PatientID == struct.PatientID == dose.PatientID != src.PatientID
    again = _deid(b, corpus["rtplan"])  # another run, another process's engine, same key
    assert again.SOPInstanceUID == plan.SOPInstanceUID and again.PatientID == plan.PatientID
    other = _deid(c, corpus["rtplan"])
    assert other.SOPInstanceUID != plan.SOPInstanceUID and other.PatientID != plan.PatientID


def test_references_remapped(teaching: Deidentifier, corpus: dict) -> None:
    plan, struct, dose = (_deid(teaching, corpus[n]) for n in ("rtplan", "rtstruct", "rtdose"))
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == struct.SOPInstanceUID
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPClassUID == struct.SOPClassUID
    ct = _deid(teaching, corpus["ct"])
    ref = ct.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == ct.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    # Frame of reference used inside the RT structure set matches the mapping of the source.
    src_for = corpus["rtstruct"].dataset.ReferencedFrameOfReferenceSequence[0]
    out_for = struct.ReferencedFrameOfReferenceSequence[0]
    assert out_for.FrameOfReferenceUID == teaching.pseudonymizer.uid(src_for.FrameOfReferenceUID)


def test_required_attributes_retained(teaching: Deidentifier, corpus: dict) -> None:
    for name in ("ct", "multiframe", "colour", "j2k"):
        src, out = corpus[name].dataset, _deid(teaching, corpus[name])
        for kw in ("SOPClassUID", "Modality", "Rows", "Columns", "BitsAllocated",
                   "PhotometricInterpretation", "PixelData"):
            assert out[kw].value == src[kw].value, (name, kw)
        assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113105", "113107", "113108"]
        assert out.DeidentificationMethod[0] == "teaching 1"


def test_idempotent_on_sealed_output(teaching: Deidentifier, corpus: dict) -> None:
    first = _deid(teaching, corpus["ct"])
    assert seal.verify(first, teaching.pseudonymizer)
    first.InstitutionName = "ADDED BY MODIFY"  # as an Orthanc /modify could
    first.add_new(0x00091010, "LO", "PRIVATE AFTER")
    second = _read(_deid_bytes(teaching, _roundtrip(first)))
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
               "PatientName", "StudyDate", "PatientBirthDate", "ContentDate"):
        assert str(second[kw].value) == str(first[kw].value), kw
    assert second.InstitutionName != "ADDED BY MODIFY"
    assert 0x00091010 not in second
    assert seal.verify(second, teaching.pseudonymizer)


def test_forged_or_stale_seal_does_not_skip(teaching: Deidentifier, corpus: dict) -> None:
    forger = Pseudonymizer(OTHER_KEY)
    src = corpus["ct"].dataset.copy()
    src.DeidentificationMethod = "teaching 1"
    seal.seal(src, forger)
    out = _deid_bytes(teaching, _roundtrip(src))
    assert tokens_in(out, corpus["ct"].known) == set()
    back = _read(out)
    assert back.StudyDate != src.StudyDate and back.PatientID != src.PatientID
    # Stale: a sealed output whose Patient ID was changed afterwards is re-pseudonymised.
    sealed = _deid(teaching, corpus["ct"])
    sealed.PatientID = "CHANGED"
    again = _read(_deid_bytes(teaching, _roundtrip(sealed)))
    assert again.PatientID != "CHANGED" and again.StudyDate != sealed.StudyDate


def test_missing_uid_refused_without_values(teaching: Deidentifier) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    name = str(ds.PatientName)
    del ds.SOPInstanceUID
    with pytest.raises(Refusal) as exc:
        teaching.deidentify(ds)
    assert exc.value.reason == "missing-uid" and name not in str(exc.value)


class _BrokenPseudonymizer(Pseudonymizer):
    def uid(self, u: str) -> str:
        raise ValueError(f"boom {u}")


def test_internal_error_is_a_refusal() -> None:
    eng = Deidentifier(load_profile("teaching", CONFIG), _BrokenPseudonymizer(KEY))
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    uid = ds.SOPInstanceUID
    with pytest.raises(Refusal) as exc:
        eng.deidentify(ds)
    assert exc.value.reason == "deid-error" and uid not in str(exc.value)
    assert exc.value.__cause__ is None


def test_safe_private_retained_only_on_list() -> None:
    prof = profile_from_mapping({
        "name": "sp", "version": 1, "options": {"retain_safe_private": True},
        "safe_private": ["0019,SAFE CREATOR,10"],
    })
    eng = Deidentifier(prof, Pseudonymizer(KEY))
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    for k in [e.tag for e in ds if e.tag.is_private]:
        del ds[k]
    blk = ds.private_block(0x0019, "SAFE CREATOR", create=True)
    blk.add_new(0x10, "DS", "1.5")
    blk.add_new(0x11, "LO", "PHIQSAFEXX")
    other = ds.private_block(0x0021, "OTHER", create=True)
    other.add_new(0x10, "LO", "PHIQOTHERX")
    out = _read(_roundtrip(eng.deidentify(ds)))
    assert out[0x00191010].value == "1.5" and out[0x00190010].value == "SAFE CREATOR"
    assert 0x00191011 not in out and 0x00210010 not in out and 0x00211010 not in out


# ------------------------------------------------------------------ IOD validity
DCIODVFY = shutil.which("dciodvfy") or ("/usr/bin/dciodvfy" if Path("/usr/bin/dciodvfy").exists()
                                        else None)


def _errors(path: Path) -> set[str]:
    res = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (res.stdout + res.stderr).splitlines()
    errs = set()
    for line in lines:
        if line.startswith("Error"):
            line = re.sub(r"\b\d+(?:\.\d+){2,}\b", "<uid>", line)  # UIDs are remapped
            errs.add(re.sub(r"\s+", " ", line))
    return errs


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed")
@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "test-SR.dcm", "SC_rgb.dcm",
     "emri_small.dcm"],
)
def test_dciodvfy_no_new_errors(engine: Deidentifier, name: str, tmp_path: Path) -> None:
    src = Path(pydicom.data.get_testdata_file(name))
    ds = _read(src.read_bytes())
    if not ds.get("StudyInstanceUID"):
        pytest.skip("no Study Instance UID in the source")
    fixed = tmp_path / "in.dcm"
    fixed.write_bytes(_roundtrip(ds))
    out = tmp_path / "out.dcm"
    out.write_bytes(_deid_bytes(engine, fixed.read_bytes()))
    new = _errors(out) - _errors(fixed)
    assert not new
