"""The case record as DICOM, in the manner of IHE's Teaching File and Clinical Trial Export
(TCE) profile: a Key Object Selection "For Teaching" of the key images, and a "Manifest with
Description" (a Basic Text SR, same title) whose TEXT items hold the template fields under the
TCE concept codes. Both live in the case's own study, so sends, exports and backups carry the
record, any DICOM viewer shows it, and another teachfile node reads it back
(:func:`read_manifest`).

Pure: datasets in, datasets out. The study's identifiers are copied from one of its stored
instances (already pseudonyms); the objects are sealed with
:func:`teachfile.reception.record.seal_record`, which makes reception keep them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as Seq
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from ..reception.pseudonym import Pseudonymizer
from ..reception.record import seal_record

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
BASIC_TEXT_SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
RECORD_SERIES_DESCRIPTION = "Teaching file record"
KOS_SERIES_DESCRIPTION = "Teaching file key images"
#: Document title: DCM 113004 "For Teaching" (CID 7010).
FOR_TEACHING = ("113004", "DCM", "For Teaching")
KEY_OBJECT_DESCRIPTION = ("113012", "DCM", "Key Object Description")
#: The template fields and their concept names (IHE TCE, coding scheme IHERADTF; the title as
#: the Key Object Description, keywords one item each).
FIELD_CODES: dict[str, tuple[str, str, str]] = {
    "title": KEY_OBJECT_DESCRIPTION,
    "keywords": ("TCE002", "IHERADTF", "Keywords"),
    "author": ("TCE101", "IHERADTF", "Author's Name"),
    "history": ("TCE104", "IHERADTF", "History"),
    "findings": ("TCE105", "IHERADTF", "Findings"),
    "discussion": ("TCE106", "IHERADTF", "Discussion"),
    "differential": ("TCE107", "IHERADTF", "Differential Diagnosis"),
    "diagnosis": ("TCE108", "IHERADTF", "Diagnosis"),
    "references": ("TCE003", "IHERADTF", "References"),
    "notes": ("TCE004", "IHERADTF", "Notes"),
}
_BY_CODE = {code[0]: name for name, code in FIELD_CODES.items()}
#: Study-level attributes copied from a stored instance of the case.
_STUDY_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
               "PatientIdentityRemoved", "StudyInstanceUID", "StudyDate", "StudyTime",
               "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
               "DeidentificationMethod")
TEXT_MAX = 10240  # UT would allow more; TEXT items stay readable in any viewer


def _code(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _text_item(code: tuple[str, str, str], text: str, relation: str = "CONTAINS") -> Dataset:
    item = Dataset()
    item.RelationshipType = relation
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Seq([_code(code)])
    item.TextValue = text[:TEXT_MAX]
    return item


def record_uids(pseudo: Pseudonymizer, study_uid: str, version: str) -> dict[str, str]:
    """Series UIDs fixed per study (a re-save replaces the record in the same series), instance
    UIDs per version."""
    return {
        "kos_series": pseudo.uid(f"{study_uid}/teachfile-record/kos-series"),
        "sr_series": pseudo.uid(f"{study_uid}/teachfile-record/sr-series"),
        "kos": pseudo.uid(f"{study_uid}/teachfile-record/kos/{version}"),
        "sr": pseudo.uid(f"{study_uid}/teachfile-record/sr/{version}"),
    }


def _base(template: Dataset, sop_class: str, series_uid: str, sop_uid: str, modality: str,
          description: str, number: int) -> Dataset:
    ds = Dataset()
    for key in _STUDY_KEYS:
        if key in template:
            ds[key] = template[key]
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if key not in ds:
            setattr(ds, key, "")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.Manufacturer = "orthanc-teachfile"
    # The study's (already shifted) date: the record adds no date of its own.
    ds.ContentDate = ds.get("StudyDate", "") or ""
    ds.ContentTime = ds.get("StudyTime", "") or ""
    ds.ReferencedPerformedProcedureStepSequence = Seq([])
    ds.PerformedProcedureCodeSequence = Seq([])
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Seq([_code(FOR_TEACHING)])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _evidence(study_uid: str, refs: Sequence[tuple[str, str, str]]) -> Seq:
    """CurrentRequestedProcedureEvidenceSequence: study > series > instances."""
    by_series: dict[str, list[tuple[str, str]]] = {}
    for series_uid, sop_class, sop_uid in refs:
        by_series.setdefault(series_uid, []).append((sop_class, sop_uid))
    study = Dataset()
    study.StudyInstanceUID = study_uid
    series_items = []
    for series_uid, instances in by_series.items():
        s = Dataset()
        s.SeriesInstanceUID = series_uid
        items = []
        for sop_class, sop_uid in instances:
            i = Dataset()
            i.ReferencedSOPClassUID = sop_class
            i.ReferencedSOPInstanceUID = sop_uid
            items.append(i)
        s.ReferencedSOPSequence = Seq(items)
        series_items.append(s)
    study.ReferencedSeriesSequence = Seq(series_items)
    return Seq([study])


def build_record(template: Dataset, record: Mapping[str, Any],
                 key_images: Sequence[tuple[str, str, str]], pseudo: Pseudonymizer,
                 version: str) -> tuple[Dataset, Dataset]:
    """The KOS and the SR for ``record``; ``key_images`` are (series UID, SOP class UID, SOP
    instance UID) of the marked images, ``version`` the record's update time."""
    study_uid = str(template.StudyInstanceUID)
    uids = record_uids(pseudo, study_uid, version)
    title = str(record.get("title") or template.get("StudyDescription", "") or "")

    kos = _base(template, KOS_CLASS, uids["kos_series"], uids["kos"], "KO",
                KOS_SERIES_DESCRIPTION, 9901)
    tmpl = Dataset()
    tmpl.MappingResource, tmpl.TemplateIdentifier = "DCMR", "2010"
    kos.ContentTemplateSequence = Seq([tmpl])
    content = [_text_item(KEY_OBJECT_DESCRIPTION, title)] if title else []
    for _series_uid, sop_class, sop_uid in key_images:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_uid
        item.ReferencedSOPSequence = Seq([ref])
        content.append(item)
    kos.ContentSequence = Seq(content)
    kos.CurrentRequestedProcedureEvidenceSequence = _evidence(study_uid, key_images)
    for attr in ("CompletionFlag", "VerificationFlag", "PerformedProcedureCodeSequence"):
        delattr(kos, attr)  # not in the KOS IOD
    seal_record(kos, pseudo, version)

    sr = _base(template, BASIC_TEXT_SR_CLASS, uids["sr_series"], uids["sr"], "SR",
               RECORD_SERIES_DESCRIPTION, 9902)
    items = []
    for name, code in FIELD_CODES.items():
        value = record.get(name)
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, str) and v.strip():
                items.append(_text_item(code, v.strip()))
    sr.ContentSequence = Seq(items)
    if key_images:
        sr.CurrentRequestedProcedureEvidenceSequence = _evidence(study_uid, key_images)
    seal_record(sr, pseudo, version)
    return kos, sr


def read_manifest(ds: Dataset) -> dict[str, Any] | None:
    """The template fields of a record SR (ours or another TCE manifest with these codes)."""
    if str(ds.get("SOPClassUID", "")) != BASIC_TEXT_SR_CLASS:
        return None
    names = ds.get("ConceptNameCodeSequence") or []
    if not names or str(names[0].get("CodeValue", "")) != FOR_TEACHING[0]:
        return None
    out: dict[str, Any] = {"keywords": []}
    for item in ds.get("ContentSequence") or []:
        if item.get("ValueType") != "TEXT" or not item.get("ConceptNameCodeSequence"):
            continue
        name = _BY_CODE.get(str(item.ConceptNameCodeSequence[0].get("CodeValue", "")))
        if name is None:
            continue
        text = str(item.get("TextValue", ""))
        if name == "keywords":
            out["keywords"].append(text)
        else:
            out[name] = text
    return out


def key_image_uids(ds: Dataset) -> list[str]:
    """The SOP Instance UIDs a record KOS marks as key images."""
    if str(ds.get("SOPClassUID", "")) != KOS_CLASS:
        return []
    return [str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for item in ds.get("ContentSequence") or []
            if item.get("ValueType") == "IMAGE" and item.get("ReferencedSOPSequence")]
