"""What reception does to one file, attribute by attribute, without storing anything.

The workshop's "what did the node change?" exercise: the file goes through the very
:meth:`Reception.process` the node runs (so the "after" column IS what the node would store),
then both datasets are walked in parallel, every element by its path in sequences, and each row
names the action and the rule that chose it (:meth:`Deidentifier.rule`). The "before" values
are the caller's own file: they are returned to the caller only, never logged or counted.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from . import pixels
from .pipeline import Reception

#: How much of a value a row shows; longer values are cut (the full file is the caller's own).
MAX_VALUE = 160
_RULE_TEXT = {
    "table": "PS3.15 Table E.1-1 row, under the profile's options",
    "extra": "a rule beyond the table (free text, encrypted content, the node's marks)",
    "text": "text beyond the table (data/text-rules.json): cleaned, checked or kept",
    "issuer": "issuers name the institution: removed unless institution identity is retained",
    "vr": "not in the table: the rule for its VR",
    "private": "private attribute: removed unless on the profile's safe list",
    "node": "written by the node (de-identification method, seal, lossy marks, file meta)",
}
_ACTION_TEXT = {"X": "remove", "Z": "empty", "D": "dummy", "K": "keep", "C": "clean",
                "I": "clean identifiers",
                "U": "new UID"}


@dataclass(frozen=True)
class Row:
    tag: str
    keyword: str
    path: str
    vr: str
    action: str
    rule: str
    before: str | None
    after: str | None

    def as_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "keyword": self.keyword, "path": self.path, "vr": self.vr,
                "action": self.action, "rule": self.rule, "rule_text": _RULE_TEXT[self.rule],
                "before": self.before, "after": self.after, "changed": self.before != self.after}


def _show(elem: DataElement) -> str:
    if elem.VR == "SQ":
        return f"<{len(elem.value or ())} item(s)>"
    value = elem.value
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "..."


def _elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, BaseTag, DataElement]]:
    """Every element with its path (``Seq[0].Keyword``); the file meta first."""
    if not prefix and getattr(ds, "file_meta", None) is not None:
        for elem in ds.file_meta:
            yield elem.keyword or str(elem.tag), elem.tag, elem
    for elem in ds:
        name = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        path = f"{prefix}{name}"
        yield path, elem.tag, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _elements(item, f"{path}[{i}].")


def _action(reception: Reception, tag: BaseTag, before: str | None,
            after: str | None) -> tuple[str, str]:
    if before is None:
        return "add", "node"
    if tag.group in (0x0002,) or int(tag) in (0x00120062, 0x00120063, 0x00120064):
        return ("keep" if before == after else "replace"), "node"
    letter, rule = reception.deidentifier.rule(int(tag))
    if after is None:
        return "remove", rule
    if letter == "K" and before != after:
        # kept attributes that change: dates shifted as "modified", UIDs mapped, pixels cleaned
        return "replace", rule
    return _ACTION_TEXT.get(letter, letter), rule


def explain(reception: Reception, raw: bytes) -> dict[str, Any]:
    """Decision, pixel plan, transfer syntax and one row per attribute (see the module doc)."""
    decision = reception.process(raw)
    out: dict[str, Any] = {
        "decision": "store" if decision.store else "refuse",
        "reason": decision.reason,
        "detail": decision.detail or None,
        "transcode_reason": decision.transcode_reason,
    }
    try:
        before_ds = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - an unreadable file is explained, not raised
        out.update(attributes=[], parse_error=type(exc).__name__)
        return out
    if reception.pixel_policy is not None:
        try:
            plan = pixels.assess(before_ds, reception.pixel_policy)
            out["pixels"] = {"action": plan.action, "rule": plan.rule,
                             "reason": plan.reason_code,
                             "regions": [list(r) for r in plan.regions],
                             "keep": [list(r) for r in plan.keep]}
        except Exception as exc:  # noqa: BLE001
            out["pixels"] = {"action": "refuse", "reason": type(exc).__name__}
    after_ds = pydicom.dcmread(io.BytesIO(decision.data)) if decision.data else None
    before_ts = str(getattr(before_ds.file_meta, "TransferSyntaxUID", "") or "")
    out["transfer_syntax"] = {"before": before_ts or None, "after": (
        str(after_ds.file_meta.TransferSyntaxUID) if after_ds is not None else None)}
    before = {path: (tag, elem) for path, tag, elem in _elements(before_ds)}
    after = ({path: (tag, elem) for path, tag, elem in _elements(after_ds)}
             if after_ds is not None else {})
    rows: list[Row] = []
    for path, (tag, elem) in before.items():
        b = _show(elem)
        a = _show(after[path][1]) if path in after else None
        action, rule = _action(reception, tag, b, a) if after_ds is not None else ("", "node")
        rows.append(Row(f"({tag.group:04X},{tag.element:04X})", elem.keyword, path, elem.VR,
                        action if after_ds is not None else "refused", rule, b, a))
    for path, (tag, elem) in after.items():
        if path not in before:
            rows.append(Row(f"({tag.group:04X},{tag.element:04X})", elem.keyword, path, elem.VR,
                            "add", "node", None, _show(elem)))
    out["attributes"] = [r.as_json() for r in rows]
    out["summary"] = {k: sum(1 for r in rows if r.action == k)
                      for k in sorted({r.action for r in rows})}
    return out
