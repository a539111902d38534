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
