"""Structurally hostile DICOM files, one generator per class of attack, with planted tokens.

Each class is what a forgiving reader (pydicom) accepts and a careless pipeline stores: an
element whose length swallows a hidden PatientName, a sequence sent as UT/LT/OB/OW/UN with a
PatientName inside, truncated files, pixel data shorter than the image, truncated fragments,
text that does not decode in its character set, public elements with the wrong VR, and
identifiers planted in attributes the profile keeps. Tokens follow
:data:`phi_corpus.TOKEN_RE`, so :func:`phi_corpus.tokens_in` finds any that survive. Pure
module: the unit tests run it in-process, the integration tests through a real node.
"""

from __future__ import annotations

import io
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.sequence import Sequence

from phi_corpus import TokenFactory

SOURCES = ("CT_small.dcm", "MR_small.dcm")


@dataclass
class Hostile:
    """One hostile file: its class, its bytes, and every value planted in it."""

    klass: str
    name: str
    raw: bytes
    known: set[str] = field(default_factory=set)
    #: True when the file must be refused whatever the profile does (structure); False when
    #: storing a clean version is acceptable too (e.g. a public sequence sent as UN).
    must_refuse: bool = True


def _save(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _base(source: str, tf: TokenFactory, uid_n: int) -> tuple[Dataset, set[str]]:
    ds = pydicom.dcmread(get_testdata_file(source))
    family, given, pid = tf.token(), tf.token(), tf.token()
    birth = tf.date(1961)
    ds.PatientName = f"{family}^{given}"
    ds.PatientID = pid
    ds.PatientBirthDate = birth
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, kw, tf.uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    known = {family, given, pid, birth}
    return ds, known


def _element_bytes(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if len(value) & 1:
        value += b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in ("OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV", "SV", "UV"):
        return head + b"\0\0" + struct.pack("<L", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _find_element(raw: bytes, tag: int, vr: str) -> int:
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    i = raw.find(needle, 132)
    if i < 0:
        raise LookupError(f"{tag:08x} {vr} not found")
    return i


def swallow(tf: TokenFactory, source: str, n: int) -> Hostile:
    """A kept short-VR element (Convolution Kernel, Manufacturer, Modality, Body Part...) whose
    length covers a hidden PatientName/PatientID after its value."""
    ds, known = _base(source, tf, n)
    targets = [(0x00181210, "SH", "B30f"), (0x00080070, "LO", "ACME"), (0x00080060, "CS", "CT"),
               (0x00180015, "CS", "CHEST"), (0x00181030, "LO", "ROUTINE")]
    tag, vr, value = targets[n % len(targets)]
    ds.add_new(tag, vr, value)
    raw = _save(ds)
    i = _find_element(raw, tag, vr)
    length = struct.unpack_from("<H", raw, i + 6)[0]
    tok = tf.token()
    known.add(tok)
    hidden = _element_bytes(0x00100010, "PN", f"{tok}^{sorted(known)[0]}".encode())
    if n % 2:
        hidden += _element_bytes(0x00100020, "LO", tok.encode())
    new_value = raw[i + 8:i + 8 + length] + hidden
    raw = raw[:i + 6] + struct.pack("<H", len(new_value)) + new_value + raw[i + 8 + length:]
    return Hostile("swallow", f"swallow-{n}", raw, known)


def _items(elements: list[tuple[int, str, bytes]], implicit: bool) -> bytes:
    body = b""
    for tag, vr, value in elements:
        if len(value) & 1:
            value += b" "
        if implicit:
            body += struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value
        else:
            body += _element_bytes(tag, vr, value)
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body


def hidden_sequence(tf: TokenFactory, source: str, n: int) -> Hostile:
    """A sequence the profile keeps (Anatomic Region, Procedure Code, View Code...) sent with
    VR UT, LT, OB, OW or UN, its item holding a PatientName, PatientID and birth date."""
    ds, known = _base(source, tf, n)
    seqs = (0x00082218, 0x00081032, 0x00540220, 0x00400260)
    tag = seqs[n % len(seqs)]
    vr = ("UT", "LT", "OB", "OW", "UN")[n % 5]
    tok_name, tok_id = tf.token(), tf.token()
    birth = sorted(k for k in known if k.isdigit())[0]
    known |= {tok_name, tok_id}
    elements = [(0x00080100, "SH", b"T-D0010"), (0x00080102, "SH", b"SRT"),
                (0x00080104, "LO", b"Region"), (0x00100010, "PN", f"{tok_name}^X".encode()),
                (0x00100020, "LO", tok_id.encode()), (0x00100030, "DA", birth.encode())]
    value = _items(elements, implicit=(vr == "UN"))
    ds.add_new(tag, "OB", b"\0\0")  # a placeholder where the element belongs
    raw = _save(ds)
    i = _find_element(raw, tag, "OB")
    elem = _element_bytes(tag, vr, value)
    raw = raw[:i] + elem + raw[i + 12 + 2:]
    # UN is the standard's way to send a sequence the sender does not know: stored clean or
    # refused are both right; the other VRs hide it and must be refused.
    return Hostile("hidden-sequence", f"hidden-sequence-{vr}-{n}", raw, known,
                   must_refuse=vr != "UN")


def truncated(tf: TokenFactory, source: str, n: int) -> Hostile:
    """The file cut short: in the header, in the middle of the pixel data, a few bytes off."""
    ds, known = _base(source, tf, n)
    raw = _save(ds)
    rng = random.Random(n)
    pixel_at = raw.rfind(b"\xe0\x7f\x10\x00")
    cuts = (rng.randrange(200, pixel_at), rng.randrange(pixel_at + 12, len(raw) - 2),
            len(raw) - rng.randrange(1, 8))
    return Hostile("truncated", f"truncated-{n}", raw[:cuts[n % 3]], known)


def short_pixels(tf: TokenFactory, source: str, n: int) -> Hostile:
    """Native pixel data shorter than Rows x Columns x bits, in a well-formed stream (what a
    sender that re-encodes a truncated file sends, pynetdicom for example)."""
    ds, known = _base(source, tf, n)
    data = ds.PixelData
    ds.PixelData = data[: max(2, (len(data) * (n % 9 + 1) // 10) & ~1)]
    return Hostile("short-pixels", f"short-pixels-{n}", _save(ds), known)


def short_fragments(tf: TokenFactory, source: str, n: int) -> Hostile:
    """Encapsulated (JPEG 2000) pixel data whose codestream is cut, or whose frames are
    missing, re-encapsulated with consistent lengths."""
    ds = pydicom.dcmread(get_testdata_file(
        "emri_small_jpeg_2k_lossless.dcm" if n % 2 else "MR_small_jp2klossless.dcm"))
    family, given, pid = tf.token(), tf.token(), tf.token()
    ds.PatientName, ds.PatientID = f"{family}^{given}", pid
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, kw, tf.uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    frames = list(generate_fragments(ds.PixelData))[1:] if int(
        ds.get("NumberOfFrames", 1) or 1) == 1 else [
        f for f in pydicom.encaps.generate_frames(ds.PixelData,
                                                  number_of_frames=int(ds.NumberOfFrames))]
    if n % 2 and len(frames) > 1:
        frames = frames[: len(frames) // 2]  # frames missing
    else:
        cut = frames[-1][: len(frames[-1]) * (n % 7 + 2) // 10]
        frames[-1] = cut + (b"\0" if len(cut) & 1 else b"")
    ds.PixelData = encapsulate(frames)
    return Hostile("short-fragments", f"short-fragments-{n}", _save(ds),
                   {family, given, pid})


def undecodable(tf: TokenFactory, source: str, n: int) -> Hostile:
    """Text that does not decode in the declared Specific Character Set (or an unknown one),
    around a planted name."""
    ds, known = _base(source, tf, n)
    tok = str(ds.PatientName).split("^")[0]  # the name, hidden in bytes that do not decode
    cases = (("ISO_IR 192", b"\xc3\x28" + tok.encode()), ("ISO_IR 192", tok.encode() + b"\xff"),
             ("GB18030", b"\x81\x30" + tok.encode()),
             ("\\ISO 2022 IR 87", b"\x1b$B\x7f\x7f" + tok.encode()),
             ("ISO_IR 999", tok.encode() + b"\xe9"))
    charset, value = cases[n % len(cases)]
    ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    raw = _save(ds)
    ds.add_new(0x00081030, "LO", "PLACEHOLDER")  # Study Description
    raw = _save(ds)
    i = _find_element(raw, 0x00081030, "LO")
    length = struct.unpack_from("<H", raw, i + 6)[0]
    if len(value) & 1:
        value += b" "
    raw = raw[:i + 6] + struct.pack("<H", len(value)) + value + raw[i + 8 + length:]
    return Hostile("undecodable", f"undecodable-{n}", raw, known)


def wrong_vr(tf: TokenFactory, source: str, n: int) -> Hostile:
    """Public elements sent with a VR the dictionary does not give them (PatientName as LO,
    Rows as SS, Study Date as LO, Convolution Kernel as OB)."""
    ds, known = _base(source, tf, n)
    cases = ((0x00100010, "PN", "LO"), (0x00280010, "US", "SS"), (0x00080020, "DA", "LO"),
             (0x00100020, "LO", "OB"), (0x00081030, "LO", "UT"))
    tag, vr, bad = cases[n % len(cases)]
    if tag == 0x00081030:
        ds.StudyDescription = "CHEST " + sorted(known)[0]
    raw = _save(ds)
    i = _find_element(raw, tag, vr)
    length = struct.unpack_from("<H", raw, i + 6)[0]
    value = raw[i + 8:i + 8 + length]
    raw = raw[:i] + _element_bytes(tag, bad, value) + raw[i + 8 + length:]
    return Hostile("wrong-vr", f"wrong-vr-{n}", raw, known)


def kept_text_leak(tf: TokenFactory, source: str, n: int) -> Hostile:
    """Well-formed files with the patient's name, ID or birth date in attributes the profile
    keeps as they are (Convolution Kernel, Manufacturer's Model Name, a Code Meaning of a kept
    sequence, Image Type): the output check must find them. Storing is fine once cleaned."""
    ds, known = _base(source, tf, n)
    family = str(ds.PatientName).split("^")[0]
    pid, birth = str(ds.PatientID), str(ds.PatientBirthDate)
    choice = n % 4
    if choice == 0:
        ds.ConvolutionKernel = family[:16]
    elif choice == 1:
        ds.ManufacturerModelName = f"SCANNER {pid}"
    elif choice == 2:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = "T-D0010", "SRT"
        item.CodeMeaning = f"Chest of {family} born {birth[6:]}.{birth[4:6]}.{birth[:4]}"
        ds.AnatomicRegionSequence = Sequence([item])
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", pid[:16]]
    return Hostile("kept-text-leak", f"kept-text-leak-{n}", _save(ds), known, must_refuse=False)


HUGE_LENGTHS = (b"\xff\xff\xff\x7f", b"\xfe\xff\xff\xff", b"\x00\x00\x00\x80", b"\xff\xff\x00\x00")
BAD_VRS = (b"ZZ", b"\x00\x00", b"SQ", b"UN", b"OB", b"UT", b"LT", b"OW", b"PN", b"US")


def mutate(raw: bytes, kind: str, rng: random.Random) -> bytes:
    """One random mutation of ``kind``: truncate, flip (bits), vr (an element's VR code), length
    (an element's length field)."""
    b = bytearray(raw)
    if kind == "truncate":
        return bytes(b[: rng.randrange(132, len(b))])
    if kind == "flip":
        for _ in range(rng.randrange(1, 12)):
            i = rng.randrange(132, min(len(b), 4000))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    # structural: at an element header (found by its even group number and a VR)
    for _ in range(50):
        i = rng.randrange(140, min(len(b) - 12, 4000))
        if b[i + 4:i + 6].isalpha() and b[i + 4:i + 6].isupper() and b[i + 1] == 0:
            break
    if kind == "vr":
        b[i + 4:i + 6] = rng.choice(BAD_VRS)
    elif kind == "length":
        if b[i + 4:i + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC"):
            b[i + 8:i + 12] = rng.choice(HUGE_LENGTHS)
        else:
            b[i + 6:i + 8] = struct.pack("<H", rng.choice((0xFFFF, 0x1000, 0x0100, 0x0041)))
    return bytes(b)


def intact_tokens(raw: bytes, mutated: bytes, tokens: set[str]) -> set[str]:
    """The tokens a mutation left alone: every occurrence still there, and no mutated byte in
    an occurrence, the byte after it or the 80 bytes before it (its header, the value start). A
    damaged PatientID, or a PatientName whose tag became an unknown one, no longer identifies
    anyone as far as the bytes say: its other copies are ordinary text."""
    hit = [i for i in range(min(len(raw), len(mutated))) if raw[i] != mutated[i]]
    out = set()
    for t in tokens:
        tb = t.encode()
        occurrences = [m.start() for m in re.finditer(re.escape(tb), raw)]
        if mutated.count(tb) == len(occurrences) and not any(
                o - 80 <= h <= o + len(tb) for o in occurrences for h in hit):
            out.add(t)
    return out


CLASSES: dict[str, Callable[[TokenFactory, str, int], Hostile]] = {
    "swallow": swallow,
    "hidden-sequence": hidden_sequence,
    "truncated": truncated,
    "short-pixels": short_pixels,
    "short-fragments": short_fragments,
    "undecodable": undecodable,
    "wrong-vr": wrong_vr,
    "kept-text-leak": kept_text_leak,
}


def make_hostile_corpus(per_class: int = 10) -> list[Hostile]:
    tf = TokenFactory(start=50_000)
    out = []
    for make in CLASSES.values():
        for n in range(per_class):
            out.append(make(tf, SOURCES[n % len(SOURCES)], n))
    return out
