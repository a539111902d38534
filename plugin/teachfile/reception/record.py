"""The node's own case records: a second seal, over the whole content, for the DICOM objects the
node writes to carry a case record (a Key Object Selection and a text SR, IHE TCE style).

The ordinary seal (:mod:`.seal`) says "these identifiers are already this node's pseudonyms";
every removal rule still runs, and the Basic Profile removes an SR's Content Sequence. A case
record exists to carry free text (history, findings, diagnosis), so the node marks the objects
it built itself with a keyed MAC over *every* element, recursively. Reception keeps such an
object byte for byte: nobody without the key can make one, and any change to any value (a name
typed into a copy by another program) breaks the MAC, so the object is de-identified in full
like any other input. What the author types is checked when typed (identifier warnings), not
here.

Only these SOP classes can carry the mark, and the ordinary seal must verify too.
"""

from __future__ import annotations

import hmac

from pydicom.dataset import Dataset

from . import seal
from .pseudonym import Pseudonymizer

RECORD_CREATOR = "TEACHFILE RECORD"
GROUP = 0x0009
#: Element offsets inside the private block.
MAC_ELEMENT = 0x01
UPDATED_ELEMENT = 0x02
RECORD_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
})


def _walk(ds: Dataset, out: list[str], skip_block: int | None) -> None:
    for elem in sorted(ds, key=lambda e: e.tag):
        if skip_block is not None and elem.tag.group == GROUP and (
                elem.tag.element == 0x0010 or elem.tag.element >> 8 == skip_block):
            continue
        if elem.VR == "SQ":
            out.append(f"{elem.tag:08x} SQ {len(elem.value)}")
            for i, item in enumerate(elem.value):
                out.append(f"item {i}")
                _walk(item, out, None)
            continue
        value = elem.value
        if isinstance(value, bytes):
            text = value.hex()
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        out.append(f"{elem.tag:08x} {elem.VR} {text}")


def _block(ds: Dataset) -> int | None:
    for element in range(0x10, 0x100):
        tag = (GROUP << 16) | element
        if tag in ds and str(ds[tag].value).strip() == RECORD_CREATOR:
            return element
    return None


def _digest(ds: Dataset, pseudo: Pseudonymizer, block: int | None) -> str:
    lines: list[str] = []
    _walk(ds, lines, block)
    return pseudo.mac(b"record", "\n".join(lines)).hex()[:40]


def seal_record(ds: Dataset, pseudo: Pseudonymizer, updated: str) -> None:
    """Seal ``ds`` (ordinary seal first, then the content MAC); call it last."""
    if str(ds.get("SOPClassUID", "")) not in RECORD_CLASSES:
        raise ValueError("only a Key Object Selection or a Basic Text SR carries a record")
    seal.seal(ds, pseudo)
    block = ds.private_block(GROUP, RECORD_CREATOR, create=True)
    block.add_new(UPDATED_ELEMENT, "LO", updated[:64])
    element = _block(ds)
    if MAC_ELEMENT in block:
        del ds[block.get_tag(MAC_ELEMENT)]
    ds.add_new(block.get_tag(MAC_ELEMENT), "LO", _digest(ds, pseudo, element))


def is_own_record(ds: Dataset, pseudo: Pseudonymizer) -> bool:
    """True only for a record object this key made, unchanged since."""
    try:
        if str(ds.get("SOPClassUID", "")) not in RECORD_CLASSES:
            return False
        element = _block(ds)
        if element is None:
            return False
        mac_tag = (GROUP << 16) | (element << 8) | MAC_ELEMENT
        if mac_tag not in ds or not seal.verify(ds, pseudo):
            return False
        return hmac.compare_digest(str(ds[mac_tag].value), _digest(ds, pseudo, element))
    except Exception:  # noqa: BLE001 - malformed: not ours
        return False


def record_updated(ds: Dataset) -> str:
    element = _block(ds)
    if element is None:
        return ""
    tag = (GROUP << 16) | (element << 8) | UPDATED_ELEMENT
    return str(ds[tag].value) if tag in ds else ""

