"""The node's side of lossless JPEG 2000 after the callback: when it defers, what it hands
over, what its transcoder answers Orthanc, what it counts, and the configuration that makes
Orthanc ask it (node/ingest.py, reception/deferred.py)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file

from teachfile.cli import launcher
from teachfile.node import service as service_mod
from teachfile.node.ingest import ingest_config
from teachfile.node.service import STATUS_PROCESSING_FAILURE, Service, Settings
from teachfile.reception import transcode as tc

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
pytestmark = pytest.mark.skipif(not tc.openjpeg.available(), reason="no system OpenJPEG")


def _service(tmp_path: Path, **section: object) -> Service:
    config = {"StorageDirectory": str(tmp_path / "storage"),
              **ingest_config("teaching", CONFIG),
              "Teachfile": {"ConfigDirectory": str(CONFIG), "DataDirectory": str(tmp_path),
                            **section}}
    env = {"TEACHFILE_KEY": "ab" * 32, "TEACHFILE_TESTING": "1"}
    svc = Service(Settings.from_orthanc_config(config, env), env)
    svc.enable_deferred()
    return svc


def _ct(i: int = 0) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i}"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _queued(svc: Service) -> None:
    """As if this instance had waited for Orthanc's plugin mutex behind the previous one."""
    svc._last_exit = time.monotonic()


def _queued_receive(svc: Service, i: int = 0, origin: str = "dicom") -> bytes:
    """What the callback hands Orthanc for a CT slice that waited behind another one."""
    raw = _ct(i)  # made first: the wait is measured from the previous callback's return
    _queued(svc)
    _, data = svc.receive(raw, origin)
    assert data is not None
    return data


def _same(data: bytes):  # type: ignore[no-untyped-def]
    return lambda native: native == data


def test_alone_the_callback_encodes(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    _, data = svc.receive(_ct(), "dicom")
    assert data is not None
    assert str(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID) == tc.J2K_LOSSLESS
    assert svc.transcode_ingest(len(data), _same(data)) is None  # nothing handed over


def test_queued_instances_are_encoded_by_the_transcoder(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    native = _queued_receive(svc)
    ds = pydicom.dcmread(io.BytesIO(native))
    assert str(ds.file_meta.TransferSyntaxUID) == pydicom.uid.ExplicitVRLittleEndian
    assert ds.PatientIdentityRemoved == "YES"
    counters = svc.status()["counters"]
    assert counters["transcoded"] == 0  # not yet: nothing is JPEG 2000 so far
    assert svc.transcode_ingest(len(native), lambda n: False) is None  # other bytes
    out = svc.transcode_ingest(len(native), _same(native))
    assert out is not None
    assert str(pydicom.dcmread(io.BytesIO(out)).file_meta.TransferSyntaxUID) == tc.J2K_LOSSLESS
    assert svc.transcode_ingest(len(native), _same(native)) is None  # taken once
    assert svc.verify_stored(out)
    counters = svc.status()["counters"]
    assert counters["transcoded_by_reason"] == {"lossless-after-callback": 1}
    assert counters["stored"] == 1 and "not_transcoded_by_reason" not in counters


def test_a_deferred_instance_nobody_encoded_is_refused(tmp_path: Path) -> None:
    """Declined (or never asked), Orthanc would give it to GDCM, which rewrites the header and
    breaks the seal: the C-STORE filter refuses it instead, and the sender is told."""
    svc = _service(tmp_path)
    native = _queued_receive(svc, 1)
    assert svc.cstore_filter(len(native), lambda: native, "MODALITY") == \
        STATUS_PROCESSING_FAILURE
    refusal = svc.state.refusals()[0]
    assert (refusal["reason"], refusal["calling_aet"]) == ("transcode-error", "MODALITY")
    # Encoded, it passes the filter.
    native = _queued_receive(svc, 2)
    assert svc.transcode_ingest(len(native), _same(native)) is not None
    assert svc.cstore_filter(len(native), lambda: native, "MODALITY") == 0


def test_only_c_stores_are_deferred(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    data = _queued_receive(svc, origin="rest")
    assert str(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID) == tc.J2K_LOSSLESS


def test_a_deferred_encode_runs_while_others_are_queued(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    assert not svc._contended()
    svc._encoding = 1
    assert svc._contended()
    svc._encoding = 0
    svc.ingest_transcoder = False
    _queued(svc)
    assert not svc._contended()  # no transcoder: never


def test_the_transcoder_takes_only_its_own_thread_s_instance(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    native = _queued_receive(svc)
    got: list[object] = []
    other = threading.Thread(target=lambda: got.append(
        svc.transcode_ingest(len(native), _same(native))))
    other.start()
    other.join()
    assert got == [None]
    assert svc.transcode_ingest(len(native), _same(native)) is not None


def test_what_is_kept_with_pixels_is_handed_over_deflated(tmp_path: Path) -> None:
    """Ingest transcoding would give it to GDCM (see Reception.deflate_kept)."""
    svc = _service(tmp_path)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.PixelData = np.arange(int(ds.Rows) * int(ds.Columns), dtype="<u4").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    _, data = svc.receive(buf.getvalue(), "dicom")
    assert data is not None
    out = pydicom.dcmread(io.BytesIO(data))
    assert str(out.file_meta.TransferSyntaxUID) == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert out.PixelData == ds.PixelData and svc.verify_stored(data)
    assert svc.status()["counters"]["not_transcoded_by_reason"] == {"unsupported-pixels": 1}
    # Without ingest transcoding it stays as it came.
    plain = Service(Settings.from_orthanc_config(
        {"StorageDirectory": str(tmp_path / "s2"),
         "Teachfile": {"ConfigDirectory": str(CONFIG), "DataDirectory": str(tmp_path / "d2")}},
        {"TEACHFILE_KEY": "ab" * 32}), {"TEACHFILE_KEY": "ab" * 32})
    _, data = plain.receive(buf.getvalue(), "dicom")
    assert data is not None
    assert str(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID) == \
        pydicom.uid.ExplicitVRLittleEndian


def test_kept_big_endian_pixels_are_refused_under_ingest(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    ds = pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    ds.PhotometricInterpretation = "RGB"  # one sample: JPEG 2000 cannot take it, so kept
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    action, data = svc.receive(buf.getvalue(), "rest")
    assert data == service_mod.UNSTORABLE
    assert svc.state.refusals()[0]["reason"] == "transcode-error"


def test_a_tombstone_rewritten_by_orthanc_is_still_refused(tmp_path: Path) -> None:
    svc = _service(tmp_path, Testing={"ForceFailure": "refusal"})
    _, tomb = svc.receive(_ct(), "dicom")
    assert tomb is not None
    ds = pydicom.dcmread(io.BytesIO(tomb))
    # Declared in the syntax the node stores, so ingest transcoding leaves it alone; were it
    # rewritten anyway (another syntax, other bytes), the filter must still know it.
    assert str(ds.file_meta.TransferSyntaxUID) == tc.J2K_LOSSLESS
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    rewritten = buf.getvalue()
    assert rewritten != tomb
    assert svc.cstore_filter(len(rewritten), lambda: rewritten, "X") == STATUS_PROCESSING_FAILURE


def test_ingest_is_configured_only_for_a_lossless_profile(tmp_path: Path) -> None:
    assert ingest_config("teaching", CONFIG) == {
        "IngestTranscoding": tc.J2K_LOSSLESS, "IngestTranscodingOfUncompressed": True,
        "IngestTranscodingOfCompressed": False}
    prof = yaml.safe_load((CONFIG / "profiles" / "teaching.yaml").read_text())
    for transcoding in ({"mode": "off"}, {"htj2k": True}):
        prof["transcoding"] = transcoding
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(prof))
        assert ingest_config(str(path), CONFIG) == {}
    assert ingest_config("no-such-profile", CONFIG) == {}
    config = launcher.build_config(launcher.NodeSettings(data_dir=tmp_path), "pw")
    assert config["IngestTranscoding"] == tc.J2K_LOSSLESS
    off = launcher.build_config(launcher.NodeSettings(
        data_dir=tmp_path, extra={"Teachfile": {"Profile": str(path)}}), "pw")
    assert "IngestTranscoding" not in off
