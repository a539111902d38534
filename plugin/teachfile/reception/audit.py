"""Audit of stored instances for residual identifying data.

The reception pipeline should make every finding impossible; the audit is how an operator (or a
suspicious colleague) checks that claim on what is actually stored, including identifiers they
know from the source system. Findings name the attribute (tag and keyword), never its value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from . import seal
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


def _walk(ds: Dataset, depth: int = 0) -> Iterable[tuple[int, str, object]]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _walk(item, depth + 1)
            continue
        yield int(elem.tag), elem.VR, elem.value


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
    """Everything in ``ds`` that a de-identified teaching instance should not carry."""
    findings: list[Finding] = []
    if ds.get("PatientIdentityRemoved") != "YES":
        findings.append(Finding("identity-not-removed", "(0012,0062)", "PatientIdentityRemoved"))
    if not seal.verify(ds, pseudo):
        findings.append(Finding("seal-invalid", "(0012,0063)", "DeidentificationMethod"))
    needles = [s.strip().upper() for s in identifiers if s and len(s.strip()) >= 3]
    safe_private = {(p.group, p.creator, p.element) for p in profile.safe_private} \
        if profile.has("retain_safe_private") else set()
    creators: dict[tuple[int, int], str] = {}
    patient_name = str(ds.get("PatientName", ""))
    dates_should_be_dummy = not (profile.has("retain_long_full_dates")
                                 or profile.has("retain_long_modified_dates"))
    for tag, vr, value in _walk(ds):
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
        if needles and texts:
            upper = " ".join(texts).upper()
            if any(n in upper for n in needles):
                findings.append(Finding("identifier-match", _tag_text(tag), keyword))
    return findings


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    try:
        return keyword_for_tag(tag) or ""
    except Exception:  # noqa: BLE001
        return ""
