"""JPEG 2000 on reception, end to end, on real Orthanc nodes (issue 4).

One default node (lossless) and one node with a per-modality lossy profile each receive a fixed
set of instances once (module fixtures); the tests then inspect what was stored, the status
counters, and what DICOM and DICOMweb clients get back. Expected values are computed with the
node's own key, so "the SOP Instance UID is kept" means "equals the de-identified UID".
"""

from __future__ import annotations

import copy
import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from harness import LOOPBACK, Node, dcmtk, free_port, orthanc_version, send_pynetdicom, start_node
from teachfile.cli.launcher import CONFIG_DIR
from teachfile.node.keys import load_or_create_key
from teachfile.reception.deid import Deidentifier
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer

J2K = "1.2.840.10008.1.2.4.90"
J2K_LOSSY = "1.2.840.10008.1.2.4.91"
VL_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1"
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
#: Lets movescu/getscu (unknown AETs) query and retrieve; the storescp targets are registered
#: per test through the REST API, as an operator would.
RETRIEVE_CONFIG = {"DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True,
                   "DicomAlwaysAllowFind": True}
#: The retrieval nodes load the Web Viewer as `make run` nodes do: Orthanc used to die beside
#: it when GDCM transcoded (README, "Two Orthanc lanes", thread stacks).
WITH_VIEWER = {"TEACHFILE_WEBVIEWER": "1"}


def synthetic_ct(rows: int = 256, seed: int = 3) -> Dataset:
    """A CT slice that compresses like a real one (body ellipse, HU-like values, noise, air)
    with identifying data; 12 bits signed stored in 16."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:rows * 1j, -1:1:rows * 1j]
    body = x**2 / 0.8**2 + y**2 / 0.6**2 < 1
    bone = (x**2 + (y + 0.1) ** 2) < 0.05
    shape = (rows, rows)
    hu = np.where(body, 40 + rng.normal(0, 20, shape), -1000 + rng.normal(0, 5, shape))
    hu = np.where(bone, 700 + rng.normal(0, 40, shape), hu)
    arr = hu.clip(-2048, 2047).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19600101"
    ds.StudyDate = ds.SeriesDate = "20240305"
    ds.AccessionNumber = "ACC42"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = arr.tobytes()
    return ds


def _testfile(name: str) -> Dataset:
    """A pydicom test file with a fresh SOP Instance UID (some share one, e.g. SC_rgb*)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _endoscopy(name: str) -> Dataset:
    """A pydicom secondary capture relabelled as a VL endoscopic image: the default pixel
    policy refuses secondary captures as likely burned-in, which is not what is tested here."""
    ds = _testfile(name)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = VL_ENDOSCOPIC
    ds.Modality = "ES"
    ds.BurnedInAnnotation = "NO"
    if "ConversionType" in ds:
        del ds.ConversionType
    return ds


#: name -> input; what each node receives (lossy node: the same set).
def _inputs() -> dict[str, Dataset]:
    return {
        "ct": synthetic_ct(),
        "ct_small": _testfile("CT_small.dcm"),  # 16 bits stored, signed
        "multiframe": _testfile("emri_small.dcm"),  # MR, 10 frames, 12 bits stored
        "rgb": _endoscopy("SC_rgb.dcm"),
        "rgb_2frame": _endoscopy("SC_rgb_2frame.dcm"),
        "jpeg_baseline": _endoscopy("SC_rgb_jpeg_dcmtk.dcm"),  # .50, already lossy
        "sr": _testfile("test-SR.dcm"),
        "rtplan": _testfile("rtplan.dcm"),
    }


@dataclass
class Received:
    """A node that received :func:`_inputs` once, with what it stored per input name."""

    node: Node
    inputs: dict[str, Dataset]
    expected: dict[str, Dataset]  # the de-identified input, computed with the node's key
    stored: dict[str, Dataset]
    raw: dict[str, bytes]
    ids: dict[str, str]  # Orthanc instance ids
    pseudo: Pseudonymizer


def _receive(node: Node, lossy_profile: Path | None = None) -> Received:
    inputs = _inputs()
    assert send_pynetdicom(node, [copy.deepcopy(d) for d in inputs.values()]) == [0] * len(inputs)
    key = load_or_create_key(node.data_dir / "pseudonym.key", dict(os.environ))
    pseudo = Pseudonymizer(key)
    profile = load_profile(str(lossy_profile) if lossy_profile else "teaching", CONFIG_DIR)
    deid = Deidentifier(profile, pseudo)
    expected = {k: deid.deidentify(copy.deepcopy(v)) for k, v in inputs.items()}
    by_uid: dict[str, tuple[str, bytes]] = {}
    for iid in node.instances():
        data = node.instance_bytes(iid)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        by_uid[str(ds.SOPInstanceUID)] = (iid, data)
    stored, raw, ids = {}, {}, {}
    for name, exp in expected.items():
        uid = str(exp.SOPInstanceUID)
        if uid not in by_uid:  # a lossy instance gets a UID derived from the de-identified one
            uid = pseudo.uid("lossy-j2k:" + uid)
        iid, data = by_uid[uid]
        ids[name], raw[name] = iid, data
        stored[name] = pydicom.dcmread(io.BytesIO(data))
    return Received(node, inputs, expected, stored, raw, ids, pseudo)


@pytest.fixture(scope="module")
def lossless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Received]:
    node = start_node(tmp_path_factory.mktemp("tc-lossless"), aet="TFJ2K",
                      extra_config=RETRIEVE_CONFIG, env=WITH_VIEWER)
    try:
        yield _receive(node)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Received]:
    base = tmp_path_factory.mktemp("tc-lossy")
    profile = yaml.safe_load((CONFIG_DIR / "profiles" / "teaching.yaml").read_text())
    profile["name"] = "teaching-lossy"
    profile["transcoding"] = {"mode": "lossless", "lossy": {"CT": 8, "MR": 7, "CR": 10, "DX": 10}}
    path = base / "teaching-lossy.yaml"
    path.write_text(yaml.safe_dump(profile))
    node = start_node(base / "node", aet="TFLOSSY",
                      extra_config={"Teachfile": {"Profile": str(path)}}, env=WITH_VIEWER)
    try:
        yield _receive(node, path)
    finally:
        node.stop()


def _ts(ds: Dataset) -> str:
    return str(ds.file_meta.TransferSyntaxUID)


# -- storage policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ct", "ct_small", "multiframe", "rgb", "rgb_2frame"])
def test_default_is_bit_exact_j2k_lossless_keeping_the_uid(lossless: Received, name: str) -> None:
    stored, exp, original = lossless.stored[name], lossless.expected[name], lossless.inputs[name]
    assert _ts(stored) == J2K
    assert stored.SOPInstanceUID == exp.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPInstanceUID == exp.SOPInstanceUID
    assert str(stored.get("LossyImageCompression", "00")) == "00"
    assert np.array_equal(stored.pixel_array, original.pixel_array)
    assert stored.pixel_array.dtype == original.pixel_array.dtype
    nframes = int(original.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(stored.PixelData, number_of_frames=nframes))
    assert len(frames) == nframes  # encapsulated frame by frame
    # Codestream precision and signedness (SIZ marker: Ssiz = signed << 7 | precision - 1).
    siz = frames[0].index(b"\xff\x51")
    ssiz = frames[0][siz + 40]
    assert (ssiz & 0x7F) + 1 == int(original.BitsStored)
    assert ssiz >> 7 == int(original.PixelRepresentation)


def test_colour_is_stored_as_ybr_rct(lossless: Received) -> None:
    for name in ("rgb", "rgb_2frame"):
        assert lossless.stored[name].PhotometricInterpretation == "YBR_RCT"
        assert lossless.stored[name].PlanarConfiguration == 0


@pytest.mark.parametrize("name", ["jpeg_baseline", "sr", "rtplan"])
def test_lossy_and_pixel_less_instances_keep_their_syntax(lossless: Received, name: str) -> None:
    stored, original = lossless.stored[name], lossless.inputs[name]
    assert _ts(stored) == _ts(original)
    assert stored.SOPInstanceUID == lossless.expected[name].SOPInstanceUID
    if "PixelData" in original:
        assert stored.PixelData == original.PixelData  # not re-encoded


def test_status_counts_transcoded_and_kept_by_reason(lossless: Received) -> None:
    counters = lossless.node.status()["counters"]
    assert counters["received"] == counters["stored"] == 8
    assert counters["transcoded"] == 5
    assert counters["not_transcoded_by_reason"] == {"already-lossy": 1, "no-pixel-data": 2}


def test_lossy_profile_gives_91_with_lossy_attributes_and_a_new_uid(lossy: Received) -> None:
    for name, target in (("ct", 8.0), ("ct_small", 8.0), ("multiframe", 7.0)):
        stored, exp, original = lossy.stored[name], lossy.expected[name], lossy.inputs[name]
        assert _ts(stored) == J2K_LOSSY, name
        new_uid = lossy.pseudo.uid("lossy-j2k:" + str(exp.SOPInstanceUID))
        assert stored.SOPInstanceUID == new_uid != exp.SOPInstanceUID
        assert stored.file_meta.MediaStorageSOPInstanceUID == new_uid
        assert stored.StudyInstanceUID == exp.StudyInstanceUID
        assert stored.LossyImageCompression == "01"
        assert stored.LossyImageCompressionMethod == "ISO_15444_1"
        nframes = int(original.get("NumberOfFrames", 1) or 1)
        compressed = sum(len(f) for f in generate_frames(stored.PixelData,
                                                         number_of_frames=nframes))
        achieved = len(original.PixelData) / compressed
        ratio = float(stored.LossyImageCompressionRatio)
        assert ratio == pytest.approx(achieved, rel=0.02)
        assert 0.5 * target <= ratio <= 1.05 * target, (name, ratio)
        pixels = stored.pixel_array
        assert pixels.shape == original.pixel_array.shape
        assert not np.array_equal(pixels, original.pixel_array)


def test_lossy_profile_leaves_other_modalities_lossless(lossy: Received) -> None:
    for name in ("rgb", "rgb_2frame"):  # modality ES: no lossy target
        stored = lossy.stored[name]
        assert _ts(stored) == J2K, name
        assert stored.SOPInstanceUID == lossy.expected[name].SOPInstanceUID
        assert np.array_equal(stored.pixel_array, lossy.inputs[name].pixel_array)
    assert _ts(lossy.stored["jpeg_baseline"]) == _ts(lossy.inputs["jpeg_baseline"])
    counters = lossy.node.status()["counters"]
    assert counters["received"] == counters["stored"] == 8
    assert counters["transcoded"] == 5
    assert counters["not_transcoded_by_reason"] == {"already-lossy": 1, "no-pixel-data": 2}


# -- retrieval -----------------------------------------------------------------------------------


class StoreSCP:
    """DCMTK storescp on a free loopback port, registered on the node as a modality."""

    def __init__(self, node: Node, out: Path, name: str, accept: list[str]) -> None:
        self.aet, self.out = name.upper(), out
        out.mkdir(parents=True, exist_ok=True)
        # A free port can be taken by another process before storescp binds it: retry.
        for attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [dcmtk("storescp"), "-aet", self.aet, *accept, "-dhl", "-od", str(out),
                 str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_port(self.port, self.proc)
                break
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
        r = node.put(f"/modalities/{name}", json={"AET": self.aet, "Host": LOOPBACK,
                                                  "Port": self.port})
        assert r.status_code == 200, r.text

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("storescp did not start")


def _retrieve_args(rx: Received, name: str) -> list[str]:
    exp = rx.expected[name]
    return ["-S", "-k", "QueryRetrieveLevel=IMAGE",
            "-k", f"StudyInstanceUID={exp.StudyInstanceUID}",
            "-k", f"SeriesInstanceUID={exp.SeriesInstanceUID}",
            "-k", f"SOPInstanceUID={exp.SOPInstanceUID}"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _check_unchanged(rx: Received, name: str, got: Dataset) -> None:
    stored = rx.stored[name]
    assert _ts(got) == J2K
    assert got.SOPInstanceUID == stored.SOPInstanceUID
    assert got.PixelData == stored.PixelData  # the stored codestreams, byte for byte


def _check_decoded(rx: Received, name: str, got: Dataset) -> None:
    assert _ts(got) in UNCOMPRESSED
    assert got.SOPInstanceUID == rx.stored[name].SOPInstanceUID
    assert np.array_equal(got.pixel_array, rx.inputs[name].pixel_array)


@pytest.mark.parametrize("accept", [["+xa"], ["+xe"]], ids=["accepts-j2k", "uncompressed-only"])
def test_c_move_to_storescp(lossless: Received, tmp_path: Path, accept: list[str]) -> None:
    scp = StoreSCP(lossless.node, tmp_path / "in", "MOVEDEST", accept)
    try:
        node = lossless.node
        _run([dcmtk("movescu"), "-aet", "MOVESCU", "-aec", node.aet, "-aem", scp.aet,
              *_retrieve_args(lossless, "ct"), LOOPBACK, str(node.dicom_port)])
        files = scp.files()
    finally:
        scp.stop()
    assert len(files) == 1
    got = pydicom.dcmread(files[0])
    if accept == ["+xa"]:
        _check_unchanged(lossless, "ct", got)
    else:
        _check_decoded(lossless, "ct", got)


@pytest.mark.parametrize("propose", [["+xv"], []], ids=["proposes-j2k", "uncompressed-only"])
def test_c_get_with_getscu_receives_decoded_pixels(lossless: Received, tmp_path: Path,
                                                   propose: list[str]) -> None:
    """getscu 3.6.7 proposes J2K and uncompressed syntaxes in ONE presentation context (+xv);
    Orthanc 1.10, the acceptor, then picks Explicit VR Little Endian, so even a J2K-capable
    getscu receives decoded (bit-exact) pixels; Orthanc 1.13 picks the stored J2K, so it receives
    the stored codestreams. See the pynetdicom test for J2K over C-GET."""
    got = _getscu(lossless, "multiframe", tmp_path, propose)
    if propose and orthanc_version() >= (1, 13):
        _check_unchanged(lossless, "multiframe", got)
    else:
        _check_decoded(lossless, "multiframe", got)


def _getscu(rx: Received, name: str, tmp_path: Path, args: list[str]) -> Dataset:
    node = rx.node
    out = tmp_path / "get"
    out.mkdir()
    _run([dcmtk("getscu"), "-aet", "GETSCU", "-aec", node.aet, *args, "-od", str(out),
          *_retrieve_args(rx, name), LOOPBACK, str(node.dicom_port)])
    files = sorted(out.iterdir())
    assert len(files) == 1
    return pydicom.dcmread(files[0])


@pytest.mark.parametrize("syntaxes", [[J2K], [ExplicitVRLittleEndian]], ids=["j2k", "uncompressed"])
def test_c_get_with_a_j2k_only_context_receives_the_stored_bytes(
        lossless: Received, syntaxes: list[str]) -> None:
    """A C-GET SCU whose storage context offers only J2K gets the stored codestreams."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0

    ae = AE(ae_title="PYGETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    sop_class = str(lossless.stored["multiframe"].SOPClassUID)  # Enhanced MR
    ae.add_requested_context(sop_class, syntaxes)
    node = lossless.node
    assoc = ae.associate(LOOPBACK, node.dicom_port, ae_title=node.aet,
                         ext_neg=[build_role(sop_class, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    exp = lossless.expected["multiframe"]
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = exp.StudyInstanceUID
    query.SeriesInstanceUID = exp.SeriesInstanceUID
    query.SOPInstanceUID = exp.SOPInstanceUID
    try:
        statuses = [int(st.Status) for st, _ in
                    assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if st]
    finally:
        assoc.release()
    assert statuses and statuses[-1] == 0, statuses
    (got,) = received
    if syntaxes == [J2K]:
        _check_unchanged(lossless, "multiframe", got)
    else:
        _check_decoded(lossless, "multiframe", got)


def _wado_parts(rx: Received, name: str, accept: str) -> list[Dataset]:
    exp = rx.expected[name]
    r = rx.node.get(f"/dicom-web/studies/{exp.StudyInstanceUID}/series/{exp.SeriesInstanceUID}"
                    f"/instances/{exp.SOPInstanceUID}", headers={"Accept": accept})
    assert r.status_code == 200, r.text[:500]
    msg = message_from_bytes(b"Content-Type: " + r.headers["Content-Type"].encode()
                             + b"\r\n\r\n" + r.content)
    assert msg.is_multipart()
    parts: list[Any] = msg.get_payload()
    return [pydicom.dcmread(io.BytesIO(p.get_payload(decode=True))) for p in parts]


def test_wado_rs_with_any_transfer_syntax_returns_the_stored_j2k(lossless: Received) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    (got,) = _wado_parts(lossless, "ct", accept)
    _check_unchanged(lossless, "ct", got)


def test_wado_rs_without_transfer_syntax_returns_explicit_little_endian(
        lossless: Received) -> None:
    (got,) = _wado_parts(lossless, "rgb", 'multipart/related; type="application/dicom"')
    assert _ts(got) == ExplicitVRLittleEndian
    _check_decoded(lossless, "rgb", got)
