"""Burned-in text on a real node: cleaned by rules (lossless elsewhere), refused when unresolved,
and the optional OCR audit."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from harness import Node, send_pynetdicom, storescu
from teachfile.node.service import STATUS_PROCESSING_FAILURE
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pixels import apply, assess, decode_frames, load_pixel_policy
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer

CONFIG = Path(__file__).resolve().parents[2] / "orthanc-config"


def _ultrasound(stem: str) -> Path:
    deid_data = pytest.importorskip("deid_data", reason="the deid-data package is not installed")
    path = Path(deid_data.__file__).parent / "data" / "ultrasounds" / f"{stem}.dcm"
    if not path.exists():
        pytest.skip(f"deid-data has no {stem}.dcm")
    return path


def _expected_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """What the node should store: the same cleaning, done here in plain Python."""
    policy = load_pixel_policy(CONFIG / "pixel-rules.yaml")
    plan = assess(ds, policy)
    assert plan.action == "clean"
    work = Deidentifier(load_profile("teaching", CONFIG), Pseudonymizer(b"k" * 32)).deidentify(
        copy.deepcopy(ds))
    return decode_frames(apply(work, plan))[0]


@pytest.mark.parametrize("stem", ["GREYSCALE_IMAGE", "RGB_IMAGE"])
def test_ultrasound_is_cleaned_and_every_other_pixel_kept(node: Node, stem: str) -> None:
    path = _ultrasound(stem)
    original = pydicom.dcmread(path)
    before = decode_frames(original)[0]
    expected = _expected_pixels(original)
    proc, statuses = storescu(node, [path])
    assert statuses == [0], proc.stdout[-2000:]
    stored = node.stored_datasets()
    assert len(stored) == 1
    ds = stored[0]
    assert ds.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert "113101" in codes and "113100" in codes
    got = decode_frames(ds)[0]
    assert got.shape == before.shape
    blanked = expected != before
    assert blanked.any(), "the rule blanked nothing"
    # Blanked regions are black, every other pixel exactly as sent (lossy input stays as it was).
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[~blanked], before[~blanked])


def test_unresolved_burned_in_is_refused_and_the_sender_told(node: Node) -> None:
    ds = pydicom.dcmread(_ultrasound("RGB_IMAGE"))
    ds.Manufacturer = "NO RULE FOR THIS ONE"
    ds.ManufacturerModelName = "UNKNOWN"
    if "SequenceOfUltrasoundRegions" in ds:
        del ds.SequenceOfUltrasoundRegions
    assert send_pynetdicom(node, [ds]) == [STATUS_PROCESSING_FAILURE]
    assert node.instances() == []
    assert node.status()["counters"]["refused_by_reason"] == {"burned-in": 1}


def test_ocr_audit_reports_residual_text_when_enabled(node_factory, tmp_path: Path) -> None:
    from teachfile.reception.ocr import ocr_available

    if not ocr_available():
        pytest.skip("tesseract is not installed (scripts/setup --postgres installs it)")
    off = tmp_path / "no-pixel-rules.yaml"
    off.write_text("version: 1\nenabled: false\nultrasound_regions: false\n"
                   "likely_burned_in: []\nrules: []\n")
    # A node that lets burned-in text through (pixel policy off), audited with OCR on.
    leaky = node_factory(aet="LEAKY", extra_config={
        "Teachfile": {"PixelRules": str(off), "OcrAudit": True}})
    path = _ultrasound("RGB_IMAGE")
    assert storescu(leaky, [path])[1] == [0]
    page = leaky.post("/teachfile/audit", json={}).json()
    assert page["ocr"] is True
    entry = page["instances"][0]
    assert not entry["clean"] and "residual-text" in {f["code"] for f in entry["findings"]}
    assert entry["residual_text"]
    # Its log never carries the words.
    assert not any(w in leaky.log_text() for w in entry["residual_text"] if len(w) > 4)

    original = pydicom.dcmread(path)
    identifiers = {str(original.PatientID).upper()} | {
        part.upper() for part in str(original.PatientName).split("^") if len(part) > 2}

    def identifying(words: list[str]) -> set[str]:
        return {w for w in words if any(i in w.upper() for i in identifiers)}

    assert identifying(entry["residual_text"]), "OCR did not read the banner's identifiers"

    # The default policy cleans the banner: the audit no longer reads any identifier (what
    # remains is probe and scale text inside the image).
    clean = node_factory(aet="CLEAN", extra_config={"Teachfile": {"OcrAudit": True}})
    assert storescu(clean, [path])[1] == [0]
    after = clean.post("/teachfile/audit", json={}).json()["instances"][0]
    assert not identifying(after.get("residual_text", []))


def test_clean_pixels_are_jpeg2000_lossless_for_lossless_input(node: Node) -> None:
    """A natively stored ultrasound is cleaned, then stored as JPEG 2000 lossless."""
    path = _ultrasound("GREYSCALE_IMAGE")
    original = pydicom.dcmread(path)
    assert send_pynetdicom(node, [original]) == [0]
    data = node.instance_bytes(node.instances()[0])
    ds = pydicom.dcmread(io.BytesIO(data))
    if original.get("LossyImageCompression") == "01":
        assert ds.LossyImageCompression == "01"
    else:
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"


def test_a_workstation_capture_comes_in_only_when_ocr_reads_no_text(node: Node) -> None:
    """The seed's workflow: a viewer blacks out the text with its shutter tool and saves the
    image as a new series, a Secondary Capture no pixel rule describes. It used to be refused
    (likely:secondary-capture...;no-rule) however clean it was."""
    from captures import captures
    from teachfile.reception.ocr import ocr_available
    from teachfile.reception.pipeline import OCR_METHOD_NOTE

    if not ocr_available():
        pytest.skip("tesseract is not installed (scripts/setup --postgres installs it)")
    caps = captures()
    sent = [caps["clean-grey"], caps["clean-rgb"], caps["banner"], caps["over-anatomy"]]
    statuses = send_pynetdicom(node, sent, calling_aet="OSIRIX")
    assert statuses == [0, 0, STATUS_PROCESSING_FAILURE, STATUS_PROCESSING_FAILURE]
    stored = node.stored_datasets()
    assert len(stored) == 2
    for ds in stored:
        assert OCR_METHOD_NOTE in list(ds.DeidentificationMethod)
        assert "PHIQ" not in str(ds.PatientName) and ds.PatientIdentityRemoved == "YES"
    counters = node.status()["counters"]
    assert counters["pixels_checked_by_reason"] == {"ocr-no-text": 2}
    assert counters["refused_by_reason"] == {"burned-in": 2}
    refusals = node.get("/teachfile/refusals").json()["refusals"]
    assert {r["detail"].rsplit(";", 1)[-1] for r in refusals} == {"ocr-found-text"}
    # The words OCR read (a name, an ID) are told to nobody: not the refusals, not the log.
    for word in ("SMITH", "JOHN", "12345678"):
        assert word not in json.dumps(refusals) and word not in node.log_text()


def test_a_trusted_workstation_stores_captures_ocr_would_refuse(node_factory) -> None:
    """An admin trusts one workstation (by AET, checked against its address) to clean its
    captures: what the OCR gate refuses from anyone else is stored from it, and marked so."""
    from captures import captures
    from teachfile.reception.pipeline import TRUSTED_METHOD_NOTE

    node = node_factory(aet="TRUSTING", extra_config={
        "DicomModalities": {"osirix": ["OSIRIX", "127.0.0.1", 11112]},
        "DicomCheckModalityHost": True,
        "Teachfile": {"TrustedCaptureSenders": ["OSIRIX"]}})
    texted = captures()["over-anatomy"]
    assert send_pynetdicom(node, [texted], calling_aet="STRANGER") == [STATUS_PROCESSING_FAILURE]
    assert node.instances() == []
    assert send_pynetdicom(node, [texted], calling_aet="OSIRIX") == [0]
    (stored,) = node.stored_datasets()
    assert TRUSTED_METHOD_NOTE in list(stored.DeidentificationMethod)
    counters = node.status()["counters"]
    assert counters["pixels_checked_by_reason"] == {"trusted-sender": 1}
    (refusal,) = node.get("/teachfile/refusals").json()["refusals"]
    assert refusal["calling_aet"] == "STRANGER" and refusal["reason"] == "burned-in"
