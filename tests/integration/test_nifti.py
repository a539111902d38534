"""``teachfile export --format nifti`` on a real node: a CT and an MR series with planted
identifiers go in over C-STORE, come out as .nii.gz + BIDS sidecar, one per series, with the
geometry of the DICOM and no value of the original (nor of the stored case) in any output file.
"""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from harness import Node, send_pynetdicom
from teachfile.api.nifti import case_tokens, dcm2niix_available
from teachfile.cli.main import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dcm2niix_available(), reason="dcm2niix is not installed "
                       "(scripts/setup --postgres installs it)"),
]
nib = pytest.importorskip("nibabel", reason="nibabel comes with the test extras")

NAME, PID, BIRTH, ACCESSION = "PHIQNIFTIA^PHIQNIFTIB", "PHIQNIFTIC", "19610423", "PHIQNIFTID"


def _series(source: str, slices: int, study_uid: str, number: int) -> list[pydicom.Dataset]:
    base = pydicom.dcmread(get_testdata_file(source))
    series_uid = generate_uid()
    spacing = 2.5
    out = []
    for i in range(slices):
        ds = copy.deepcopy(base)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
        ds.AccessionNumber = ACCESSION
        ds.InstitutionName = "PHIQNIFTIE HOSPITAL"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber = number, i + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -120.0, 10.0 + i * spacing]
        ds.SliceThickness = spacing
        ds.SpacingBetweenSlices = spacing
        ds.PixelSpacing = [0.75, 0.8]
        arr = ds.pixel_array.copy()
        arr[:8, :8] = i  # each slice differs, so the volume's order is checkable
        ds.PixelData = arr.tobytes()
        out.append(ds)
    return out


def test_export_nifti_ct_and_mr(node: Node, tmp_path: Path) -> None:
    study_uid = generate_uid()
    ct = _series("CT_small.dcm", 6, study_uid, 2)
    mr = _series("MR_small.dcm", 4, study_uid, 5)
    assert send_pynetdicom(node, ct + mr) == [0] * 10
    studies = node.get("/studies").json()
    assert len(studies) == 1
    stored = node.stored_datasets()
    out = tmp_path / "nifti"
    auth = ["--user", node.auth[0], "--password", node.auth[1]]
    assert main(["export", "--format", "nifti", "--url", node.url, *auth,
                 "--study", studies[0], "-o", str(out)]) == 0

    niis = sorted(out.glob("*.nii.gz"))
    sidecars = sorted(out.glob("*.json"))
    assert len(niis) == 2 and len(sidecars) == 2, sorted(p.name for p in out.iterdir())

    planted = {NAME, *NAME.split("^"), PID, BIRTH, "1961-04-23", ACCESSION, "PHIQNIFTIE"}
    forbidden = planted | case_tokens(stored)
    for path in out.iterdir():
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert not [t for t in forbidden if t.encode() in data], path.name
        assert not any(t in path.name for t in forbidden)

    by_slices = {}
    for path in niis:
        img = nib.load(str(path))
        by_slices[img.shape[2] if img.ndim >= 3 else 1] = img
    for series, rows_cols in ((ct, (128, 128)), (mr, (64, 64))):
        img = by_slices[len(series)]
        first = series[0]
        assert img.shape[:2] == (int(first.Columns), int(first.Rows)) == rows_cols
        zooms = img.header.get_zooms()
        # NIfTI's first axis runs along a row (column spacing), the second down a column.
        assert zooms[0] == pytest.approx(float(first.PixelSpacing[1]), abs=1e-3)
        assert zooms[1] == pytest.approx(float(first.PixelSpacing[0]), abs=1e-3)
        assert zooms[2] == pytest.approx(2.5, abs=1e-3)
        # Axial DICOM (LPS, rows along +x, columns along +y) is RAS with x and y flipped.
        rot = img.affine[:3, :3] / np.array(zooms[:3])
        assert np.allclose(np.abs(np.diag(rot)), 1.0, atol=1e-3)
        assert rot[2, 2] == pytest.approx(1.0, abs=1e-3)
