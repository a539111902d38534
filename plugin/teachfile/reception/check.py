"""Strict checks on the bytes of an instance: the input before it is parsed, the output after.

pydicom is a forgiving reader: it accepts an element whose length runs past the end of the file
(it reads what is there), a sequence sent as UT or OB (its items stay opaque bytes, so the
de-identification walk never sees the PatientName inside), a Modality whose length swallows
the elements after it. Orthanc then stores whatever came out. This module reads the element
stream itself, independently of pydicom and of the de-identification engine, and refuses:

- on input (:func:`check_input`): element streams that are not well formed, explicit VRs that
  disagree with the dictionary (UN excepted: the standard allows it and pydicom reads such a
  value with the dictionary's VR), lengths that overrun their container, text values holding
  binary bytes (what a length that swallowed the following elements looks like), text that
  does not decode in the declared Specific Character Set, pixel data shorter than Rows x
  Columns x frames x samples x bits (native) or truncated/missing fragments (encapsulated);
- on output (:meth:`OutputCheck.check`): the exact bytes handed to Orthanc, with all of the
  above plus: no UN outside private data, every length consistent with its VR, no element the
  profile removes, no private element the profile does not keep, and no text value that holds
  one of the instance's identifiers (names, IDs, birth date in several written forms), as
  listed by a token function that can be replaced (:data:`TokenFunction`).

Every failure is a :class:`~teachfile.errors.Refusal` with a reason code and a detail made of
keywords and tag numbers only, never a value. Cost: one pass over the element headers in
Python (about a hundred elements for a CT), plus the text values; pixel bytes are not read.
"""

from __future__ import annotations

import re
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from struct import Struct

from pydicom.charset import (
    CODES_TO_ENCODINGS,
    convert_encodings,
    decode_bytes,
    default_encoding,
    handled_encodings,
    python_encoding,
)
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..errors import Refusal
from .profile import Profile

_VRS = frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV"})
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV",
                       "UV"})
_UNIT = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8,
         "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
#: VRs whose bytes depend on Specific Character Set.
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
#: VRs limited to the default repertoire (ASCII).
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
#: Control characters no text value may hold (ESC, TAB, LF, FF, CR are allowed): a text value
#: holding these has swallowed binary data, typically the headers of the elements after it.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_UID_CHARS = re.compile(rb"^[0-9.\\]*$")
_FRAGMENTS = re.compile(b"(^[^\x1b]+|[\x1b][^\x1b]*)")

_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA, _FLOAT_PIXELS, _DOUBLE_PIXELS = 0x7FE00010, 0x7FE00008, 0x7FE00009
_CHARSET = 0x00080005
_IMPLICIT = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")
_NATIVE = frozenset({_IMPLICIT, "1.2.840.10008.1.2.1", _BIG_ENDIAN, *_DEFLATED})
NATIVE_SYNTAXES = _NATIVE
#: Encapsulated syntaxes whose frames end with an FFD9 marker (JPEG EOI / JPEG 2000 EOC).
_FFD9_SYNTAXES = frozenset(
    "1.2.840.10008.1.2.4." + s
    for s in ("50", "51", "57", "70", "80", "81", "90", "91", "92", "93", "201", "202", "203"))
_RLE = "1.2.840.10008.1.2.5"
#: Image attributes the pixel length check needs (top level only).
_IMAGE_TAGS = {0x00280010: "rows", 0x00280011: "columns", 0x00280002: "samples",
               0x00280100: "bits", 0x00280008: "frames", 0x00280004: "photometric"}
#: The node's own marks: rewritten by the engine at the top level, not scanned for tokens.
_MARKS = frozenset({0x00120063, 0x00120064})
#: Removed by the engine beyond Table E.1-1 (see deid._EXTRA) and, unless institution identity
#: is retained, the issuers; the checker keeps its own copy on purpose.
_REMOVED_EXTRA = frozenset({0x04000500, 0x04000520, 0x4FFE0001})
_ISSUERS = frozenset({0x00080051, 0x00100024, 0x00400031, 0x00400032, 0x00400033})
_TOP_LEVEL_ONLY = frozenset({0x00120062, 0x00120063, 0x00120064})

_U16 = {True: Struct("<H"), False: Struct(">H")}
_U32 = {True: Struct("<L"), False: Struct(">L")}
_TAG_LEN = {True: Struct("<HHL"), False: Struct(">HHL")}
_EXPLICIT = {True: Struct("<HH2sH"), False: Struct(">HH2sH")}

_dict_vr_cache: dict[int, tuple[str, ...] | None] = {}


def _dict_vrs(tag: int) -> tuple[str, ...] | None:
    try:
        return _dict_vr_cache[tag]
    except KeyError:
        try:
            vrs: tuple[str, ...] | None = tuple(dictionary_VR(tag).split(" or "))
        except KeyError:
            vrs = None
        _dict_vr_cache[tag] = vrs
        return vrs


#: Which word identifiers count where. Coded values (CS, AE: defined terms such as HEAD or
#: HAND in Body Part Examined) are checked for IDs only, prose for names of three letters or
#: more, person names for every name part; substrings (long IDs, CJK names, birth dates) count
#: everywhere.
_PROSE = frozenset({"name", "id"})
_KINDS = {"CS": frozenset({"id"}), "AE": frozenset({"id"}),
          "PN": frozenset({"name", "short-name", "id"})}


def tag_name(tag: int) -> str:
    """A PHI-free name for a tag in a refusal detail: its keyword, else ``tag:ggggeeee``."""
    kw = keyword_for_tag(tag) if not (tag >> 16) & 1 else ""
    return kw or f"tag:{tag:08x}"


# -- identifiers -------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """The form identifiers are compared in: NFKC (full-width Latin and digits become ASCII),
    upper case, accents dropped (MÜLLER and MULLER compare equal)."""
    s = unicodedata.normalize("NFKC", text).upper()
    if s.isascii():
        return s
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


_WORD = re.compile(r"[^\W_]+")
_NAME_SPLIT = re.compile(r"[\s^=,.\-]+")
_MONTHS = ("JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST",
           "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER")
#: Words the node writes itself (dummies, pseudonym prefix) and the placeholders senders put in
#: names of test, phantom and already anonymised patients: they identify no one, and matching
#: them would refuse every instance of such a "patient" whose descriptions use the word.
_OWN_WORDS = frozenset({
    "ANON", "ANONYMOUS", "ANONYMIZED", "ANONYMISED", "TF", "YES", "NO", "NONE", "UNKNOWN",
    "TEST", "TESTING", "PATIENT", "NAME", "FIRST", "LAST", "PHANTOM", "QA", "DEMO", "SAMPLE",
    "DUMMY"})
_PATIENT_NAMES = ("PatientName", "OtherPatientNames", "PatientBirthName",
                  "PatientMotherBirthName")
_PATIENT_IDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator")


@dataclass(frozen=True)
class Tokens:
    """Identifiers of one instance, normalised: ``words`` match whole words of a text,
    ``substrings`` match anywhere in it (long IDs, CJK names, dates). Each maps to its kind
    (``name``, ``id``, ``birth-date``) for the refusal detail."""

    words: dict[str, str] = field(default_factory=dict)
    substrings: dict[str, str] = field(default_factory=dict)

    def __or__(self, other: Tokens) -> Tokens:
        return Tokens({**self.words, **other.words}, {**self.substrings, **other.substrings})

    def without(self, own: Iterable[str]) -> Tokens:
        drop = set(own)
        return Tokens({k: v for k, v in self.words.items() if k not in drop},
                      {k: v for k, v in self.substrings.items() if k not in drop})

    def __bool__(self) -> bool:
        return bool(self.words or self.substrings)

    def find(self, norm: str, kinds: frozenset[str] | None = None) -> str | None:
        """The kind of the first identifier in ``norm`` (a normalised text), or None;
        ``kinds`` limits the word matches to those kinds (substrings always count)."""
        for s, kind in self.substrings.items():
            if s in norm:
                return kind
        if self.words:
            for w in _WORD.findall(norm):
                found = self.words.get(w)
                if found is not None and (kinds is None or found in kinds):
                    return found
        return None


def _is_cjk(s: str) -> bool:
    return any(ord(c) >= 0x2E80 for c in s)


def _values(ds: Dataset, keyword: str) -> list[str]:
    try:
        v = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable value is caught by the input check
        return []
    if v is None or v == "":
        return []
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        return [str(x) for x in v]
    return [str(v)]


def birth_date_forms(da: str) -> list[str]:
    """The ways a DA value is commonly written in text, normalised."""
    if len(da) != 8 or not da.isdigit():
        return []
    y, m, d = da[:4], da[4:6], da[6:]
    mi, di = int(m), int(d)
    if not (1 <= mi <= 12 and 1 <= di <= 31):
        return [da]
    forms = {da, f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}",
             f"{m}/{d}/{y}", f"{d}-{m}-{y}", f"{m}-{d}-{y}", f"{di}.{mi}.{y}", f"{mi}/{di}/{y}",
             f"{di}/{mi}/{y}"}
    for month in (_MONTHS[mi - 1], _MONTHS[mi - 1][:3]):
        for day in {d, str(di)}:
            forms |= {f"{day} {month} {y}", f"{month} {day}, {y}", f"{month} {day} {y}",
                      f"{day}-{month}-{y}", f"{day}{month}{y}"}
    return sorted(forms)


def identifier_tokens(ds: Dataset, norm: Callable[[str], str] = normalise) -> Tokens:
    """The identifiers of the patient of ``ds`` (the received instance, before
    de-identification) that must not appear in any stored text: name components (first three
    PN components of every representation), IDs, accession number, birth date forms.

    This is the default :data:`TokenFunction`; a better normaliser or more token sources can be
    plugged in through :class:`OutputCheck` without touching the checks."""
    names = [v for kw in _PATIENT_NAMES for v in _values(ds, kw)]
    ids = [v for kw in _PATIENT_IDS for v in _values(ds, kw)]
    for item in ds.get("OtherPatientIDsSequence") or ():
        ids += _values(item, "PatientID")
    return tokens_from(names, ids, _values(ds, "PatientBirthDate"), norm)


def tokens_from(names: Iterable[str], ids: Iterable[str], birth_dates: Iterable[str],
                norm: Callable[[str], str] = normalise) -> Tokens:
    """:class:`Tokens` for person names (PN values), IDs and DA birth dates."""
    words: dict[str, str] = {}
    subs: dict[str, str] = {}
    for value in names:
        for group in value.split("="):
            comps = group.split("^")[:3]
            joined = norm("".join(comps))
            if _is_cjk(joined) and len(joined) >= 2:
                subs[joined] = "name"
            for comp in comps:
                for part in _NAME_SPLIT.split(norm(comp)):
                    if len(part) < 2 or part in _OWN_WORDS:
                        continue
                    if _is_cjk(part):
                        subs[part] = "name"
                    else:
                        words[part] = "name" if len(part) >= 3 else "short-name"
    for value in ids:
        s = norm(value.strip())
        if s in _OWN_WORDS:
            continue
        digits = s.isdigit()
        if _is_cjk(s) and len(s) >= 2 or len(s) >= (6 if digits else 5):
            subs[s] = "id"
        elif len(s) >= (4 if digits else 3):
            words[s] = "id"
    for value in birth_dates:
        for form in birth_date_forms(value.strip()):
            subs[norm(form)] = "birth-date"
    return Tokens(words, subs)


#: Identifying elements looked for in the raw bytes, wherever they are: (tag, VR, kind).
_RAW_IDENTS = ((0x00100010, "PN", "name"), (0x00101001, "PN", "name"),
               (0x00101005, "PN", "name"), (0x00101060, "PN", "name"),
               (0x00100020, "LO", "id"), (0x00101000, "LO", "id"), (0x00080050, "SH", "id"),
               (0x00100030, "DA", "birth-date"))


def raw_identifier_tokens(header: bytes, norm: Callable[[str], str] = normalise) -> Tokens:
    """Identifiers found in the received bytes by their element headers, wherever they sit:
    also inside a value that swallowed them or a private element that hides them, which the
    parsed dataset (and so the engine's cleaning) never shows. ``header`` is every byte of the
    file but the pixel data (:func:`check_input` returns it)."""
    found: dict[str, list[str]] = {"name": [], "id": [], "birth-date": []}
    for tag, vr, kind in _RAW_IDENTS:
        tag_b = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        for explicit in (True, False):
            needle = tag_b + vr.encode() if explicit else tag_b
            i = header.find(needle)
            while i >= 0:
                if explicit:
                    length, start = struct.unpack_from("<H", header, i + 6)[0] \
                        if i + 8 <= len(header) else 0, i + 8
                else:
                    length, start = struct.unpack_from("<L", header, i + 4)[0] \
                        if i + 8 <= len(header) else 0, i + 8
                if 0 < length <= 256 and start + length <= len(header):
                    value = header[start:start + length].rstrip(b"\x00 ")
                    if value and not _CONTROL.search(value):
                        found[kind].append(value.decode("utf-8", "replace")
                                           if not explicit or vr != "DA" else value.decode(
                                               "ascii", "replace"))
                i = header.find(needle, i + 4)
    return tokens_from(found["name"], found["id"], found["birth-date"], norm)


#: Replaceable: the received dataset (before de-identification) -> its identifier tokens.
TokenFunction = Callable[[Dataset], Tokens]


# -- the reader --------------------------------------------------------------------------------


@dataclass
class _Image:
    values: dict[str, object] = field(default_factory=dict)
    pixel_tag: int = 0
    pixel_length: int = -1  # -1: encapsulated
    fragments: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    span: tuple[int, int] = (0, 0)  # where the pixel data's value is


class _Reader:
    """One pass over an element stream. ``out``: the checks of stored bytes apply too."""

    def __init__(self, data: bytes | memoryview, little: bool, out: bool,
                 check: OutputCheck | None = None) -> None:
        self.data = data
        self.little = little
        self.out = out
        self.check = check
        self.image = _Image()
        self.encodings: list[str] = ["iso8859"]
        self.charset_ok = True
        #: (tag, vr, value bytes) of text values for the identifier scan (output only).
        self.texts: list[tuple[int, str, bytes]] = []

    # datasets -------------------------------------------------------------------------------
    def dataset(self, pos: int, end: int, implicit: bool, depth: int, undefined: bool) -> int:
        """Read elements from ``pos``; an undefined-length item stops at its delimiter.
        Returns the position after the dataset (after the delimiter when there is one)."""
        if depth > 32:
            raise Refusal("bad-structure", "nesting too deep")
        data, little = self.data, self.little
        tag_len = _TAG_LEN[little].unpack_from
        explicit = _EXPLICIT[little].unpack_from
        u32 = _U32[little].unpack_from
        creators: dict[int, str] = {}
        while pos < end:
            if end - pos < 8:
                raise Refusal("length-overrun", "element header")
            if implicit:
                group, elem, length = tag_len(data, pos)
                tag = group << 16 | elem
                hdr = 8
                vr: str | None = None
                if tag not in (_ITEM, _ITEM_END, _SEQ_END):
                    vrs = _dict_vrs(tag) if not group & 1 else None
                    vr = vrs[0] if vrs and len(vrs) == 1 else None
            else:
                group, elem, vr_b, short = explicit(data, pos)
                tag = group << 16 | elem
                if tag in (_ITEM, _ITEM_END, _SEQ_END):
                    length, hdr, vr = u32(data, pos + 4)[0], 8, None
                elif not b"AA" <= vr_b <= b"ZZ" and not self.out:
                    # An implicit VR element in an explicit file: pydicom reads it (and the
                    # engine writes it back explicit), so it is read the same way here.
                    length, hdr = u32(data, pos + 4)[0], 8
                    vrs = _dict_vrs(tag) if not group & 1 else None
                    vr = vrs[0] if vrs and len(vrs) == 1 else None
                else:
                    try:
                        vr = vr_b.decode("ascii")
                    except UnicodeDecodeError:
                        raise Refusal("bad-structure", "vr " + tag_name(tag)) from None
                    if vr not in _VRS:
                        raise Refusal("bad-structure", "vr " + tag_name(tag))
                    if vr in _LONG_VRS:
                        if end - pos < 12:
                            raise Refusal("length-overrun", tag_name(tag))
                        length, hdr = u32(data, pos + 8)[0], 12
                    else:
                        length, hdr = short, 8
            if tag == _ITEM_END:
                if not undefined or length != 0:
                    raise Refusal("bad-structure", "stray item delimiter")
                return pos + 8
            if tag in (_ITEM, _SEQ_END):
                raise Refusal("bad-structure", "stray item")
            vpos = pos + hdr
            self._vr_check(tag, group, vr)
            if self.out:
                self.check._allowed(tag, group, elem, depth, creators)  # type: ignore[union-attr]
            if length == 0xFFFFFFFF:
                pos = self._undefined(tag, vr, vpos, end, implicit, depth)
                continue
            if length > end - vpos:
                raise Refusal("length-overrun", tag_name(tag))
            vend = vpos + length
            if vr == "SQ" or (vr == "UN" and not group & 1 and _dict_vrs(tag) == ("SQ",)):
                # UN on a public sequence: pydicom reads it as an implicit VR sequence.
                self.sequence(vpos, vend, implicit or vr == "UN", depth, False)
            elif vr is None and group & 1 and implicit and length >= 8 and \
                    tag_len(data, vpos)[0:2] == (0xFFFE, 0xE000):
                self.sequence(vpos, vend, True, depth, False)  # private sequence, implicit
            elif self.out or not group & 1:
                # Private values are removed on the way in (the safe-listed ones are checked
                # on the way out), so the input check reads only their structure.
                self._value(tag, group, elem, vr, vpos, vend, depth, creators)
            pos = vend
        if undefined:
            raise Refusal("length-overrun", "item without delimiter")
        if pos != end:
            raise Refusal("length-overrun", "dataset")
        return pos

    def sequence(self, pos: int, end: int, implicit: bool, depth: int, undefined: bool) -> int:
        data = self.data
        tag_len = _TAG_LEN[self.little].unpack_from
        while pos < end:
            if end - pos < 8:
                raise Refusal("length-overrun", "item header")
            group, elem, length = tag_len(data, pos)
            tag = group << 16 | elem
            if tag == _SEQ_END:
                if not undefined:
                    raise Refusal("bad-structure", "stray sequence delimiter")
                return pos + 8
            if tag != _ITEM:
                raise Refusal("bad-structure", "not an item")
            pos += 8
            if length == 0xFFFFFFFF:
                pos = self.dataset(pos, end, implicit, depth + 1, True)
            else:
                if length > end - pos:
                    raise Refusal("length-overrun", "item")
                self.dataset(pos, pos + length, implicit, depth + 1, False)
                pos += length
        if undefined:
            raise Refusal("length-overrun", "sequence without delimiter")
        return pos

    def _undefined(self, tag: int, vr: str | None, pos: int, end: int, implicit: bool,
                   depth: int) -> int:
        if tag == _PIXEL_DATA and depth == 0 and vr in ("OB", "OW", None):
            return self._fragments(pos, end)
        if vr == "SQ" or vr == "UN" or vr is None:
            if vr is None and not implicit:
                raise Refusal("bad-structure", tag_name(tag))
            return self.sequence(pos, end, implicit or vr == "UN", depth, True)
        raise Refusal("bad-structure", "undefined length " + tag_name(tag))

    def _fragments(self, pos: int, end: int) -> int:
        data = self.data
        tag_len = _TAG_LEN[self.little].unpack_from
        img = self.image
        img.pixel_tag, img.pixel_length = _PIXEL_DATA, -1
        img.span = (pos, pos)
        while True:
            if end - pos < 8:
                raise Refusal("pixel-data-short", "fragments")
            group, elem, length = tag_len(data, pos)
            tag = group << 16 | elem
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM or length == 0xFFFFFFFF:
                raise Refusal("bad-structure", "fragment")
            if length > end - pos:
                raise Refusal("pixel-data-short", "fragment")
            img.fragments.append((pos, length))
            pos += length

    # elements -------------------------------------------------------------------------------
    def _vr_check(self, tag: int, group: int, vr: str | None) -> None:
        """Explicit VRs against the dictionary (implicit streams take the dictionary's)."""
        if group & 1:
            return
        vrs = _dict_vrs(tag)
        if vrs is None:
            if self.out and tag & 0xFFFF:
                raise Refusal("output-not-kept", "unknown " + tag_name(tag))
            return
        if vr is None:
            return
        if vr in vrs:
            return
        if vr == "UN":
            if self.out:
                raise Refusal("output-invalid", "un " + tag_name(tag))
            return
        if "OB" in vrs and vr == "OW" or "OW" in vrs and vr == "OB":
            return
        raise Refusal("output-invalid" if self.out else "vr-mismatch", tag_name(tag))

    def _value(self, tag: int, group: int, elem: int, vr: str | None, vpos: int, vend: int,
               depth: int, creators: dict[int, str]) -> None:
        length = vend - vpos
        if group & 1 and 0x10 <= elem < 0x100:
            creators[elem] = bytes(self.data[vpos:vend]).decode("latin-1").strip(" \x00").upper()
        if vr is None:  # implicit private or multi-VR public: checked by the dictionary's VR
            if depth == 0 and tag in (_PIXEL_DATA, _FLOAT_PIXELS, _DOUBLE_PIXELS):
                self.image.pixel_tag, self.image.pixel_length = tag, length
                self.image.span = (vpos, vend)
            return
        unit = _UNIT.get(vr)
        if unit is not None and length % unit and (tag != _PIXEL_DATA or vr != "OW"):
            raise Refusal("output-invalid" if self.out else "bad-length", tag_name(tag))
        if self.out and length & 1:
            raise Refusal("output-invalid", "odd length " + tag_name(tag))
        if depth == 0 and tag in _IMAGE_TAGS:
            self._image_value(tag, vr, vpos, vend)
        if tag in (_PIXEL_DATA, _FLOAT_PIXELS, _DOUBLE_PIXELS) and depth == 0:
            self.image.pixel_tag, self.image.pixel_length = tag, length
            self.image.span = (vpos, vend)
            return
        if vr in _TEXT_VRS or vr in _ASCII_VRS:
            value = bytes(self.data[vpos:vend])
            stripped = value.rstrip(b"\x00 ")
            if _CONTROL.search(stripped):
                raise Refusal("output-invalid" if self.out else "length-overrun",
                              "binary in " + tag_name(tag))
            # UIDs that are not UIDs are mapped to new ones on the way in; kept as they are,
            # they would not be valid output.
            if vr in _ASCII_VRS and (_NON_ASCII.search(stripped) or self.out and vr == "UI"
                                     and not _UID_CHARS.match(stripped)):
                raise Refusal("output-invalid" if self.out else "bad-value", tag_name(tag))
            if tag == _CHARSET and depth == 0:
                self._charset(value)
            elif vr in _TEXT_VRS and stripped:
                if not self.out:
                    self._decodes(tag, vr, value)
                if self.out and tag not in _MARKS:
                    self.texts.append((tag, vr, value))
            elif self.out and vr in ("CS", "AE") and stripped:
                self.texts.append((tag, vr, value))

    def _image_value(self, tag: int, vr: str, vpos: int, vend: int) -> None:
        name = _IMAGE_TAGS[tag]
        raw = bytes(self.data[vpos:vend])
        if vr == "US" and len(raw) >= 2:
            self.image.values[name] = _U16[self.little].unpack_from(raw)[0]
        elif vr in ("IS", "CS"):
            s = raw.decode("ascii", "replace").strip(" \x00")
            if name == "frames":
                try:
                    self.image.values[name] = int(float(s.split("\\")[0]))
                except ValueError:
                    raise Refusal("bad-value", "NumberOfFrames") from None
            else:
                self.image.values[name] = s

    def _charset(self, value: bytes) -> None:
        terms = [t.strip() for t in value.decode("ascii", "replace").strip(" \x00").split("\\")]
        if not any(terms):
            return
        if len(terms) > 1 and not terms[0]:
            terms[0] = "ISO 2022 IR 6"
        bad = "output-invalid" if self.out else "undecodable-text"
        for i, term in enumerate(terms):
            if term not in python_encoding:  # the usual misspellings, else refused
                fixed = re.sub(r"^ISO[ _-]?IR[ _-]?(\d+)$", r"ISO_IR \1", term)
                fixed = re.sub(r"^ISO[ _-]?2022[ _-]?IR[ _-]?(\d+)$", r"ISO 2022 IR \1", fixed)
                if fixed not in python_encoding:
                    raise Refusal(bad, "SpecificCharacterSet")
                terms[i] = fixed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.encodings = convert_encodings(terms)

    def _decodes(self, tag: int, vr: str, value: bytes) -> None:
        if b"\x1b" not in value:
            try:
                value.decode(self.encodings[0])
                return
            except UnicodeDecodeError:
                raise Refusal("undecodable-text", tag_name(tag)) from None
            except LookupError:
                raise Refusal("undecodable-text", "SpecificCharacterSet") from None
        encs = self.encodings
        try:
            for frag in _FRAGMENTS.findall(value):
                if not frag.startswith(b"\x1b"):
                    frag.decode(encs[0])
                    continue
                size = 4 if frag.startswith((b"\x1b$(", b"\x1b$)")) else 3
                enc = CODES_TO_ENCODINGS.get(frag[:size], "")
                if not enc or enc not in encs and enc != default_encoding:
                    raise UnicodeError("escape sequence outside the declared character sets")
                if enc in handled_encodings:
                    frag.decode(enc)
                else:
                    frag[size:].decode(enc)
        except (UnicodeError, LookupError):
            raise Refusal("undecodable-text", tag_name(tag)) from None

    def decode(self, vr: str, value: bytes) -> str:
        if b"\x1b" not in value:
            try:
                return value.decode(self.encodings[0])
            except (UnicodeError, LookupError):
                pass
        delims = {0x5C, 0x3D, 0x5E} if vr == "PN" else {0x5C}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return decode_bytes(value, self.encodings, delims)

    # pixels ---------------------------------------------------------------------------------
    def pixels(self, tsuid: str, reason: str) -> None:
        img = self.image
        if not img.pixel_tag:
            return
        v = img.values
        frames = int(v.get("frames", 1) or 1)  # type: ignore[call-overload]
        if frames < 1:
            raise Refusal(reason, "NumberOfFrames")
        if img.pixel_length >= 0:
            if tsuid not in _NATIVE and img.pixel_tag == _PIXEL_DATA:
                raise Refusal("bad-structure", "native pixel data in encapsulated syntax")
            for kw in ("rows", "columns", "bits"):
                if not v.get(kw):
                    raise Refusal(reason, {"rows": "Rows", "columns": "Columns",
                                           "bits": "BitsAllocated"}[kw])
            bits = {_FLOAT_PIXELS: 32, _DOUBLE_PIXELS: 64}.get(img.pixel_tag, v["bits"])
            samples = int(v.get("samples", 1) or 1)  # type: ignore[call-overload]
            photometric = str(v.get("photometric", ""))
            per_pixel = samples * 2
            if samples == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
                per_pixel = 4
            elif samples == 3 and photometric == "YBR_PARTIAL_420":
                per_pixel = 3
            total_bits = v["rows"] * v["columns"] * frames * per_pixel * bits // 2  # type: ignore
            expected = (total_bits + 7) // 8
            if img.pixel_length < expected:
                raise Refusal(reason, "PixelData")
            if self.out and img.pixel_length > expected + 1:
                raise Refusal("output-invalid", "PixelData longer than the image")
            return
        if tsuid in _NATIVE:
            raise Refusal("bad-structure", "encapsulated pixel data in native syntax")
        frags = img.fragments[1:]  # the first item is the Basic Offset Table
        if not img.fragments or len(img.fragments[0:1]) and img.fragments[0][1] % 4:
            raise Refusal(reason, "offset table")
        if len(frags) < frames or not frags:
            raise Refusal(reason, "fragments")
        data = self.data
        if tsuid in _FFD9_SYNTAXES:
            ends = frags if len(frags) == frames else frags[-1:]
            for off, length in ends:
                # a codestream of odd length is padded with one 00 or FF byte
                tail = bytes(data[max(off, off + length - 8):off + length]).rstrip(b"\x00\xff")
                if not tail.endswith(b"\xff\xd9"):
                    raise Refusal(reason, "fragment end")
        elif tsuid == _RLE and len(frags) == frames:
            u32 = _U32[True].unpack_from
            for off, length in frags:
                if length < 64:
                    raise Refusal(reason, "rle header")
                n = u32(data, off)[0]
                if not 1 <= n <= 15 or any(u32(data, off + 4 + 4 * i)[0] >= length
                                           for i in range(n)):
                    raise Refusal(reason, "rle header")


def _meta(data: bytes | memoryview, out: bool) -> tuple[int, str]:
    """Position of the dataset and the transfer syntax, from a Part 10 file's meta group."""
    bad = "output-invalid" if out else "parse-error"
    if len(data) < 144 or bytes(data[128:132]) != b"DICM":
        raise Refusal(bad, "no dicm prefix")
    pos, end = 132, len(data)
    explicit = _EXPLICIT[True].unpack_from
    u32 = _U32[True].unpack_from
    ts = ""
    group_end = None
    while pos + 8 <= end:
        group, elem, vr_b, short = explicit(data, pos)
        if group != 0x0002:
            break
        vr = vr_b.decode("ascii", "replace")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise Refusal("length-overrun", "file meta")
            length, hdr = u32(data, pos + 8)[0], 12
        elif vr in _VRS:
            length, hdr = short, 8
        else:
            raise Refusal(bad, "file meta")
        if length == 0xFFFFFFFF or pos + hdr + length > end:
            raise Refusal("length-overrun", "file meta")
        value = bytes(data[pos + hdr:pos + hdr + length])
        if elem == 0x0000 and length == 4:
            group_end = pos + hdr + length + u32(value)[0]
        if elem == 0x0010:
            ts = value.decode("ascii", "replace").strip(" \x00")
        pos += hdr + length
    if out and group_end != pos:
        raise Refusal("output-invalid", "FileMetaInformationGroupLength")
    if not ts:
        raise Refusal(bad, "TransferSyntaxUID")
    return pos, ts


def _body(data: bytes, pos: int, ts: str) -> tuple[bytes | memoryview, int]:
    if ts in _DEFLATED:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            body = inflater.decompress(bytes(data[pos:]), 1 << 30)
        except zlib.error:
            raise Refusal("bad-structure", "deflate") from None
        return body, 0
    return memoryview(data), pos


def check_input(raw: bytes) -> bytes:
    """Refuse a received file whose element stream is not what a strict reader accepts (see
    the module docstring). Returns the file's bytes without its pixel data (inflated when the
    syntax is deflated), for :func:`raw_identifier_tokens`."""
    pos, ts = _meta(raw, out=False)
    if not UID(ts).is_transfer_syntax:  # how to read it is then a guess: not ours to make
        raise Refusal("unsupported", "transfer syntax")
    body, pos = _body(raw, pos, ts)
    reader = _Reader(body, ts != _BIG_ENDIAN, out=False)
    reader.dataset(pos, len(body), ts == _IMPLICIT, 0, False)
    reader.pixels(ts, "pixel-data-short")
    start, end = reader.image.span
    return bytes(body[:start]) + bytes(body[end:]) if end > start else bytes(body)


class OutputCheck:
    """The check of the exact bytes that will be stored, for one profile.

    Independent of the de-identification engine: it knows the profile's data (what is removed,
    which private attributes are kept), not the code that applied it."""

    def __init__(self, profile: Profile,
                 tokens: TokenFunction = identifier_tokens,
                 norm: Callable[[str], str] = normalise) -> None:
        self.profile = profile
        self.tokens = tokens
        self.normalise = norm
        removed = {t for t, a in profile.actions.items() if a == "X"} | _REMOVED_EXTRA
        if not profile.has("retain_institution_identity"):
            removed |= _ISSUERS
        self.removed = frozenset(removed)
        self.safe: frozenset[tuple[int, str, int]] = frozenset(
            (s.group, s.creator.upper(), s.element) for s in profile.safe_private
        ) if profile.has("retain_safe_private") else frozenset()
        self.safe_groups = frozenset(g for g, _, _ in self.safe)

    def _allowed(self, tag: int, group: int, elem: int, depth: int,
                 creators: dict[int, str]) -> None:
        if group & 1:
            if group not in self.safe_groups or elem < 0x10:
                raise Refusal("output-not-kept", "private")
            if elem < 0x100:
                return  # a creator; the engine drops the ones no kept element uses
            creator = creators.get(elem >> 8, "")
            if (group, creator, elem & 0xFF) not in self.safe:
                raise Refusal("output-not-kept", "private")
            return
        if (elem == 0 or group in (0x0000, 0x0002) or 0x5000 <= group <= 0x501E
                or 0x6000 <= group <= 0x601E or tag in self.removed
                or depth and tag in _TOP_LEVEL_ONLY):
            raise Refusal("output-not-kept", tag_name(tag))
        vrs = _dict_vrs(tag)
        if vrs == ("UR",):
            raise Refusal("output-not-kept", tag_name(tag))

    def check(self, data: bytes, tokens: Tokens) -> None:
        """Refuse ``data`` (the Part 10 bytes to store) unless every check passes."""
        pos, ts = _meta(data, out=True)
        body, pos = _body(data, pos, ts)
        reader = _Reader(body, ts != _BIG_ENDIAN, out=True, check=self)
        reader.dataset(pos, len(body), ts == _IMPLICIT, 0, False)
        reader.pixels(ts, "output-invalid")
        if not tokens:
            return
        norm = self.normalise
        own: set[str] = set()
        for tag, vr, value in reader.texts:  # the node's own pseudonyms are not identifiers
            if tag in (0x00100010, 0x00100020):
                own.update(_NAME_SPLIT.split(norm(reader.decode(vr, value))))
        if own:
            tokens = tokens.without(own)
        for tag, vr, value in reader.texts:
            text = norm(reader.decode(vr, value))
            kind = tokens.find(text, _KINDS.get(vr, _PROSE))
            if kind is not None:
                raise Refusal("output-leak", f"{kind} in {tag_name(tag)}")
