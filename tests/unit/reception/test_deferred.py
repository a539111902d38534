"""Lossless JPEG 2000 after the callback (reception/deferred.py): what the node's transcoder
makes from the uncompressed bytes the callback handed Orthanc must be, byte for byte, what the
callback itself would have stored; anything it cannot make exactly is declined."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from teachfile.reception import deferred
from teachfile.reception import transcode as tc
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pipeline import Reception
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
P = Pseudonymizer(b"d" * 32)
pytestmark = pytest.mark.skipif(not tc.openjpeg.available(), reason="no system OpenJPEG")


def _reception(**transcoding: object) -> Reception:
    prof = load_profile("teaching", CONFIG)
    policy = TranscodePolicy.from_mapping({**prof.transcoding, **transcoding})
    return Reception(Deidentifier(prof, P), policy, None)


def _raw(name: str) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmread(get_testdata_file(name)).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


#: One sample per pixel, native little endian: deferred.
_DEFERRED = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "emri_small.dcm",
             "OBXXXX1A.dcm"]
#: Anything else: transcoded in the callback, as before.
_IN_CALLBACK = ["US1_UNCR.dcm", "SC_rgb.dcm", "MR_small_RLE.dcm",
                "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"]


@pytest.mark.parametrize("verification", ["all", "sampled"])
@pytest.mark.parametrize("name", _DEFERRED)
def test_the_deferred_encode_stores_what_the_callback_would_have(name: str,
                                                                 verification: str) -> None:
    raw = _raw(name)
    inline = _reception(verification=verification).process(raw)
    rec = _reception(verification=verification)
    handed = rec.process(raw, defer=True)
    assert inline.store and inline.transcoded and handed.store
    job = handed.deferred
    assert job is not None and not handed.transcoded and handed.transcode_reason == "deferred"
    assert handed.data == job.native
    # What Orthanc is handed is the de-identified instance itself, uncompressed.
    native = pydicom.dcmread(io.BytesIO(handed.data))
    assert str(native.file_meta.TransferSyntaxUID) == pydicom.uid.ExplicitVRLittleEndian
    assert native.PatientIdentityRemoved == "YES"
    assert handed.stored_uids == inline.stored_uids
    assert deferred.encode(job, rec.policy, rec.verifier) == inline.data
    assert rec.verifier.counts["failed"] == 0


@pytest.mark.parametrize("name", _IN_CALLBACK)
def test_what_does_not_qualify_is_transcoded_in_the_callback(name: str) -> None:
    raw = _raw(name)
    inline = _reception().process(raw)
    handed = _reception().process(raw, defer=True)
    assert handed.deferred is None
    assert handed.data == inline.data and handed.transcoded == inline.transcoded


def test_no_deferral_for_a_lossy_modality_or_with_transcoding_off() -> None:
    raw = _raw("CT_small.dcm")
    assert _reception(lossy={"CT": 10}).process(raw, defer=True).deferred is None
    off = _reception(mode="off").process(raw, defer=True)
    assert off.deferred is None and not off.transcoded


def test_nothing_after_the_pixel_data() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.add_new(0xFFFCFFFC, "OB", b"\0\0")  # Data Set Trailing Padding
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    handed = _reception().process(buf.getvalue(), defer=True)
    # De-identification removes the padding, so the instance still qualifies; a prepared
    # dataset that keeps it does not.
    assert handed.deferred is not None
    policy = TranscodePolicy()
    kept = pydicom.dcmread(io.BytesIO(handed.data))
    kept.add_new(0xFFFCFFFC, "OB", b"\0\0")
    out = io.BytesIO()
    kept.save_as(out, enforce_file_format=True)
    assert deferred.prepare(kept, out.getvalue(), policy, tc.Verifier(policy)) is None


def test_the_file_meta_group_is_rewritten_with_the_new_syntax() -> None:
    raw = _raw("CT_small.dcm")
    meta, end = deferred.with_syntax(raw, tc.J2K_LOSSLESS) or (b"", 0)
    assert end > 132 and meta
    ds = pydicom.dcmread(io.BytesIO(raw[:132] + meta + raw[end:]), stop_before_pixels=True)
    assert str(ds.file_meta.TransferSyntaxUID) == tc.J2K_LOSSLESS
    assert ds.file_meta.FileMetaInformationGroupLength == len(meta) - 12
    assert deferred.with_syntax(b"\0" * 200, tc.J2K_LOSSLESS) is None


def test_a_failed_check_is_encoded_again_without_bypass(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    rec = _reception(verification="all")
    job = rec.process(_raw("CT_small.dcm"), defer=True).deferred
    assert job is not None
    calls: list[bool] = []

    def verify(streams: list[bytes], frames: object, target: tc._Target,
               policy: TranscodePolicy) -> bool:
        calls.append(target.bypass)
        return not target.bypass  # the BYPASS result "fails"

    monkeypatch.setattr(deferred, "_verify", verify)
    out = deferred.encode(job, rec.policy, rec.verifier)
    assert out is not None and calls == [True, False]
    assert rec.verifier.counts["failed"] == 1
    ds = pydicom.dcmread(io.BytesIO(out))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    # The second codestream has no BYPASS in its code-block style (byte 12 of COD).
    cod = frame.find(b"\xff\x52")
    assert cod > 0 and frame[cod + 12] & 0x01 == 0
    monkeypatch.setattr(deferred, "_verify", lambda *a: False)
    assert deferred.encode(job, rec.policy, rec.verifier) is None


def test_an_encoder_failure_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _reception()
    job = rec.process(_raw("MR_small.dcm"), defer=True).deferred
    assert job is not None

    def refuse(*_a: object, **_k: object) -> bytes:
        raise RuntimeError("OpenJPEG could not encode the image")

    monkeypatch.setattr(deferred, "_encode_frame", refuse)
    assert deferred.encode(job, rec.policy, rec.verifier) is None
