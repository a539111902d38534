"""The reception encodes the pixels on another thread while the header is de-identified: what it
stores must be byte for byte what the steps run in turn store, and an encode made from pixels
the de-identified instance no longer has must never be used."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from teachfile.reception import pipeline
from teachfile.reception import transcode as tc
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pipeline import Reception
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy

CONFIG = Path(__file__).resolve().parents[3] / "orthanc-config"
P = Pseudonymizer(b"e" * 32)


def _reception(overlap: bool, **transcoding: object) -> Reception:
    prof = load_profile("teaching", CONFIG)
    policy = TranscodePolicy.from_mapping({**prof.transcoding, **transcoding})
    return Reception(Deidentifier(prof, P), policy, None, overlap=overlap)


def _raw(name: str) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmread(get_testdata_file(name)).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm",
                                  "SC_rgb.dcm"])
def test_overlapped_reception_stores_the_same_bytes(name: str) -> None:
    raw = _raw(name)
    together = _reception(True, verification="all").process(raw)
    in_turn = _reception(False, verification="all").process(raw)
    assert together.store and in_turn.store
    assert together.data == in_turn.data
    assert (together.transcoded, together.transcode_reason) == \
        (in_turn.transcoded, in_turn.transcode_reason)


def test_the_view_holds_the_pixel_module_and_nothing_identifying() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    view = tc.pixel_view(ds)
    assert "PixelData" in view and "Rows" in view and "Modality" in view
    assert "PatientName" not in view and "StudyInstanceUID" not in view
    assert tc.same_pixels(ds, view)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"  # what date shifting adds
    assert tc.same_pixels(ds, view)


@pytest.mark.parametrize("change", ["bits", "pixels", "added", "syntax"])
def test_pixels_changed_after_the_view_are_seen(change: str) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    view = tc.pixel_view(ds)
    if change == "bits":
        ds.BitsStored = 12
    elif change == "pixels":
        ds.PixelData = bytes(len(ds.PixelData))
    elif change == "added":
        ds.PixelPaddingValue = 0
    else:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    assert not tc.same_pixels(ds, view)


def test_an_early_encode_of_other_pixels_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Here de-identification 'changes' the pixels: the early codestreams are dropped and the
    de-identified pixels are encoded again, so what is stored is what de-identification left."""
    raw = _raw("CT_small.dcm")
    expected = _reception(False).process(raw)
    reception = _reception(True)
    real = reception.deidentifier.deidentify
    encodes: list[int] = []
    real_encode = tc.encode_pixels

    def counting(ds: pydicom.Dataset, policy: TranscodePolicy) -> object:
        encodes.append(1)
        return real_encode(ds, policy)

    def deidentify(ds: pydicom.Dataset, *args: object) -> pydicom.Dataset:
        out = real(ds, *args)
        before = out.PixelData
        out.PixelData = bytes(bytearray(before))  # equal bytes, another object
        assert out.PixelData is not before
        return out

    monkeypatch.setattr(pipeline, "encode_pixels", counting)
    monkeypatch.setattr(tc, "encode_pixels", counting)
    monkeypatch.setattr(reception.deidentifier, "deidentify", deidentify)
    assert reception.process(raw).data == expected.data
    assert len(encodes) == 1

    def blanking(ds: pydicom.Dataset, *args: object) -> pydicom.Dataset:
        out = real(ds, *args)
        out.PixelData = bytes(len(out.PixelData))
        return out

    encodes.clear()
    monkeypatch.setattr(reception.deidentifier, "deidentify", blanking)
    decision = reception.process(raw)
    assert decision.store and len(encodes) == 2
    stored = pydicom.dcmread(io.BytesIO(decision.data or b""))
    assert not stored.pixel_array.any()  # the blanked pixels, not the early encode's


def test_no_early_encode_when_transcoding_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(pipeline, "encode_pixels", lambda *a: calls.append(1))
    assert _reception(True, mode="off").process(_raw("CT_small.dcm")).store
    assert calls == []
