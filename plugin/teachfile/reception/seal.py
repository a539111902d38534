"""The node's unforgeable mark on its own output.

The seal is an HMAC, under the node key, over the pseudonymous identifiers of the instance (SOP,
Study and Series Instance UIDs, Patient ID, Patient Name), every date and date-time anywhere in
it (shifted dates are not re-shifted on sealed input, so a date added after sealing must break
the seal), and the profile name and version. It is
stored as an extra value of De-identification Method (0012,0063), "TEACHFILE-SEAL:<32 hex>", a
public attribute, so the "remove private attributes" rule never strips it and no private block
has to be declared safe. A valid seal tells the engine that identifiers are already pseudonyms
(re-mapping them would split studies); a forged or stale seal (other key, identifiers changed
after sealing) fails verification and the instance is de-identified in full.
"""

from __future__ import annotations

import hmac

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from .pseudonym import Pseudonymizer

SEAL_PREFIX = "TEACHFILE-SEAL:"
_METHOD = 0x00120063


def _method_values(ds: Dataset) -> list[str]:
    if _METHOD not in ds:
        return []
    value = ds[_METHOD].value
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        value = [value]
    return [v.decode("ascii", "replace") if isinstance(v, bytes) else str(v) for v in value]


_DATE_VRS = ("DA", "DT")


def _dates(ds: Dataset, path: str = "", out: list[str] | None = None) -> list[str]:
    """Every DA/DT value with its place, decoding only dates and sequences."""
    out = [] if out is None else out
    for tag in sorted(ds._dict):  # pydicom internals, as in deid: no decoding of the rest
        raw = ds._dict[tag]
        vr = raw.VR
        if vr is None or vr == "UN":
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr in _DATE_VRS:
            out.append(f"{path}{tag:08x}={ds[tag].value}")
        elif vr == "SQ":
            for i, item in enumerate(ds[tag].value or ()):
                _dates(item, f"{path}{tag:08x}/{i}/", out)
    return out


def _digest(ds: Dataset, pseudo: Pseudonymizer, method: list[str]) -> str:
    parts = [
        str(ds.get("SOPInstanceUID", "")),
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
        str(ds.get("PatientID", "")),
        str(ds.get("PatientName", "")),
        "\\".join(method),
        "\n".join(_dates(ds)),
    ]
    return pseudo.mac(b"seal", *parts).hex()[:32]


def seal(ds: Dataset, pseudo: Pseudonymizer) -> None:
    """Add (or replace) the seal; call it last, after every identifier has its final value."""
    method = [v for v in _method_values(ds) if not v.startswith(SEAL_PREFIX)]
    ds.add_new(_METHOD, "LO", [*method, SEAL_PREFIX + _digest(ds, pseudo, method)])


def verify(ds: Dataset, pseudo: Pseudonymizer) -> bool:
    """True only when ``ds`` carries exactly one seal and it matches this key and its values."""
    try:
        values = _method_values(ds)
        seals = [v for v in values if v.startswith(SEAL_PREFIX)]
        if len(seals) != 1:
            return False
        method = [v for v in values if not v.startswith(SEAL_PREFIX)]
        return hmac.compare_digest(seals[0][len(SEAL_PREFIX):], _digest(ds, pseudo, method))
    except Exception:  # a malformed dataset is simply not sealed
        return False
