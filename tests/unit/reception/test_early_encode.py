"""The reception encodes the pixels on another thread while the header is de-identified: what it
stores must be byte for byte what the steps run in turn store, and an encode made from pixels
the de-identified instance no longer has must never be used."""

from __future__ import annotations

import io
import time
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


_INPUTS = ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "SC_rgb.dcm",
           "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
           "emri_small.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_bigendian.dcm"]


@pytest.mark.parametrize("verification", ["all", "sampled"])
@pytest.mark.parametrize("name", _INPUTS)
def test_overlapped_reception_stores_the_same_bytes(name: str, verification: str) -> None:
    """Overlapped, the header is written while the pixels are encoded and the pixel data
    element is appended to it: the bytes must be exactly those of one write after the encode."""
    raw = _raw(name)
    together = _reception(True, verification=verification).process(raw)
    in_turn = _reception(False, verification=verification).process(raw)
    assert together.store and in_turn.store, (together, in_turn)
    assert together.data == in_turn.data
    assert (together.transcoded, together.transcode_reason) == \
        (in_turn.transcoded, in_turn.transcode_reason)


def test_the_header_is_written_during_the_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the fallback by accident: overlapped, the one full write is of a header without
    pixel data, made while the encode was still running; in turn, the whole instance."""
    writes: list[tuple[bool, bool]] = []
    real = pipeline._serialize
    running: list[bool] = []

    def serialize(ds: pydicom.Dataset) -> bytes:
        writes.append(("PixelData" in ds, bool(running) and running[-1]))
        return real(ds)

    real_encode = tc.encode_pixels

    def encode(*args: object) -> object:
        running.append(True)
        try:
            time.sleep(0.05)  # still encoding when the header is written
            return real_encode(*args)  # type: ignore[arg-type]
        finally:
            running.append(False)

    monkeypatch.setattr(pipeline, "_serialize", serialize)
    monkeypatch.setattr(pipeline, "encode_pixels", encode)
    raw = _raw("CT_small.dcm")
    assert _reception(True).process(raw).transcoded
    assert writes == [(False, True)]
    writes.clear()
    assert _reception(False).process(raw).transcoded
    assert writes == [(True, False)]


def _as_deidentified(name: str) -> pydicom.Dataset:
    """Every element decoded and nothing after the pixel data, as de-identification leaves
    an instance (it removes the trailing padding)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    for _elem in ds:
        pass
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]
    return ds


def test_no_header_ahead_when_it_cannot_be_known() -> None:
    policy = TranscodePolicy.from_mapping({"lossy": {"US": 10}})
    ds = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    assert tc.lossless_header(ds, policy) is None  # stored lossy: new UIDs
    ds = _as_deidentified("CT_small.dcm")
    header = tc.lossless_header(ds, TranscodePolicy())
    assert header is not None and "PixelData" not in header.dataset
    assert str(header.dataset.file_meta.TransferSyntaxUID) == tc.J2K_LOSSLESS
    assert str(ds.file_meta.TransferSyntaxUID) != tc.J2K_LOSSLESS  # the input is untouched
    ds.add_new(0xFFFCFFFC, "OB", b"\0\0")  # Data Set Trailing Padding, after the pixels
    assert tc.lossless_header(ds, TranscodePolicy()) is None


def test_a_header_written_ahead_is_used_only_if_it_is_the_instance_s() -> None:
    ds = _as_deidentified("CT_small.dcm")
    header = tc.lossless_header(ds, TranscodePolicy())
    assert header is not None
    out = tc.transcode(ds, TranscodePolicy(), new_uid=P.uid, consume=True).ds
    assert header.fits(out)
    out.PatientName = "CHANGED^AFTER"  # set in place, as pydicom does: seen
    assert not header.fits(out)
    out = tc.transcode(_as_deidentified("CT_small.dcm"), TranscodePolicy(), new_uid=P.uid,
                       consume=True).ds
    header = tc.lossless_header(_as_deidentified("CT_small.dcm"), TranscodePolicy())
    assert header is not None and not header.fits(out)  # another instance's elements
    out = tc.transcode(_as_deidentified("CT_small.dcm"), TranscodePolicy(), new_uid=P.uid).ds
    assert not header.fits(out)  # a copy: other element objects


def test_the_caller_waits_for_the_encode_to_let_go_of_the_gil() -> None:
    """``on_busy`` fires once, just before the long call without the GIL (so the reception's
    own Python cannot hold back the encode's start), and not at all when nothing is encoded."""
    calls: list[str] = []
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    real = tc.openjpeg.encode_lossless

    def spy(*args: object, **kwargs: object) -> bytes:
        calls.append("encode")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(tc.openjpeg, "encode_lossless", spy)
        stage = tc.encode_pixels(tc.pixel_view(ds), TranscodePolicy(),
                                 lambda: calls.append("busy"))
    assert isinstance(stage, tc.Encoded)
    assert calls == (["encode", "busy"] if tc.openjpeg.available() else ["busy"])
    calls.clear()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    kept = tc.encode_pixels(ds, TranscodePolicy(), lambda: calls.append("busy"))
    assert isinstance(kept, tc.Outcome) and calls == []
    # and the reception does not wait for a signal that never comes: the encode's end is one
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pipeline, "_HANDOFF_WAIT", 60.0)
        start = time.monotonic()
        decision = _reception(True).process(_raw("rtplan.dcm"))
        assert decision.store and decision.transcode_reason == "no-pixel-data"
        assert time.monotonic() - start < 30.0


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

    def counting(ds: pydicom.Dataset, policy: TranscodePolicy, *args: object) -> object:
        encodes.append(1)
        return real_encode(ds, policy, *args)  # type: ignore[arg-type]

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
