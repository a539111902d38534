"""Several associations at once on a real node: queued instances are handed to Orthanc
uncompressed and encoded by the node's own transcoder after the callback, outside Orthanc's
plugin mutex (reception/deferred.py). Every one must still be stored as exact lossless JPEG
2000, de-identified and sealed, a refused one must still be refused, and one the node keeps
uncompressed must be stored, deflated, not re-encoded by GDCM (which breaks its seal) (issue 19).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import generate_uid
from test_verification_node import J2K, slice_

from harness import Node, start_node, storescu

ASSOCIATIONS = 4
PER_ASSOCIATION = 12


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Node, list[Dataset], list[list[int]]]]:
    tmp = tmp_path_factory.mktemp("ingest")
    study, series = generate_uid(), generate_uid()
    inputs = [slice_(series, study, i, 256, True) for i in range(ASSOCIATIONS * PER_ASSOCIATION)]
    refused = slice_(series, study, 999, 64, True)
    del refused.SeriesInstanceUID  # refused: missing-uid
    chunks: list[list[Path]] = []
    for k in range(ASSOCIATIONS):
        files = []
        for j, ds in enumerate(inputs[k::ASSOCIATIONS]):
            path = tmp / f"a{k}-{j:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        chunks.append(files)
    refused_path = tmp / "refused.dcm"
    refused.save_as(refused_path, enforce_file_format=True)
    chunks[1].insert(len(chunks[1]) // 2, refused_path)
    kept = slice_(series, study, 998, 64, False)  # 32 bits: JPEG 2000 here cannot hold them
    kept.BitsAllocated, kept.BitsStored, kept.HighBit = 32, 32, 31
    kept.PixelData = (np.arange(64 * 64, dtype="<u4") * 1000).tobytes()
    kept_path = tmp / "kept.dcm"
    kept.save_as(kept_path, enforce_file_format=True)
    chunks[2].insert(len(chunks[2]) // 2, kept_path)
    node = start_node(tmp / "node", aet="TFINGEST")
    assert node.config["IngestTranscoding"] == J2K
    try:
        with ThreadPoolExecutor(ASSOCIATIONS) as pool:
            # -nh: storescu halts at the first failure by default.
            results = list(pool.map(lambda c: storescu(node, c[1], f"SENDER{c[0]}",
                                                       ["-nh"])[1], enumerate(chunks)))
        yield node, [*inputs, kept], results
    finally:
        node.stop()


def test_every_sender_is_told_what_happened(
        received: tuple[Node, list[Dataset], list[list[int]]]) -> None:
    _node, _inputs, statuses = received
    assert [len(s) for s in statuses] == [PER_ASSOCIATION + (k in (1, 2))
                                         for k in range(ASSOCIATIONS)]
    refused = statuses[1].pop(PER_ASSOCIATION // 2)
    assert refused == 0x0110
    assert all(s == 0 for chunk in statuses for s in chunk)


def test_every_instance_is_stored_exact_as_lossless_jpeg2000(
        received: tuple[Node, list[Dataset], list[list[int]]]) -> None:
    node, inputs, _ = received
    want = {int(d.InstanceNumber): pixel_array(d, raw=True) for d in inputs}
    ids = node.instances()
    assert len(ids) == len(inputs)
    for iid in ids:
        ds = pydicom.dcmread(io.BytesIO(node.instance_bytes(iid)))
        kept = int(ds.InstanceNumber) == 999
        assert str(ds.file_meta.TransferSyntaxUID) == (
            pydicom.uid.DeflatedExplicitVRLittleEndian if kept else J2K)
        assert ds.PatientIdentityRemoved == "YES" and "Doe" not in str(ds.PatientName)
        np.testing.assert_array_equal(pixel_array(ds, raw=True), want[int(ds.InstanceNumber)])


def test_status_counts_the_encodes_made_after_the_callback(
        received: tuple[Node, list[Dataset], list[list[int]]]) -> None:
    node, inputs, _ = received
    status = node.status()
    counters = status["counters"]
    assert counters["stored"] == len(inputs) and counters["refused"] == 1
    assert counters.get("alarms", 0) == 0
    assert counters["not_transcoded_by_reason"] == {"unsupported-pixels": 1}
    by_reason = counters["transcoded_by_reason"]
    assert sum(by_reason.values()) == len(inputs) - 1
    # Four senders at once queue for Orthanc's plugin mutex: most are encoded afterwards.
    assert by_reason.get("lossless-after-callback", 0) >= len(inputs) // 4, by_reason
    assert "transcoded_by_orthanc" not in counters
    checked = status["verification"]["checked"]
    assert sum(checked.values()) == len(inputs) - 1 and "failed" not in checked
