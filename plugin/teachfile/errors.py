"""One error hierarchy for the whole package.

A :class:`Refusal` carries only a reason *code* (a short, fixed, PHI-free string such as
``"parse-error"``), so that it can be logged, counted and shown to a sender without any risk of
echoing an identifying value. Messages built from dataset values must never be put in one.
"""

from __future__ import annotations

import re


class TeachfileError(Exception):
    """Base class of every error the package raises on purpose."""


class Refusal(TeachfileError):
    """An instance that cannot be made safe; it must not be stored.

    ``reason`` is a short code from a fixed vocabulary (see :data:`REASONS`); ``detail`` is an
    optional PHI-free hint (for example a tag number or a transfer syntax UID), never a value.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigError(TeachfileError):
    """The node's configuration (profile, rules, key, roster) is unusable."""


#: The reason codes a refusal may carry. Keep them short, stable and free of data values.
REASONS: dict[str, str] = {
    "parse-error": "the bytes are not a readable DICOM instance",
    "missing-uid": "a required UID (SOP Class, SOP Instance, Study, Series) is missing",
    "deid-error": "de-identification failed on this instance",
    "unsupported": "the instance uses something the profile cannot make safe",
    "burned-in": "the pixels may carry identifying text and no pixel rule cleans them",
    "pixel-error": "cleaning the pixels failed",
    "transcode-error": "transcoding failed in a way that could not fall back safely",
    "key-mismatch": "this node's key differs from the cluster's: storing would split studies",
    "case-store-error": "the node's case records cannot be read: storing would lose a case title",
    "forced-failure": "a test-only switch forced this refusal",
    "internal-error": "an unexpected error in the reception pipeline",
    # Structure of the received bytes (reception/check.py): refused before parsing, never
    # repaired, because a forgiving reader and the engine may disagree on what the bytes hold.
    "bad-structure": "the element stream is not well formed (VR code, item, delimiter, trailing "
                     "bytes)",
    "length-overrun": "an element's length runs past its container, or a text value holds "
                      "binary bytes (its length swallowed the elements after it)",
    "bad-length": "an element's length does not fit its VR",
    "vr-mismatch": "an explicit VR disagrees with the DICOM dictionary (e.g. a sequence sent as "
                   "UT, OB or UN)",
    "bad-value": "a value that its VR does not allow",
    "pixel-data-short": "pixel data shorter than Rows x Columns x frames x samples x bits, or "
                        "encapsulated fragments truncated or missing",
    "undecodable-text": "text that does not decode in the declared Specific Character Set",
    # The check of the bytes about to be stored: the node's own output failed a strict reader.
    "output-invalid": "the de-identified bytes failed the strict check (VR, length, value)",
    "output-not-kept": "the de-identified bytes hold an element the profile does not keep",
    "output-leak": "the de-identified bytes still hold one of the instance's identifiers",
}

#: Reasons that blame the received bytes themselves: C-STORE status 0xC000 (cannot
#: understand) and HTTP 400, where other refusals are 0x0110 and 422.
UNREADABLE: frozenset[str] = frozenset({
    "parse-error", "bad-structure", "length-overrun", "bad-length", "vr-mismatch", "bad-value",
    "pixel-data-short", "undecodable-text",
})


_OWN_WORD = re.compile(r"^[a-z][a-z0-9:+;_.-]*$")
_STANDARD_UID = re.compile(r"^1\.2\.840\.10008\.[0-9.]+$")
_SMALL_NUMBER = re.compile(r"^\d{1,3}$")
_CODE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*(Error|Exception|Warning|Interrupt|Exit)$")
_PHOTOMETRIC = frozenset({
    "MONOCHROME1", "MONOCHROME2", "PALETTE", "COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
    "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "XYB",
})


def safe_detail(detail: str) -> str:
    """``detail`` with every word that could come from the received data replaced by
    ``<value>``: only the project's own lower-case vocabulary, exception class names, DICOM
    keywords, standard (1.2.840.10008) UIDs, photometric names and small numbers stay. Refusal
    details reach logs, ``/teachfile/refusals`` and HTTP answers; a sender must not be able to
    put a name there."""
    from pydicom.datadict import keyword_dict

    out = []
    for word in str(detail).split():
        if (_OWN_WORD.match(word) or _STANDARD_UID.match(word) or _SMALL_NUMBER.match(word)
                or _CODE_NAME.match(word) or word in _PHOTOMETRIC or word in keyword_dict):
            out.append(word)
        else:
            out.append("<value>")
    return " ".join(out)[:200]
