"""Sampled lossless verification (the default) on a real node: every stored pixel is still
exact, and /teachfile/status says which instances were decoded to prove it (issue 19)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from harness import Node, send_pynetdicom, start_node

J2K = "1.2.840.10008.1.2.4.90"


def slice_(series: str, study: str, i: int, rows: int, signed: bool) -> Dataset:
    rng = np.random.default_rng(i + 100 * rows + signed)
    y, x = np.mgrid[-1:1:rows * 1j, -1:1:rows * 1j]
    body = x**2 / 0.8**2 + y**2 / 0.6**2 < 1
    hu = np.where(body, 40 + rng.normal(0, 20, (rows, rows)), -1000.0)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "MRN-19", "CT"
    ds.InstanceNumber = i + 1
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = int(signed)
    arr = hu.clip(-2048, 2047) if signed else (hu + 1024).clip(0, 4095)
    ds.PixelData = arr.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, list[Dataset]]]:
    study, a, b = generate_uid(), generate_uid(), generate_uid()
    # Formats: series a 96x96 signed (10 instances), a 64x64 signed (3), b 96x96 unsigned (4).
    inputs = ([slice_(a, study, i, 96, True) for i in range(10)]
              + [slice_(a, study, i, 64, True) for i in range(10, 13)]
              + [slice_(b, study, i, 96, False) for i in range(4)])
    node = start_node(tmp_path_factory.mktemp("verification"), aet="TFVERIFY")
    try:
        assert send_pynetdicom(node, inputs) == [0] * len(inputs)
        yield node, inputs
    finally:
        node.stop()


def test_every_instance_is_stored_exact(received: tuple[Node, list[Dataset]]) -> None:
    node, inputs = received
    want = {(int(d.Rows), int(d.PixelRepresentation), int(d.InstanceNumber)):
            pixel_array(d, raw=True) for d in inputs}
    ids = node.instances()
    assert len(ids) == len(inputs)
    for iid in ids:
        ds = pydicom.dcmread(io.BytesIO(node.instance_bytes(iid)))
        assert str(ds.file_meta.TransferSyntaxUID) == J2K
        key = (int(ds.Rows), int(ds.PixelRepresentation), int(ds.InstanceNumber))
        np.testing.assert_array_equal(pixel_array(ds, raw=True), want[key])


def test_status_shows_each_format_proven_once(received: tuple[Node, list[Dataset]]) -> None:
    node, inputs = received
    v = node.status()["verification"]
    assert (v["mode"], v["sample_rate"]) == ("sampled", 0.05)
    checked = v["checked"]
    assert checked["first"] == 3 and "failed" not in checked
    assert sum(checked.values()) == len(inputs)
    assert set(checked) <= {"first", "sample", "header-only"}
    assert (v["proven_formats"], v["distrusted_formats"]) == (3, 0)
