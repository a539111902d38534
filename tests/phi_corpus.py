"""A corpus of PHI-laden DICOM instances built from pydicom's bundled test files.

Every identifying value planted is *recognisable*: text tokens match :data:`TOKEN_RE`
("PHIQ" + 6 capital letters, valid in every text VR including CS), dates and UIDs are recorded
per instance. :func:`tokens_in` then finds what survived in a dataset or in bytes. Pure module:
no pytest fixtures, importable by unit and integration tests alike.
"""

from __future__ import annotations

import datetime as _dt
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

TOKEN_RE = re.compile(r"PHIQ[A-Z]{6}")
UID_ROOT = "1.2.826.0.1.3680043.10.54321."
PRIVATE_CREATOR = "TEACHFILE PHI TEST"

#: Source files: (corpus name, bundled file name).
SOURCES: tuple[tuple[str, str], ...] = (
    ("ct", "CT_small.dcm"),
    ("mr", "MR_small.dcm"),
    ("rtplan", "rtplan.dcm"),
    ("rtstruct", "rtstruct.dcm"),
    ("rtdose", "rtdose.dcm"),
    ("sr", "test-SR.dcm"),
    ("multiframe", "emri_small.dcm"),
    ("colour", "SC_rgb.dcm"),
    ("j2k", "MR_small_jp2klossless.dcm"),
)
#: Instances that share one patient and one study (series sent separately).
RT_GROUP = ("rtplan", "rtstruct", "rtdose")


class TokenFactory:
    """Unique tokens, dates and UIDs; one factory per corpus so nothing repeats."""

    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.uid_n = start
        self.day_n = 0

    def token(self) -> str:
        self.n += 1
        n, letters = self.n, []
        for _ in range(6):
            n, r = divmod(n, 26)
            letters.append(chr(65 + r))
        return "PHIQ" + "".join(reversed(letters))

    def uid(self) -> str:
        self.uid_n += 1
        return f"{UID_ROOT}{self.uid_n}"

    def date(self, year: int = 1950) -> str:
        """A date in a window shorter than the smallest shift (366 days), so a shifted date
        can never equal another planted one."""
        self.day_n = (self.day_n + 1) % 300
        return (_dt.date(year, 1, 1) + _dt.timedelta(days=self.day_n)).strftime("%Y%m%d")


@dataclass
class PhiInstance:
    """One PHI-laden instance and what was planted where."""

    name: str
    source: str
    dataset: Dataset
    tokens: dict[str, str] = field(default_factory=dict)  # token -> location
    dates: dict[str, str] = field(default_factory=dict)  # DA value -> location
    uids: dict[str, str] = field(default_factory=dict)  # original UID -> location
    path: Path | None = None

    @property
    def known(self) -> set[str]:
        """Every planted value :func:`tokens_in` should look for."""
        return set(self.tokens) | set(self.dates) | set(self.uids)

    def raw(self) -> bytes:
        """The instance as a DICOM file (Part 10 bytes)."""
        buf = io.BytesIO()
        self.dataset.save_as(buf, enforce_file_format=True)
        return buf.getvalue()


def _texts(ds: Dataset) -> Iterable[str]:
    for elem in ds.iterall():
        v = elem.value
        if v is None:
            continue
        if isinstance(v, bytes):
            yield v.decode("latin-1")
        elif isinstance(v, Sequence):
            continue
        elif isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
            yield "\\".join(str(x) for x in v)
        else:
            yield str(v)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for elem in meta:
            yield str(elem.value)


def tokens_in(data: bytes | Dataset, known: Iterable[str] = ()) -> set[str]:
    """Planted tokens (and any of ``known`` dates/UIDs/tokens) present in ``data``."""
    if isinstance(data, bytes | bytearray):
        text = data.decode("latin-1")
    else:
        text = "\n".join(_texts(data))
    found = set(TOKEN_RE.findall(text))
    found.update(k for k in known if k and k in text)
    return found


def _ensure_uids(ds: Dataset, tf: TokenFactory) -> None:
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not ds.get(kw):
            setattr(ds, kw, tf.uid())


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99PHI"
    item.CodeMeaning = meaning
    return item


def _plant_identity(inst: PhiInstance, tf: TokenFactory, patient: dict[str, str]) -> None:
    """Plant the identifying attributes MIDI-B style checks look at, nested ones included."""
    ds, t = inst.dataset, inst.tokens

    def tok(where: str) -> str:
        v = tf.token()
        t[v] = where
        return v

    def date(where: str) -> str:
        v = tf.date()
        inst.dates[v] = where
        return v

    for k, v in patient.items():
        if k.startswith("tok:"):
            t[v] = k[4:]
        elif k.startswith("date:"):
            inst.dates[v] = k[5:]
    family, given = patient["tok:PatientName.family"], patient["tok:PatientName.given"]
    pid = patient["tok:PatientID"]
    ds.PatientName = f"{family}^{given}"
    ds.PatientID = pid
    ds.PatientBirthDate = patient["date:PatientBirthDate"]
    ds.AccessionNumber = tok("AccessionNumber")
    ds.InstitutionName = tok("InstitutionName") + " HOSPITAL"
    ds.ReferringPhysicianName = tok("ReferringPhysicianName") + "^DR"
    ds.OperatorsName = tok("OperatorsName")
    ds.StudyDate = patient["date:StudyDate"]
    ds.SeriesDate = date("SeriesDate")
    ds.ContentDate = date("ContentDate")
    ds.PatientAddress = tok("PatientAddress") + " STREET 1"
    ds.StationName = tok("StationName")
    ds.StudyID = tok("StudyID")
    birth = patient["date:PatientBirthDate"]
    ds.StudyDescription = f"CT CHEST {family}"
    ds.SeriesDescription = f"AXIAL MRN {pid}"
    ds.ImageComments = f"Follow-up of {given} {family} born {birth[6:]}/{birth[4:6]}/{birth[:4]}"
    ds.PatientComments = f"{family} prefers mornings"
    # A private tag with a token; and one without a creator.
    block = ds.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", tok("private (0011,xx01)"))
    # Nested: Other Patient IDs Sequence, 2 levels deep.
    opi = Dataset()
    opi.PatientID = tok("OtherPatientIDsSequence[0].PatientID")
    opi.IssuerOfPatientID = tok("OtherPatientIDsSequence[0].IssuerOfPatientID")
    opi.TypeOfPatientID = "TEXT"
    q = Dataset()
    q.UniversalEntityID = tok("OtherPatientIDsSequence[0].IssuerQualifiers[0].UniversalEntityID")
    q.UniversalEntityIDType = "ISO"
    opi.IssuerOfPatientIDQualifiersSequence = Sequence([q])
    ds.OtherPatientIDsSequence = Sequence([opi])
    # Nested: Request Attributes Sequence, with a descriptor and an issuer 2 levels deep.
    ra = Dataset()
    ra.AccessionNumber = ds.AccessionNumber
    ra.RequestedProcedureID = tok("RequestAttributesSequence[0].RequestedProcedureID")
    ra.ScheduledProcedureStepID = tok("RequestAttributesSequence[0].ScheduledProcedureStepID")
    ra.RequestedProcedureDescription = f"CHEST {family} {pid}"
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = tok("RequestAttributesSequence[0].Issuer[0].LocalNamespace")
    ra.IssuerOfAccessionNumberSequence = Sequence([issuer])
    ds.RequestAttributesSequence = Sequence([ra])
    # A PN nested in a sequence the table does not list, 2 levels deep.
    rs = Dataset()
    rs.SeriesInstanceUID = ds.SeriesInstanceUID
    ri = Dataset()
    ri.ReferencedSOPClassUID = ds.SOPClassUID
    ri.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ri.add_new(0x0040A123, "PN", tok("ReferencedSeriesSequence[0][0].PersonName") + "^X")
    rs.ReferencedInstanceSequence = Sequence([ri])
    ds.ReferencedSeriesSequence = Sequence([rs])
    # Overlay comments and a curve label (repeating groups).
    ds.add_new(0x60004000, "LT", tok("(6000,4000) OverlayComments"))
    ds.add_new(0x50002500, "LO", tok("(5000,2500) CurveLabel"))
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        if kw in ds:
            inst.uids[str(ds.data_element(kw).value)] = kw


def _new_patient(tf: TokenFactory) -> dict[str, str]:
    return {
        "tok:PatientName.family": tf.token(),
        "tok:PatientName.given": tf.token(),
        "tok:PatientID": tf.token(),
        "date:PatientBirthDate": tf.date(),
        "date:StudyDate": tf.date(),
    }


def _link_rt(by_name: dict[str, PhiInstance]) -> None:
    """Make rtplan -> rtstruct and rtdose -> rtplan references and one shared study."""
    plan, struct, dose = (by_name[n].dataset for n in RT_GROUP)
    study = plan.StudyInstanceUID
    for ds in (struct, dose):
        ds.StudyInstanceUID = study
    ref = Dataset()
    ref.ReferencedSOPClassUID = struct.SOPClassUID
    ref.ReferencedSOPInstanceUID = struct.SOPInstanceUID
    plan.ReferencedStructureSetSequence = Sequence([ref])
    ref = Dataset()
    ref.ReferencedSOPClassUID = plan.SOPClassUID
    ref.ReferencedSOPInstanceUID = plan.SOPInstanceUID
    dose.ReferencedRTPlanSequence = Sequence([ref])


def make_phi_corpus(out_dir: Path | None = None) -> list[PhiInstance]:
    """Build the corpus (and write ``<name>.dcm`` files into ``out_dir`` if given)."""
    from pydicom.data import get_testdata_file

    tf = TokenFactory()
    out: list[PhiInstance] = []
    rt_patient = _new_patient(tf)
    for name, fname in SOURCES:
        path = get_testdata_file(fname)
        if path is None:
            continue
        ds = pydicom.dcmread(path, force=True)
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        _ensure_uids(ds, tf)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        inst = PhiInstance(name=name, source=fname, dataset=ds)
        out.append(inst)
    by_name = {i.name: i for i in out}
    if all(n in by_name for n in RT_GROUP):
        _link_rt(by_name)
    for inst in out:
        patient = rt_patient if inst.name in RT_GROUP else _new_patient(tf)
        _plant_identity(inst, tf, patient)
        inst.dataset.file_meta.MediaStorageSOPInstanceUID = inst.dataset.SOPInstanceUID
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            inst.path = out_dir / f"{inst.name}.dcm"
            inst.path.write_bytes(inst.raw())
    return out


# ------------------------------------------------------------------ every table attribute
def _table_rows() -> list[tuple[int, str]]:
    from teachfile.reception.profile import load_table

    rows = []
    for r in load_table().rows:
        t = r.tag_int
        if t is None or t >> 16 in (0x0000, 0x0002):
            continue
        rows.append((t, dictionary_VR(t)))
    return rows


def _value_for(vr: str, tf: TokenFactory, where: str, planted: dict[str, str], year: int) -> object:
    def tok() -> str:
        v = tf.token()
        planted[v] = where
        return v

    if vr in ("AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC"):
        return tok()
    if vr == "PN":
        return tok() + "^" + tok()
    if vr == "DA":
        v = tf.date(year)
        planted[v] = where
        return v
    if vr == "DT":
        v = tf.date(year)
        planted[v] = where
        return v + "101112"
    if vr == "TM":
        return "101112"
    if vr == "UI":
        v = tf.uid()
        planted[v] = where
        return v
    if vr == "UR":
        return f"http://{tok()}.example/"
    if vr in ("OB", "OW", "UN", "OB or OW"):
        return (tok() + "\0").encode()[:10]
    if vr == "AS":
        return "077Y"
    if vr in ("DS", "IS"):
        return "7"
    if vr in ("US", "SS", "UL", "SL", "US or SS"):
        return 7
    if vr in ("FL", "FD"):
        return 7.0
    if vr == "SQ":
        return Sequence([_code_item("PHIC", tok())])
    return None


def plant_all_table_attributes(
    ds: Dataset, token_factory: TokenFactory | Callable[[], str] | None = None
) -> dict[str, str]:
    """Put a recognisable value in EVERY concrete Table E.1-1 attribute of ``ds``, at top
    level and in items one and two levels deep of a sequence the table does not list
    (Referenced Series Sequence > Referenced Instance Sequence). Returns value -> location
    ("(gggg,eeee)@level"); TM and numeric values are valid but not recorded."""
    tf = token_factory if isinstance(token_factory, TokenFactory) else TokenFactory(10_000)
    planted: dict[str, str] = {}
    rows = _table_rows()
    level1, level2 = Dataset(), Dataset()
    for level, (target, year) in enumerate(((ds, 1950), (level1, 1960), (level2, 1970))):
        for tag, vr in rows:
            vr = vr.split(" or ")[0] if vr not in ("OB or OW", "US or SS") else vr
            value = _value_for(vr, tf, f"({tag >> 16:04X},{tag & 0xFFFF:04X})@{level}", planted,
                               year)
            if value is None:
                continue
            real_vr = {"OB or OW": "OB", "US or SS": "US"}.get(vr, vr)
            target.add_new(tag, real_vr, value)
    level1.ReferencedInstanceSequence = Sequence([level2])
    ds.ReferencedSeriesSequence = Sequence([level1])
    return planted


# ------------------------------------------------------------------ hostile classes (issue 14)
#: Encodings a planted non-ASCII token may be stored in (escape sequences stripped for ISO 2022).
_GREP_ENCODINGS = ("utf-8", "iso2022_jp", "euc_kr", "gb18030", "shift_jis", "latin-1", "cp1252")
_ESC_RE = re.compile(rb"\x1b[$()*+\-./][@-~]|\x1b[$()][@-~][@-~]?")


def encoded_forms(token: str) -> set[bytes]:
    """Every byte form ``token`` can take in a stored instance, in any character set."""
    out: set[bytes] = set()
    for enc in _GREP_ENCODINGS:
        try:
            b = token.encode(enc)
        except UnicodeError:
            continue
        b = _ESC_RE.sub(b"", b)
        if len(token) >= 2 or token.isascii():
            out.add(b)
    return out


def leaked(data: bytes | Dataset, known: Iterable[str]) -> set[str]:
    """:func:`tokens_in` plus every non-ASCII known token in every encoding (bytes) or in the
    decoded text (datasets)."""
    known = set(known)
    found = tokens_in(data, {k for k in known if k.isascii()})
    rest = {k for k in known if not k.isascii()}
    if isinstance(data, bytes | bytearray):
        bare = _ESC_RE.sub(b"", bytes(data))  # ISO 2022 switches inside a token
        found.update(k for k in rest if any(f in data or f in bare for f in encoded_forms(k)))
    else:
        text = "\n".join(_texts(data))
        found.update(k for k in rest if k in text)
    return found


_HAN = "山田川本中村林森松井高橋金李朴王周徐孫馬朱胡郭何宋許韓曹董岡島崎藤原野沢谷石"
_HANGUL = "김이박최정강조윤장임한오서신권황안송홍전고문양손배백허남심노하곽성차주우구민"
_KANA = "やまだたろうすずきはなこさとうけんいちのかわもりしまあおい"
_LATIN_GIVEN = ("Müller", "Ægir", "Øyvind", "Brontë", "Zoë", "José", "François", "Søren")


class ForeignNames:
    """Unique CJK and accented names, one set per instance (so nothing is shared)."""

    def __init__(self) -> None:
        self.n = 0

    def _pick(self, alphabet: str, k: int) -> str:
        self.n += 1
        n, out = self.n * 7919, []
        for _ in range(k):
            n, r = divmod(n, len(alphabet))
            out.append(alphabet[r])
        return "".join(out)

    def han(self, k: int = 2) -> str:
        return self._pick(_HAN, k)

    def hangul(self, k: int = 2) -> str:
        return self._pick(_HANGUL, k)

    def kana(self, k: int = 3) -> str:
        return self._pick(_KANA, k)


def _base(tf: TokenFactory, sop_class: str, modality: str, charset: str | list[str] | None,
          pixels: bool) -> Dataset:
    if pixels:
        from pydicom.data import get_testdata_file

        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        for tag in [e.tag for e in ds if e.tag.is_private]:
            del ds[tag]
    else:
        ds = Dataset()
        ds.SOPClassUID = sop_class
        ds.Modality = modality
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = tf.uid(), tf.uid(), tf.uid()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _identity(inst: PhiInstance, tf: TokenFactory, family: str | None = None,
              given: str | None = None, pn: str | None = None) -> tuple[str, str, str]:
    """Plant name, ID, birth and study date; returns (family, given, pid) as planted."""
    ds = inst.dataset
    family = family or tf.token()
    given = given or tf.token()
    pid = tf.token()
    for k, where in ((family, "PatientName.family"), (given, "PatientName.given"),
                     (pid, "PatientID")):
        inst.tokens[k] = where
    ds.PatientName = pn or f"{family}^{given}"
    ds.PatientID = pid
    ds.PatientBirthDate = tf.date(1950)
    ds.StudyDate = tf.date(1960)
    ds.AccessionNumber = tf.token()
    inst.tokens[ds.AccessionNumber] = "AccessionNumber"
    inst.dates[ds.PatientBirthDate] = "PatientBirthDate"
    inst.dates[ds.StudyDate] = "StudyDate"
    return family, given, pid


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = meaning
    return item


def _beyond_table(tf: TokenFactory) -> list[PhiInstance]:
    """Finding 2: free text where Table E.1-1 lists nothing."""
    out = []
    # 12-lead ECG: channel labels, channel source meanings, annotation text.
    ds = _base(tf, "1.2.840.10008.5.1.4.1.1.9.1.1", "ECG", None, False)
    inst = PhiInstance("waveform", "generated", ds)
    fam, giv, pid = _identity(inst, tf)
    ch = Dataset()
    ch.ChannelLabel = f"{fam} II"
    ch.ChannelSourceSequence = Sequence([_code("5.6.3-9-2", f"Lead II {giv}")])
    ch.WaveformBitsStored = 16
    grp = Dataset()
    grp.MultiplexGroupLabel = f"RH {pid}"
    grp.ChannelDefinitionSequence = Sequence([ch])
    grp.NumberOfWaveformChannels = 1
    grp.NumberOfWaveformSamples = 4
    grp.SamplingFrequency = "500"
    grp.WaveformBitsAllocated = 16
    grp.WaveformSampleInterpretation = "SS"
    grp.WaveformData = b"\x00\x01" * 4
    ds.WaveformSequence = Sequence([grp])
    ann = Dataset()
    ann.UnformattedTextValue = f"Patient {giv} {fam} MRN {pid}"
    ann.ReferencedWaveformChannels = [1, 1]
    ds.WaveformAnnotationSequence = Sequence([ann])
    out.append(inst)
    # Encapsulated PDF and CDA, with a Modality that is not DOC/OT as well.
    for name, sop, modality in (("pdf-doc", "1.2.840.10008.5.1.4.1.1.104.1", "DOC"),
                                ("pdf-ct", "1.2.840.10008.5.1.4.1.1.104.1", "CT"),
                                ("cda-ot", "1.2.840.10008.5.1.4.1.1.104.2", "OT")):
        ds = _base(tf, sop, modality, None, False)
        inst = PhiInstance(name, "generated", ds)
        fam, giv, pid = _identity(inst, tf)
        ds.DocumentTitle = f"Discharge letter {fam} {pid}"
        ds.ConceptNameCodeSequence = Sequence([_code("18842-5", f"Summary for {giv} {fam}")])
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf" if "pdf" in name else "text/xml"
        ds.EncapsulatedDocument = f"%PDF-1.4 {fam} {pid} ".encode()
        out.append(inst)
    # SR: code meanings at depth 1 to 4.
    ds = _base(tf, "1.2.840.10008.5.1.4.1.1.88.22", "SR", None, False)
    inst = PhiInstance("sr-deep", "generated", ds)
    fam, giv, pid = _identity(inst, tf)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("11528-7", f"Report of {fam}")])
    ds.ContinuityOfContent = "SEPARATE"
    parent = ds
    for depth in range(1, 5):
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "CODE"
        item.ConceptNameCodeSequence = Sequence([_code(f"D{depth}", f"Finding {depth} {giv}")])
        item.ConceptCodeSequence = Sequence([_code(f"V{depth}", f"{fam} {pid} level {depth}")])
        parent.ContentSequence = Sequence([item])
        parent = item
    out.append(inst)
    # Presentation state: content description and label; VOI LUT explanations nested.
    ds = _base(tf, "1.2.840.10008.5.1.4.1.1.11.1", "PR", None, False)
    inst = PhiInstance("pr-content", "generated", ds)
    fam, giv, pid = _identity(inst, tf)
    ds.ContentLabel = fam
    ds.ContentDescription = f"Key images of {giv} {fam}"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    voi.WindowCenterWidthExplanation = f"{fam} soft tissue"
    lut = Dataset()
    lut.LUTDescriptor = [2, 0, 16]
    lut.LUTExplanation = f"LUT for {pid}"
    lut.add_new(0x00283006, "US", [0, 1])  # LUT Data
    voi.VOILUTSequence = Sequence([lut])
    ds.SoftcopyVOILUTSequence = Sequence([voi])
    out.append(inst)
    # CT image: window explanations nested in functional-group-like items and at top level.
    ds = _base(tf, "", "CT", None, True)
    inst = PhiInstance("ct-explanations", "generated", ds)
    fam, giv, pid = _identity(inst, tf)
    ds.WindowCenterWidthExplanation = f"{fam}"
    item = Dataset()
    item.LUTExplanation = f"{giv} {fam} custom"
    ds.VOILUTSequence = Sequence([item])
    ds.add_new(0x00189004, "CS", "RESEARCH")
    ds.ContentDescription = f"{fam}-{giv}"
    out.append(inst)
    return out


def _foreign(tf: TokenFactory) -> list[PhiInstance]:
    """Finding 3: names in Japanese, Korean, Chinese, accented and full-width Latin, in the
    character sets that carry them; short, reordered, hyphenated and run-together spellings."""
    names = ForeignNames()
    out = []

    def plant(name: str, charset: str | list[str] | None, fam: str, giv: str, pn: str,
              texts: list[str]) -> None:
        ds = _base(tf, "", "CT", charset, True)
        inst = PhiInstance(name, "generated", ds)
        _identity(inst, tf, fam, giv, pn)
        inst.tokens[fam] = "PatientName.family"
        inst.tokens[giv] = "PatientName.given"
        if len(fam) == 1 or len(giv) == 1:  # grep the whole name too (one character is noise)
            inst.tokens[fam + giv] = "PatientName"
        ds.StudyDescription = texts[0]
        ds.ProtocolName = texts[1]
        ds.ImageComments = texts[2]
        ds.SeriesDescription = texts[3] if len(texts) > 3 else texts[0]
        ds.ProcedureCodeSequence = Sequence([_code("P1", texts[1])])
        out.append(inst)

    # Japanese, ISO 2022 IR 87 (alphabetic, ideographic and phonetic groups)
    fam, giv, kf, kg = names.han(), names.han(), names.kana(), names.kana()
    plant("ja-ir87", ["", "ISO 2022 IR 87"], fam, giv, f"Yamada^Tarou={fam}^{giv}={kf}^{kg}",
          [f"胸部CT {fam}{giv}様", f"{giv}{fam} 頭部", f"{kf}{kg} 経過観察", f"{fam} {giv}"])
    out[-1].tokens[kf] = "PN phonetic"
    out[-1].tokens[kg] = "PN phonetic"
    # Japanese with half-width katakana (ISO 2022 IR 13 + IR 87)
    fam, giv = names.han(), names.han()
    plant("ja-ir13", ["ISO 2022 IR 13", "ISO 2022 IR 87"], fam, giv, f"{fam}^{giv}",
          [f"{fam}{giv} ﾃｽﾄ", f"頭部 {giv}", f"{fam}", f"{giv}{fam}"])
    # Korean, ISO 2022 IR 149
    fam, giv = names.hangul(1), names.hangul(2)
    plant("ko-ir149", ["", "ISO 2022 IR 149"], fam, giv, f"Hong^Gildong={fam}^{giv}",
          [f"흉부 {fam}{giv} 환자", f"{giv} 검사", f"{fam}{giv}님", f"{giv}{fam}"])
    # UTF-8: Chinese 2-character name (1 + 1), Japanese and Korean mixed
    fam, giv = names.han(1), names.han(1)
    plant("zh-utf8", "ISO_IR 192", fam, giv, f"{fam}^{giv}",
          [f"胸部CT{fam}{giv}患者", f"{fam}{giv}复查", f"患者{fam}{giv}", f"{giv}{fam}"])
    # GB18030
    fam, giv = names.han(1), names.han(2)
    plant("zh-gb18030", "GB18030", fam, giv, f"{fam}^{giv}",
          [f"{fam}{giv}胸部", f"头部{fam}{giv}", f"{fam}{giv}", f"{giv}"])
    # Latin-1 accents and UTF-8 full-width Latin; hyphenated, reordered, run together
    fam = tf.token()
    giv = _LATIN_GIVEN[tf.n % len(_LATIN_GIVEN)]
    plant("latin1", "ISO_IR 100", fam, giv, f"{fam}^{giv}",
          [f"CT {giv}-{fam}", f"{fam}, {giv}", f"{giv}{fam} follow-up",
           f"{_strip(giv)} {fam.lower()}"])
    fam, giv = tf.token(), tf.token()
    full = fam.translate(_FULLWIDTH)
    plant("fullwidth-utf8", "ISO_IR 192", fam, giv, f"{fam}^{giv}",
          [f"ＣＴ {full}", f"{giv.translate(_FULLWIDTH)} 胸部", f"{full}{giv}", f"{giv} {full}"])
    out[-1].tokens[full] = "fullwidth"
    return out


_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


def _strip(s: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


_MONTH_EN = ("January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December")
_MONTH_DE = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
             "September", "Oktober", "November", "Dezember")


def date_forms(da: str) -> list[str]:
    """The written forms of a DA value a report may use (each must not survive)."""
    y, m, d = int(da[:4]), int(da[4:6]), int(da[6:])
    en, de = _MONTH_EN[m - 1], _MONTH_DE[m - 1]
    return [f"{en} {d}, {y}", f"{d} {en[:3]} {y}", f"{d} {en} {y}", f"{d}-{en[:3]}-{y}",
            f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{d}. {de} {y}",
            f"{y}年{m}月{d}日", f"{y}년 {m}월 {d}일"]


def _dates(tf: TokenFactory) -> list[PhiInstance]:
    """Finding 4: dates with month names and in other languages' forms."""
    out = []
    for name, charset in (("dates-en", None), ("dates-utf8", "ISO_IR 192"),
                          ("dates-ir87", ["", "ISO 2022 IR 87"])):
        ds = _base(tf, "", "CT", charset, True)
        inst = PhiInstance(name, "generated", ds)
        _identity(inst, tf)
        forms = date_forms(ds.StudyDate) + [f"DOB {f}" for f in date_forms(ds.PatientBirthDate)]
        if charset is None:
            forms = [f for f in forms if f.isascii()]
        elif charset != "ISO_IR 192":
            forms = [f for f in forms if _encodable(f, "iso2022_jp")]
        for f in forms:
            inst.tokens[f.removeprefix("DOB ")] = "date form"
        half = len(forms) // 2
        ds.StudyDescription = "; ".join(forms[:3])
        ds.ImageComments = " / ".join(forms[3:half])
        ds.PatientComments = " ".join(forms[half:])
        ds.ProtocolName = forms[-1]
        ds.ProcedureCodeSequence = Sequence([_code("P1", f"Seen {forms[0]}")])
        out.append(inst)
    return out


def _encodable(text: str, enc: str) -> bool:
    try:
        text.encode(enc)
    except UnicodeError:
        return False
    return True


def _uids(tf: TokenFactory) -> list[PhiInstance]:
    """Finding 5: UIDs behind the standard root or in *ClassUID attributes that embed a birth
    date and an MRN."""
    ds = _base(tf, "", "CT", None, True)
    inst = PhiInstance("uids", "generated", ds)
    _identity(inst, tf)
    birth, mrn = ds.PatientBirthDate, "7" + str(abs(hash(ds.PatientID)) % 10**8)
    fake_ref = f"1.2.840.10008.{birth}.{mrn}"
    fake_class = f"1.2.840.10008.5.1.4.1.1.{birth}.{mrn}1"
    ref = Dataset()
    ref.ReferencedSOPClassUID = fake_class
    ref.ReferencedSOPInstanceUID = fake_ref
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00081150, "UI", fake_class)  # a top-level *ClassUID (out of place, on purpose)
    ds.add_new(0x00400554, "UI", f"1.2.840.10008.9.{mrn}")  # Specimen UID-like
    for u in (fake_ref, fake_class, f"1.2.840.10008.9.{mrn}"):
        inst.uids[u] = "embedded"
    inst.tokens[mrn] = "MRN inside a UID"
    return out_list(inst)


def out_list(*insts: PhiInstance) -> list[PhiInstance]:
    return list(insts)


#: The hostile classes: name -> builder.
CLASSES: dict[str, Callable[[TokenFactory], list[PhiInstance]]] = {
    "beyond-table": _beyond_table,
    "foreign": _foreign,
    "dates": _dates,
    "uids": _uids,
}


def make_class_corpus(out_dir: Path | None = None) -> dict[str, list[PhiInstance]]:
    """Every hostile class, each instance with its own patient (and ``out_dir/<class>/<n>.dcm``
    files if given). ``known`` of each instance lists every planted value to grep for."""
    tf = TokenFactory(50_000)
    corpus: dict[str, list[PhiInstance]] = {}
    for cls, build in CLASSES.items():
        insts = build(tf)
        for inst in insts:
            if out_dir is not None:
                (out_dir / cls).mkdir(parents=True, exist_ok=True)
                inst.path = out_dir / cls / f"{inst.name}.dcm"
                inst.path.write_bytes(inst.raw())
        corpus[cls] = insts
    return corpus
