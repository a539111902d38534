"""Regressions from the review of the engine: each test is an attack that once got through."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from teachfile.errors import safe_detail
from teachfile.reception.deid import Deidentifier, _shift_date
from teachfile.reception.pipeline import Reception
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"


@pytest.fixture
def reception() -> Reception:
    prof = load_profile("teaching", CONFIG)
    return Reception(Deidentifier(prof, Pseudonymizer(b"k" * 32)),
                     TranscodePolicy.from_mapping(prof.transcoding), None)


def _sr() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID, ds.StudyInstanceUID = "1.2.3.4.5.6", "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.PatientID, ds.PatientName, ds.StudyDate = "123456", "DOE^JOHN", "20210315"
    ds.Modality = "SR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _run(reception: Reception, ds: Dataset) -> Dataset:
    decision = reception.process(_bytes(ds))
    assert decision.store, decision.reason
    return pydicom.dcmread(io.BytesIO(decision.data))


def test_dates_added_to_sealed_output_are_shifted(reception: Reception) -> None:
    out = _run(reception, _sr())
    assert out.StudyDate != "20210315"
    out.StudyDate = "20210315"
    out.AcquisitionDateTime = "20210315101010"
    item = Dataset()
    item.ObservationDateTime = "20210315101010"
    out.ContentSequence = [item]
    again = _run(reception, out)
    text = str(again)
    assert "20210315" not in text


def test_a_seal_copied_onto_another_header_does_not_keep_its_dates(reception: Reception) -> None:
    out = _run(reception, _sr())
    other = _sr()
    other.StudyDate = "20220909"
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
               "PatientName", "DeidentificationMethod"):
        setattr(other, kw, out.get(kw))
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    assert "20220909" not in str(_run(reception, other))


def test_annotation_text_inside_a_dummied_sequence_is_not_kept(reception: Reception) -> None:
    ds = _sr()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.Modality = "PR"
    text = Dataset()
    text.UnformattedTextValue = "DOE^JOHN MRN 123456 DOB 01/01/1970"
    text.AnchorPointAnnotationUnits = "PIXEL"
    layer = Dataset()
    layer.GraphicLayer = "L1"
    layer.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [layer]
    out = str(_run(reception, ds))
    assert "DOE" not in out and "123456" not in out


def test_urls_and_nested_marks_are_removed(reception: Reception) -> None:
    ds = _sr()
    ds.RetrieveURL = "https://pacs.example/wado/studies/1.2.3.4?patient=123456"
    ref = Dataset()
    ref.RetrieveURL = "https://pacs.example/x?patient=123456"
    ref.DeidentificationMethod = "DOE^JOHN 123456"
    ds.ReferencedSeriesSequence = [ref]
    out = _run(reception, ds)
    assert "123456" not in str(out) and "pacs.example" not in str(out)
    assert out.DeidentificationMethod  # the top-level mark is the node's own


@pytest.mark.parametrize("vr,value,expected", [
    ("DA", "20210315", "20210305"),
    ("DA", "20210315-20210320", "20210305-20210310"),
    ("DA", "20210315-", "20210305-"),
    ("DA", "-20210315", "-20210305"),
    ("DA", "20210315 DOE^JOHN", "19000101"),
    ("DA", "2021.03.15", "19000101"),
    ("DT", "20210315101010.123+0100", "20210305101010.123+0100"),
    ("DT", "2021", "2020"),
    ("DT", "2021-03-15 10:10", "19000101000000"),
    ("DT", "20210315101010-20210316", "20210305101010-20210306"),
])
def test_dates_are_shifted_only_when_well_formed(vr: str, value: str, expected: str) -> None:
    assert _shift_date(value, vr, -10) == expected


@pytest.mark.parametrize("detail,expected", [
    ("unsupported-syntax 1.2.840.10008.1.2.4.100", "unsupported-syntax 1.2.840.10008.1.2.4.100"),
    ("photometric DOE^JOHN", "photometric <value>"),
    ("ValueError", "ValueError"),
    ("likely:ultrasound+burned-in-annotation;no-rule",
     "likely:ultrasound+burned-in-annotation;no-rule"),
    ("codec-unavailable 1.2.3.4.123456", "codec-unavailable <value>"),
    ("SOPClassUID", "SOPClassUID"),
    ("photometric YBR_FULL_422", "photometric YBR_FULL_422"),
])
def test_refusal_details_keep_only_known_words(detail: str, expected: str) -> None:
    assert safe_detail(detail) == expected
