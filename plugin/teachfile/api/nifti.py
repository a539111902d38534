"""A stored case as NIfTI for the research track: ``teachfile export --format nifti`` and the
portal's download (:func:`nifti_zip`, over the plugin's own REST API).

Each series is fetched instance by instance into a private temporary directory and converted by
Debian's ``dcm2niix`` with its BIDS anonymisation on (``-ba y``). The node's output is already
de-identified, but a sidecar is a new place for values to land, so every output file is then
checked against the case's own identifying values (names, IDs, accession numbers, dates, read
from the stored instances): a sidecar field that carries one is removed, and a file that still
carries one after that is deleted and the export fails. Output names are the series number and
a prefix of Orthanc's series id (a hash): no value of the case appears in a file name.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.dataset import Dataset

from ..errors import TeachfileError

DCM2NIIX = "dcm2niix"
#: Attributes whose stored values must never reach a NIfTI file or its sidecar, besides every PN
#: and DA value (the node has already made them pseudonymous; they are still the case's handle).
_IDENTIFYING = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID",
                "PatientBirthDate", "InstitutionName", "InstitutionAddress", "StationName",
                "DeviceSerialNumber", "RequestingService", "PatientAddress")
#: Values shorter than this are too common to mean anything ("1", "CT", "0").
_MIN_TOKEN = 4


class _Node(Protocol):
    def json(self, path: str) -> Any: ...

    def content(self, path: str) -> bytes: ...


@dataclass
class SeriesOutput:
    series: str
    files: list[Path] = field(default_factory=list)
    removed_fields: list[str] = field(default_factory=list)


def dcm2niix_available() -> bool:
    return shutil.which(DCM2NIIX) is not None


def case_tokens(datasets: Iterable[Dataset]) -> set[str]:
    """The identifying values of a stored case, as they would be written in text."""
    out: set[str] = set()

    def add(value: object) -> None:
        text = str(value).strip()
        if len(text) >= _MIN_TOKEN:
            out.add(text)
            if len(text) == 8 and text.isdigit():  # a DA value also as BIDS writes it
                out.add(f"{text[:4]}-{text[4:6]}-{text[6:]}")

    for ds in datasets:
        for elem in ds.iterall():
            if elem.VR == "PN" and elem.value:
                for name in (elem.value if elem.VM > 1 else [elem.value]):
                    add(name)
                    for part in str(name).replace("^", " ").split():
                        add(part)
            elif elem.value and (elem.VR == "DA" or elem.keyword in _IDENTIFYING):
                for v in (elem.value if elem.VM > 1 else [elem.value]):
                    add(v)
    return out


def _found(data: bytes, tokens: set[str]) -> bool:
    return any(t.encode("utf-8", "ignore") in data for t in tokens)


def _clean_sidecar(path: Path, tokens: set[str]) -> list[str]:
    """Remove the sidecar fields that carry a token; the names of the fields removed."""
    doc = json.loads(path.read_text())
    removed = [k for k, v in doc.items() if _found(json.dumps(v).encode(), tokens)]
    for k in removed:
        del doc[k]
    if removed:
        path.write_text(json.dumps(doc, indent=2) + "\n")
    return removed


def _file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _run_dcm2niix(src: Path, out: Path, name: str) -> None:
    cmd = [DCM2NIIX, "-b", "y", "-ba", "y", "-z", "y", "-f", name, "-o", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        # dcm2niix's own words can quote file contents: say only that it failed and how.
        raise TeachfileError(f"dcm2niix could not convert series {name} (exit {done.returncode})")


def export_nifti(node: _Node, study: str, out: Path) -> list[SeriesOutput]:
    """Convert every image series of ``study`` into ``out``; see the module's docstring."""
    if not dcm2niix_available():
        raise TeachfileError("dcm2niix is not installed (scripts/setup installs it: "
                             "apt-get install dcm2niix)")
    out.mkdir(parents=True, exist_ok=True)
    results: list[SeriesOutput] = []
    for series in node.json(f"/studies/{study}/series"):
        sid = str(series["ID"])
        number = str(series.get("MainDicomTags", {}).get("SeriesNumber", "") or "0").strip()
        name = f"series{number if number.isdigit() else '0'}_{sid[:8]}"
        with tempfile.TemporaryDirectory(prefix="teachfile-nifti-") as tmp:
            src = Path(tmp) / "dicom"
            src.mkdir()
            datasets = []
            for iid in series.get("Instances", []):
                data = node.content(f"/instances/{iid}/file")
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                if "Rows" not in ds:  # SR, KOS, documents: no image to convert
                    continue
                datasets.append(ds)
                (src / f"{iid}.dcm").write_bytes(data)
            if not datasets:
                continue
            tokens = case_tokens(datasets)
            before = set(out.iterdir())
            _run_dcm2niix(src, out, name)
            made = sorted(set(out.iterdir()) - before)
        result = SeriesOutput(sid, made)
        for path in made:
            if path.suffix == ".json":
                result.removed_fields += _clean_sidecar(path, tokens)
        leaking = [p for p in made if _found(_file_bytes(p), tokens)]
        if leaking:
            for p in made:
                p.unlink(missing_ok=True)
            raise TeachfileError(f"series {name}: an output file still carries a value of the "
                                 "case; nothing of this series was kept")
        results.append(result)
    return results


class _OverOrthanc:
    """The two calls :func:`export_nifti` makes, over the plugin's in-process REST API."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def json(self, path: str) -> Any:
        return json.loads(self.api.get(path))

    def content(self, path: str) -> bytes:
        return bytes(self.api.get(path))


def nifti_zip(api: Any, study: str) -> bytes:
    """The case's NIfTI files (and sidecars) as one ZIP, converted in a private temporary
    directory that is gone when this returns."""
    with tempfile.TemporaryDirectory(prefix="teachfile-nifti-") as tmp:
        out = Path(tmp) / "nifti"
        results = export_nifti(_OverOrthanc(api), study, out)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # .nii.gz is compressed
            for r in results:
                for f in r.files:
                    z.write(f, f.name)
        return buf.getvalue()
