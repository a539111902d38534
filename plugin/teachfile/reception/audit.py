"""Audit of stored instances for residual identifying data.

The reception pipeline should make every finding impossible; the audit is how an operator (or a
suspicious colleague) checks that claim on what is actually stored, including identifiers they
know from the source system. Findings name the attribute (tag and keyword), never its value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from . import seal
from .identifiers import Identifiers, _dict_vr, dataset_encodings, decode_text, has_identifier
from .profile import Profile
from .pseudonym import Pseudonymizer

#: Values the profile writes for dummy dates and names (``D``): not findings.
_DUMMY_DATES = frozenset({"", "19000101", "00010101"})
_DUMMY_NAMES = frozenset({"", "ANONYMOUS"})


@dataclass(frozen=True)
class Finding:
    code: str
    tag: str = ""
    keyword: str = ""

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "tag": self.tag, "keyword": self.keyword}


def _tag_text(tag: int) -> str:
    t = Tag(tag)
    return f"({t.group:04X},{t.element:04X})"


_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "CS", "AE", "PN", "UR"})
_SINGLE = frozenset({"ST", "LT", "UT", "UR"})


def _walk(ds: Dataset, enc: list[str], bad: list[int],
          depth: int = 0) -> Iterable[tuple[int, str, object]]:
    """Every element at any depth as (tag, VR, value); text decoded strictly in the character
    set in force. An element that cannot be read or decoded is put in ``bad`` and skipped: one
    broken attribute must not blind the audit to the rest."""
    d = ds._dict
    if depth and 0x00080005 in d:
        try:
            enc = dataset_encodings(ds, enc)
        except Exception:  # noqa: BLE001
            bad.append(0x00080005)
    for tag in list(d):
        raw = d[tag]
        try:
            vr = raw.VR
            if vr in (None, "UN"):
                vr = _dict_vr(tag) or "UN"
            if isinstance(raw, RawDataElement) and vr in _TEXT_VRS and vr != "PN" \
                    and raw.value:
                chunks = [raw.value] if vr in _SINGLE else raw.value.split(b"\\")
                texts = [decode_text(c, enc).strip(" \0") for c in chunks]
                yield int(tag), vr, texts if len(texts) > 1 else texts[0]
                continue
            if isinstance(raw, RawDataElement) and vr == "PN" and raw.value:
                for c in raw.value.split(b"\\"):
                    decode_text(c, enc, frozenset({0x5E, 0x3D, 0x0A, 0x0C, 0x0D, 0x09}))
            elem = ds[tag]
            if elem.VR == "SQ":
                for item in elem.value or ():
                    yield from _walk(item, enc, bad, depth + 1)
                continue
            yield int(tag), elem.VR, elem.value
        except Exception:  # noqa: BLE001 - reported as a finding, never raised
            bad.append(int(tag))


def _texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]  # type: ignore[attr-defined]
    return [str(value)]


def audit_dataset(ds: Dataset, pseudo: Pseudonymizer, profile: Profile,
                  identifiers: Iterable[str] = ()) -> list[Finding]:
    """Everything in ``ds`` that a de-identified teaching instance should not carry.

    ``identifiers`` (names, IDs, dates the operator knows from the source system) are
    matched in every script and written form (:mod:`.identifiers`), of any length in CJK
    text. Attributes that cannot be decoded are findings (``undecodable``), not errors."""
    findings: list[Finding] = []
    try:
        removed = ds.get("PatientIdentityRemoved") == "YES"
    except Exception:  # noqa: BLE001
        removed = False
    if not removed:
        findings.append(Finding("identity-not-removed", "(0012,0062)", "PatientIdentityRemoved"))
    try:
        sealed = seal.verify(ds, pseudo)
    except Exception:  # noqa: BLE001
        sealed = False
    if not sealed:
        findings.append(Finding("seal-invalid", "(0012,0063)", "DeidentificationMethod"))
    needles = Identifiers.from_strings(identifiers)
    safe_private = {(p.group, p.creator, p.element) for p in profile.safe_private} \
        if profile.has("retain_safe_private") else set()
    creators: dict[tuple[int, int], str] = {}
    try:
        patient_name = str(ds.get("PatientName", ""))
    except Exception:  # noqa: BLE001
        patient_name = ""
    dates_should_be_dummy = not (profile.has("retain_long_full_dates")
                                 or profile.has("retain_long_modified_dates"))
    bad: list[int] = []
    try:
        enc = dataset_encodings(ds, ["iso8859"])
    except Exception:  # noqa: BLE001
        enc = ["iso8859"]
        bad.append(0x00080005)
    for tag, vr, value in _walk(ds, enc, bad):
        group, element = tag >> 16, tag & 0xFFFF
        keyword = _keyword(tag)
        if group % 2 == 1:
            if 0x0010 <= element <= 0x00FF:
                creators[(group, element)] = str(value)
            else:
                creator = creators.get((group, element >> 8), "")
                if (group, creator, element & 0xFF) not in safe_private:
                    findings.append(Finding("private-attribute", _tag_text(tag), ""))
            continue
        texts = _texts(value)
        if vr == "PN" and tag != 0x00100010:
            if any(t not in _DUMMY_NAMES for t in texts):
                findings.append(Finding("person-name", _tag_text(tag), keyword))
        elif tag == 0x00100010 and patient_name and not patient_name.startswith("TF^"):
            findings.append(Finding("patient-name-not-pseudonym", _tag_text(tag), keyword))
        if vr == "DA" and dates_should_be_dummy and any(t not in _DUMMY_DATES for t in texts):
            findings.append(Finding("date-not-removed", _tag_text(tag), keyword))
        if needles and texts and any(has_identifier(t, needles) for t in texts):
            findings.append(Finding("identifier-match", _tag_text(tag), keyword))
    for tag in bad:
        findings.append(Finding("undecodable", _tag_text(tag), _keyword(tag)))
    return findings


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    try:
        return keyword_for_tag(tag) or ""
    except Exception:  # noqa: BLE001
        return ""
