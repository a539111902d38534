"""The de-identification engine: PS3.15 Annex E on a pydicom dataset, fail closed.

Order of precedence for an element, in the main dataset and in every item of every sequence at
any depth:

1. Private (odd group): removed, unless ``retain_safe_private`` is active and the element is on
   the profile's safe list (creator + element byte); a creator goes with its last kept element.
2. A Table E.1-1 row (resolved for the profile's options, see :mod:`.profile`), one of the few
   rules *beyond the table* in :data:`_EXTRA` (SR Text Value, encrypted content), or a rule for
   text beyond the table from ``data/text-rules.json`` (:func:`load_text_rules`).
3. Otherwise by VR: PN emptied; DA/DT dummied (basic), shifted (modified dates) or kept (full
   dates); TM dummied unless a temporal option keeps it (a whole-day shift leaves times valid);
   UI mapped to a keyed UID unless pydicom's UID dictionary names the value (whatever the
   attribute or prefix); text (SH, LO, ST, LT, UT, UC, CS, AE) cleaned, since text the profile
   does not know is not safe; SQ recursed. Curves (50xx) and overlays (60xx, all of the
   group, so no orphan overlay attributes stay) are removed, with or without ``clean_graphics``
   (we cannot clean burned graphics, so removing is the safe form of cleaning). Group lengths and
   public attributes that pydicom's dictionary does not know are removed (their content is
   unknown).

Combined actions (the code names the strictest Type the attribute has in some IOD; we do not
know the receiving IOD, so we keep the object valid for all of them): X/Z -> Z, X/D -> D,
X/Z/U* -> U (references stay, remapped), Z/D and X/Z/D -> D unless :data:`_KNOWN_TYPE` says the
attribute is Type 2/3 wherever this node meets it, then Z. Z empties, D writes a dummy valid for
the VR (a keyed UID for UI; a sequence under D is recursed), C cleans by VR: dates shifted, text
cleaned by :mod:`.identifiers` (the instance's names, IDs and dates in every script and written
form, any other date, numbers of 5+ digits), sequences recursed. I (text rules only, and text
the table keeps) removes the instance's identifiers and own dates and nothing else.

Speed: the action map is a dict from int tag to one letter, built once per profile. Raw ASCII
text that holds no identifier substring and nothing date-like is not scanned further. Elements
we keep are decoded (pydicom's conversion, which also gives a UN element its dictionary VR) and
re-encoded from their values when written: raw bytes are never copied through.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import AMBIGUOUS_VR

from .. import __version__
from ..errors import Refusal
from . import identifiers as _ids
from . import seal as _seal
from .profile import OPTION_NAMES, Profile
from .pseudonym import Pseudonymizer

#: Our Implementation Class UID: 2.25 + the first 128 bits of SHA-256("orthanc-teachfile").
IMPLEMENTATION_CLASS_UID = "2.25.211166532277348338492758301687037441796"
IMPLEMENTATION_VERSION_NAME = ("TEACHFILE_" + __version__.replace(".", ""))[:16]
WELL_KNOWN_UID_ROOT = "1.2.840.10008."
MAX_DEPTH = 32

_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_STUDY_UID, _SERIES_UID = 0x0020000D, 0x0020000E
_STUDY_DESCRIPTION = 0x00081030
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_REQUIRED_UIDS = (_SOP_CLASS, _SOP_INSTANCE, _STUDY_UID, _SERIES_UID)
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

#: Rules beyond Table E.1-1, as (basic action, action under clean_structured_content).
_EXTRA: dict[int, tuple[str, str]] = {
    0x0040A160: ("D", "C"),  # Text Value: free text of SR/acquisition context items
    0x04000500: ("X", "X"),  # Encrypted Attributes Sequence: opaque, may hold the originals
    0x04000520: ("X", "X"),  # Encrypted Content
    0x4FFE0001: ("X", "X"),  # MAC Parameters Sequence: MACs over values we change
    0x00120062: ("K", "K"),  # Patient Identity Removed / method: rewritten at top level
    0x00120063: ("K", "K"),
    0x00120064: ("K", "K"),
}
#: The node's marks: rewritten at the top level; anywhere deeper they are someone's free text.
_TOP_LEVEL_ONLY = frozenset({0x00120062, 0x00120063, 0x00120064})
#: Free-text VRs: kept by VR outside the table, but not inside a dummied or cleaned sequence
#: (the text of a graphic annotation, of an SR content item).
_FREE_TEXT_VRS = frozenset({"ST", "LT", "UT", "UC"})
#: Issuers (assigning authorities) identify the institution: removed unless it is retained.
_ISSUERS = (0x00080051, 0x00100024, 0x00400031, 0x00400032, 0x00400033)
#: Sequences whose D cannot be a recursion (their codes *are* the identity): one dummy item.
_DUMMY_ITEM_SEQS = frozenset({0x00401101})  # Person Identification Code Sequence

#: Strictest Type of some Z/D or X/Z/D attributes in the IODs this node receives, where it is
#: known to be 2 or 3 (so empty is valid): Contrast/Bolus Agent (Contrast/Bolus module, Type 2),
#: Content Creator's Name (Presentation State Identification, Type 2), Institution Name and
#: Station Name (General Equipment, Type 3), Operators' Name (General Series, Type 3).
_KNOWN_TYPE: dict[int, int] = {
    0x00180010: 2,
    0x00700084: 2,
    0x00080080: 3,
    0x00081010: 3,
    0x00081070: 3,
}

_DUMMY: dict[str, object] = {
    "AE": "ANON", "AS": "000Y", "CS": "ANON", "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": "ANON", "LT": "ANON", "PN": "ANONYMOUS",
    "SH": "ANON", "ST": "ANON", "TM": "000000", "UC": "ANON", "UT": "ANON", "UR": "",
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0,
}
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"})
_NUMERIC_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "IS", "DS", "AT"})



#: UIDs kept verbatim: those pydicom's UID dictionary names (SOP classes, transfer syntaxes,
#: coding schemes, well-known instances) and the node's own. Every other value is mapped,
#: whatever its prefix or attribute: a UID behind the standard root can still embed an MRN.
_KNOWN_UIDS = frozenset(UID_dictionary) | {IMPLEMENTATION_CLASS_UID}
#: Text VRs the engine cleans (C) or checks (I) when no rule keeps them exactly.
_CLEAN_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "CS", "AE"})
_SINGLE_VALUED = frozenset({"ST", "LT", "UT"})
#: Modality defined terms (PS3.3 C.7.3.1.1.1): kept even when a name part spells one (a
#: patient "CT" must not leave an image without its modality).
_MODALITY_TERMS = (
    "AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DMS DG DOC DX ECG EEG EMG EOG EPS ES FID GM HC "
    "HD IO IOL IVOCT IVUS KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS "
    "OT PA PLAN POS PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD "
    "RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC")
_MODALITIES = frozenset(_MODALITY_TERMS.split())
TEXT_RULES_RESOURCE = "text-rules.json"
#: Text longer than this (bytes) is emptied rather than scanned (a 10 MB "comment" must not
#: cost seconds of a reception thread).
_MAX_CLEAN_BYTES = 65536


@lru_cache(maxsize=2)
def load_text_rules() -> tuple[tuple[int, str, tuple[tuple[str, str], ...]], ...]:
    """The rules for text attributes beyond Table E.1-1 (``data/text-rules.json``):
    (tag, action, ((option, action), ...))."""
    raw = json.loads(resources.files("teachfile.data").joinpath(TEXT_RULES_RESOURCE)
                     .read_text("utf-8"))
    out = []
    for r in raw["rules"]:
        opts = tuple((o, a) for o, a in (r.get("options") or {}).items())
        if r["action"] not in ("C", "I", "K", "Z", "X", "D") or any(
                o not in OPTION_NAMES or a not in ("C", "I", "K", "Z", "X", "D") for o, a in opts):
            raise ValueError("invalid text rule")
        out.append((int(r["tag"].replace(",", ""), 16), r["action"], opts))
    return tuple(out)


class _Ctx:
    """Per-instance state of one run: never shared between instances."""

    __slots__ = ("sealed", "offset", "ids", "text_offset", "enc", "private_deleted")

    def __init__(self, sealed: bool, offset: int, ids: _ids.Identifiers,
                 text_offset: int | None, enc: list[str]) -> None:
        self.sealed = sealed
        self.offset = offset
        self.ids = ids
        #: Days to shift full dates written in text by (None: remove them; 0: keep them).
        self.text_offset = text_offset
        #: Python encodings of the Specific Character Set in force (inherited by items).
        self.enc = enc
        self.private_deleted = False


def _resolve_combined(tag: int, action: str) -> str:
    """One letter for a (possibly combined) table action; see the module docstring."""
    if "/" not in action:
        return action
    if action == "X/Z":
        return "Z"
    if action == "X/Z/U*":
        return "U"
    if action == "X/D":
        return "D"
    return "Z" if _KNOWN_TYPE.get(tag, 1) >= 2 else "D"  # Z/D and X/Z/D


class Deidentifier:
    """Applies one profile with one key; safe to reuse for every instance (no per-run state)."""

    def __init__(self, profile: Profile, pseudonymizer: Pseudonymizer) -> None:
        self.profile = profile
        self.pseudonymizer = pseudonymizer
        p = profile
        self._full = p.has("retain_long_full_dates")
        self._shift = p.has("retain_long_modified_dates")
        self._retain_uids = p.has("retain_uids")
        struct = p.has("clean_structured_content")
        self._rules: dict[int, str] = {t: _resolve_combined(t, a) for t, a in p.actions.items()}
        for tag, (basic, cleaned) in _EXTRA.items():
            self._rules[tag] = cleaned if struct else basic
        if not p.has("retain_institution_identity"):
            self._rules.update(dict.fromkeys(_ISSUERS, "X"))
        # Text attributes beyond the table (data/text-rules.json); the table itself wins.
        self._exact: set[int] = set()
        self._text_rule_tags: set[int] = set()
        for tag, act, opts in load_text_rules():
            if tag in p.actions:
                continue
            for o, a in opts:
                if p.has(o):
                    act = a
            if act == "K":
                self._exact.add(tag)
            self._rules[tag] = act
            self._text_rule_tags.add(tag)
        self._auto: dict[int, str] = {}
        self._vr: dict[int, str | None] = {}
        self._safe = {(s.group, s.creator.upper(), s.element) for s in p.safe_private}
        if not p.has("retain_safe_private"):
            self._safe = set()
        self._safe_groups = {g for g, _, _ in self._safe}

    # ----------------------------------------------------------------- public entry point
    def deidentify(self, ds: Dataset,
                   study_title: Callable[[str], str | None] | None = None) -> Dataset:
        """De-identify ``ds`` in place and return it; raise :class:`Refusal` if not possible.

        ``study_title`` maps a pseudonymous Study Instance UID to the title of a teaching case
        (or None): a case keeps its title whatever the sender put in Study Description. The
        title goes through the profile's rule for Study Description like any description."""
        try:
            return self._run(ds, study_title)
        except Refusal:
            raise
        except RecursionError:
            raise Refusal("unsupported", "nesting too deep") from None
        except Exception as exc:  # fail closed; the message may hold values, so drop it
            raise Refusal("deid-error", type(exc).__name__) from None

    # ----------------------------------------------------------------- main steps
    def _run(self, ds: Dataset,
             study_title: Callable[[str], str | None] | None = None) -> Dataset:
        for tag in _REQUIRED_UIDS:
            if tag not in ds or not str(ds[tag].value or "").strip():
                raise Refusal("missing-uid", f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        sop_class = str(ds[_SOP_CLASS].value).strip()
        if sop_class == _DICOMDIR_CLASS:
            raise Refusal("unsupported", "media storage directory")
        pseudo = self.pseudonymizer
        sealed = _seal.verify(ds, pseudo)
        pid = str(ds.get("PatientID", "") or "").strip()
        pname = str(ds.get("PatientName", "") or "").strip()
        if pid:
            # The Patient ID alone, never its issuer: senders name the issuer inconsistently
            # (some instances of one study with it, some without), and a key that included it
            # split one study into several patients with several date offsets. Two hospitals'
            # equal IDs therefore become one pseudonymous patient (see the README).
            pkey = "id:" + pid
        elif pname:
            pkey = "name:" + pname + "|" + str(ds.get("PatientBirthDate", "") or "")
        else:
            pkey = "study:" + str(ds[_STUDY_UID].value).strip()
        offset = 0
        if self._shift and not sealed:
            offset = pseudo.date_offset_days(pkey, *self.profile.date_shift_days)
        ids = _ids.identifier_tokens(ds, dates=not self._full)
        text_offset = 0 if (self._full or sealed) else offset if self._shift else None
        ctx = _Ctx(sealed, offset, ids, text_offset, _ids.dataset_encodings(ds, ["iso8859"]))
        tsuid = self._transfer_syntax(ds)

        self._walk(ds, ctx, 0)
        if tsuid != ImplicitVRLittleEndian:
            _decode_implicit(ds)
        if study_title is not None:
            title = study_title(str(ds[_STUDY_UID].value).strip())
            if title:
                self._set_study_description(ds, title, ctx)

        if ctx.sealed:
            new_pid, new_name = pid, pname
        else:
            new_pid, new_name = pseudo.patient_id(pkey), pseudo.patient_name(pkey)
        ds.add_new(_PATIENT_ID, "LO", new_pid)
        ds.add_new(_PATIENT_NAME, "PN", new_name)
        self._mark(ds)
        self._rebuild_meta(ds, tsuid)
        _seal.seal(ds, pseudo)
        return ds

    def _set_study_description(self, ds: Dataset, title: str, ctx: _Ctx) -> None:
        act = self._rules.get(_STUDY_DESCRIPTION) or self._auto_rule(_STUDY_DESCRIPTION)
        if act == "X":
            ds.pop(_STUDY_DESCRIPTION, None)
            return
        ds.add_new(_STUDY_DESCRIPTION, "LO", title)
        if act != "K":
            self._apply(ds, _STUDY_DESCRIPTION, act, ctx, 0)

    def _mark(self, ds: Dataset) -> None:
        p = self.profile
        ds.add_new(0x00120062, "CS", "YES")
        ds.add_new(0x00120063, "LO", [p.method_text])
        items = []
        for value, meaning in p.method_codes():
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.add_new(0x00120064, "SQ", Sequence(items))
        state = "UNMODIFIED" if self._full else "MODIFIED" if self._shift else "REMOVED"
        ds.add_new(0x00280303, "CS", state)

    @staticmethod
    def _transfer_syntax(ds: Dataset) -> str:
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
        if ts:
            return ts
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = False, True
        if implicit:
            return ImplicitVRLittleEndian
        return ExplicitVRLittleEndian if little else ExplicitVRBigEndian

    @staticmethod
    def _rebuild_meta(ds: Dataset, tsuid: str) -> None:
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = UID(ds[_SOP_CLASS].value)
        meta.MediaStorageSOPInstanceUID = UID(ds[_SOP_INSTANCE].value)
        meta.TransferSyntaxUID = UID(tsuid)
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128

    # ----------------------------------------------------------------- explaining
    def rule(self, tag: int) -> tuple[str, str]:
        """The one-letter action the walk takes for ``tag`` at the top level, and which rule
        chose it: ``private``, ``table`` (Table E.1-1 under the profile's options), ``extra``
        (a rule beyond the table, :data:`_EXTRA`), ``text`` (``data/text-rules.json``), ``issuer``
        or ``vr`` (the VR fallback).

        Read from the very dictionaries the walk uses, so an explanation cannot drift from it.
        """
        if (tag >> 16) & 1:
            return ("K" if (tag >> 16) in self._safe_groups else "X"), "private"
        if tag in _EXTRA:
            return self._rules[tag], "extra"
        if tag in _ISSUERS and not self.profile.has("retain_institution_identity"):
            return "X", "issuer"
        listed = self._rules.get(tag)
        if listed is not None:
            return listed, ("text" if tag in self._text_rule_tags else "table")
        return self._auto.get(tag) or self._auto_rule(tag), "vr"

    # ----------------------------------------------------------------- the walk
    def _dict_vr(self, tag: int) -> str | None:
        try:
            return self._vr[tag]
        except KeyError:
            try:
                vr: str | None = dictionary_VR(tag)
            except KeyError:
                vr = None
            self._vr[tag] = vr
            return vr

    def _auto_rule(self, tag: int) -> str:
        """The rule for an even tag the table does not list (cached per tag)."""
        group, elem = tag >> 16, tag & 0xFFFF
        if elem == 0 or group == 0x0002 or 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            rule = "X"
        else:
            vr = self._dict_vr(tag)
            if vr is None:
                rule = "X"
            elif vr == "PN":
                rule = "Z"
            elif vr in ("DA", "DT"):
                rule = "K" if self._full else "C" if self._shift else "D"
            elif vr == "TM":
                rule = "K" if self._full or self._shift else "D"
            elif vr == "UI":
                rule = "K" if self._retain_uids else "U"
            elif vr == "UR":  # addresses (Retrieve URL...) name hosts and original UIDs
                rule = "X"
            elif vr in _CLEAN_VRS:  # text the profile does not know is not safe: cleaned
                rule = "C"
            else:
                rule = "K"
        self._auto[tag] = rule
        return rule

    def _walk(self, ds: Dataset, ctx: _Ctx, depth: int, strict: str | None = None) -> None:
        """``strict`` ("D" or "C") inside items of a sequence the profile dummies or cleans:
        there, free text the table does not list is dummied or cleaned too, not kept."""
        if depth > MAX_DEPTH:
            raise Refusal("unsupported", "nesting too deep")
        # pydicom internals: iterate without decoding (pinned pydicom < 4); int keys, raw values.
        d: Any = ds._dict
        rules, auto = self._rules, self._auto
        outer_enc = ctx.enc
        if depth and 0x00080005 in d:  # an item may declare its own character set
            ctx.enc = _ids.dataset_encodings(ds, outer_enc)
        try:
            self._walk_items(ds, d, ctx, depth, strict, rules, auto)
        finally:
            ctx.enc = outer_enc

    def _walk_items(self, ds: Dataset, d: Any, ctx: _Ctx, depth: int, strict: str | None,
                    rules: dict[int, str], auto: dict[int, str]) -> None:
        creators: list[int] = []
        kept_blocks: set[int] = set()
        charset = None
        for tag in list(d):
            if (tag >> 16) & 1:
                self._private(ds, d, tag, creators, kept_blocks, ctx)
                continue
            if tag >> 16 in (0x0000, 0x0002):  # command / file meta: never stored, meta rebuilt
                del d[tag]
                continue
            if depth and tag in _TOP_LEVEL_ONLY:  # the node's marks belong at the top only
                del d[tag]
                continue
            listed = rules.get(tag)
            act = listed or auto.get(tag) or self._auto_rule(tag)
            if act == "X":
                del d[tag]
                continue
            raw = d[tag]
            vr = raw.VR
            if vr is None or vr == "UN":
                vr = self._dict_vr(tag)
            if strict and (listed is None or tag in self._text_rule_tags) \
                    and act in ("K", "C", "I") and vr in _FREE_TEXT_VRS:
                act = strict  # the enclosing sequence's D (or C) is stricter than a text rule
            if vr in _CLEAN_VRS and act in ("C", "I", "K"):
                if act != "K" or tag not in self._exact:
                    # K text (the table's, an option's) is checked for the instance's identifiers
                    self._clean(ds, d, tag, raw, vr, act == "C", ctx)
                if type(d.get(tag)) is RawDataElement:
                    ds[tag]  # kept as it was: re-encoded from its value (see below)
                continue
            if act == "K" and vr != "SQ":
                if type(raw) is RawDataElement:
                    # Kept, but re-encoded from its parsed value when written, never copied
                    # as raw bytes (whatever a raw length or VR hid would travel with it).
                    if charset is None:
                        charset = ds.original_character_set or ds._character_set
                    elem = convert_raw_data_element(raw, encoding=charset, ds=ds)
                    if elem.VR in AMBIGUOUS_VR or tag == 0x00080005:
                        ds[tag]  # pydicom's own path resolves US/SS, OB/OW by the dataset
                    else:
                        d[tag] = elem
                continue
            self._apply(ds, tag, act, ctx, depth, strict)
        for ct in creators:
            if ct not in kept_blocks and ct in d:
                del d[ct]
                ctx.private_deleted = True
        if ctx.private_deleted:
            ds._private_blocks = {}

    def _private(
        self, ds: Dataset, d: dict[Any, Any], tag: int, creators: list[int], kept: set[int],
        ctx: _Ctx,
    ) -> None:
        group, elem = tag >> 16, tag & 0xFFFF
        ctx.private_deleted = True
        if group not in self._safe_groups or elem < 0x10:
            del d[tag]
            return
        if elem < 0x100:
            creators.append(tag)
            return
        ctag = (group << 16) | (elem >> 8)
        creator = str(ds[ctag].value or "").strip().upper() if ctag in d else ""
        if creator and (group, creator, elem & 0xFF) in self._safe:
            kept.add(ctag)
        else:
            del d[tag]

    def _apply(self, ds: Dataset, tag: int, act: str, ctx: _Ctx, depth: int,
               strict: str | None = None) -> None:
        elem = ds[tag]  # decodes (and parses a sequence) only for elements we change
        vr = elem.VR
        value = elem.value
        if vr == "SQ":
            if act == "Z":
                elem.value = Sequence([])
                return
            if act == "D" and tag in _DUMMY_ITEM_SEQS:
                item = Dataset()
                item.CodeValue = "ANON"
                item.CodingSchemeDesignator = "99TEACHFILE"
                item.CodeMeaning = "Anonymized"
                elem.value = Sequence([item])
                return
            inner = act if act in ("D", "C") else strict
            for item in value or ():
                self._walk(item, ctx, depth + 1, inner)
            return
        if act == "Z":
            elem.value = b"" if vr in _BINARY_VRS else None if vr in _NUMERIC_VRS else ""
            return
        if value is None or value == "" or value == b"":
            return
        if vr == "UI":
            if act != "K":
                elem.value = self._map_uids(value)
            return
        if act == "D" or act == "U":
            elem.value = self._dummy(vr, value)
        elif act == "C":
            if vr in _BINARY_VRS:  # opaque bytes (timestamps, maker notes) cannot be cleaned
                elem.value = b""
            elif vr in ("DA", "DT"):
                if ctx.offset:
                    elem.value = _map_values(value, lambda v: _shift_date(v, vr, ctx.offset))
            elif vr == "PN":
                elem.value = ""
            elif vr in _TEXT_VRS:
                elem.value = _map_values(value, lambda v: _ids.clean_text(
                    v, ctx.ids, offset=ctx.text_offset))

    def _clean(self, ds: Dataset, d: dict[Any, Any], tag: int, raw: object, vr: str, free: bool,
               ctx: _Ctx) -> None:
        """Clean one text element (``free``: free text; else identifiers only). Raw ASCII
        values that certainly carry nothing are left raw (never decoded: the fast path)."""
        ids = ctx.ids
        if isinstance(raw, RawDataElement):
            b = raw.value
            if not b:
                return
            if _ids.quick_clear(b, ids, free):
                return
            if len(b) > _MAX_CLEAN_BYTES:  # too long to scan cheaply: not kept at all
                ds.add_new(tag, vr, "" if free else str(_DUMMY.get(vr, "ANON")))
                return
            chunks = [b] if vr in _SINGLE_VALUED else b.split(b"\\")
            try:
                values = [_ids.decode_text(c, ctx.enc).rstrip(" \0") for c in chunks]
            except (UnicodeError, LookupError, ValueError):
                raise Refusal("undecodable-text", f"({tag >> 16:04X},{tag & 0xFFFF:04X})") from None
            if vr not in _SINGLE_VALUED:
                values = [v.lstrip(" ") for v in values]
        else:
            value = raw.value  # type: ignore[attr-defined]
            if value is None or value == "":
                return
            multi = isinstance(value, MultiValue | list)
            values = [str(v) for v in value] if multi else [str(value)]
            if sum(map(len, values)) > _MAX_CLEAN_BYTES:
                ds.add_new(tag, vr, "" if free else str(_DUMMY.get(vr, "ANON")))
                return
        cleaned = [_ids.clean_text(v, ids, free=free, offset=ctx.text_offset) for v in values]
        if not free:  # coded values are often Type 1: a dummy rather than an empty value
            cleaned = [c if c or not v else v if tag == 0x00080060 and v in _MODALITIES
                       else str(_DUMMY.get(vr, "ANON")) for c, v in
                       zip(cleaned, values, strict=True)]
        if isinstance(raw, RawDataElement) or cleaned != values:
            if cleaned == values:
                return  # nothing to remove: the raw bytes stay as they were read
            ds.add_new(tag, vr, cleaned if len(cleaned) > 1 else cleaned[0])

    def _map_uids(self, value: object) -> object:
        uid = self.pseudonymizer.uid

        def one(u: object) -> str:
            s = str(u).strip(" \0")
            return s if not s or s in _KNOWN_UIDS else uid(s)

        return [one(u) for u in value] if isinstance(value, MultiValue | list) else one(value)

    @staticmethod
    def _dummy(vr: str, value: object) -> object:
        if vr in _BINARY_VRS:
            return b""
        dummy = _DUMMY.get(vr, "")
        if isinstance(value, MultiValue | list):
            return [dummy] * len(value) if dummy != "" else ""
        return dummy


def _decode_implicit(ds: Dataset) -> None:
    """Give a VR to raw elements read as implicit VR from a file that claims an explicit
    syntax (pydicom reads such files but cannot write them back otherwise)."""
    d: Any = ds._dict
    for tag in list(d):
        elem = d[tag]
        if elem.VR is None:
            elem = ds[tag]
        if elem.VR == "SQ" and not getattr(elem, "is_raw", False):
            for item in elem.value or ():
                _decode_implicit(item)


def _map_values(value: object, fn: object) -> object:
    f = fn
    if isinstance(value, MultiValue | list):
        return [f(str(v)) for v in value]  # type: ignore[operator]
    return f(str(value))  # type: ignore[operator]


_DA_FULL = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT_FULL = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?((?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?:[+-]\d{4})?)$")


def _shift_one(s: str, offset: int, vr: str) -> str | None:
    """One DA or DT value shifted by whole days; None when it is not a well-formed value
    (whatever surrounds a date in a malformed value could be identifying: it is not kept)."""
    m = (_DA_FULL if vr == "DA" else _DT_FULL).match(s)
    if not m:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    rest = m.group(4) if vr == "DT" else ""
    if vr == "DT" and rest and not day:
        return None  # a time needs a full date before it
    try:
        shifted = _dt.date(int(year), int(month or 1), int(day or 1)) + _dt.timedelta(days=offset)
    except (ValueError, OverflowError):
        return None
    if not 1 <= shifted.year <= 9999:
        return None
    out = f"{shifted.year:04d}"
    if month:
        out += f"{shifted.month:02d}"
    if day:
        out += f"{shifted.day:02d}"
    return out + rest


def _shift_date(value: str, vr: str, offset: int) -> str:
    """Shift a DA or DT value (or a range "A-B", "A-", "-B") by whole days; times, fractions
    and offsets stay. A value that is not well formed becomes the dummy date."""
    value = value.strip()
    if not value:
        return value
    whole = _shift_one(value, offset, vr)
    if whole is not None:
        return whole
    if value.count("-") == 1 or (vr == "DT" and "-" in value):
        # A range; for DT a single '-' inside a value is a UTC offset, handled above.
        parts = value.split("-")
        if len(parts) == 2:
            shifted = [_shift_one(p, offset, vr) if p else "" for p in parts]
            if all(x is not None for x in shifted) and any(parts):
                return "-".join(x or "" for x in shifted)
    return _DUMMY[vr]  # type: ignore[return-value]


def active_option_codes(profile: Profile) -> Iterable[str]:
    """The CID 7050 code values the engine records for ``profile`` (for reports and tests)."""
    return [code for code, _ in profile.method_codes()]

