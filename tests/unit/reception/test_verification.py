"""Tests of the lossless verification policy (``transcoding.verification``) and of the codestream
header check that every codestream passes, decoded or not."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from teachfile.errors import ConfigError
from teachfile.reception import codestream
from teachfile.reception import transcode as tc
from teachfile.reception.transcode import TranscodePolicy, Verifier, transcode

REAL_DECODE = tc._decode_codestream


def fake_uid(seed: str) -> str:
    return "2.25." + str(int.from_bytes(seed.encode()[-12:], "big"))


def ct(series: str, rows: int = 64, signed: bool = True, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = int(signed)
    lo, hi = (-2048, 2047) if signed else (0, 4095)
    arr = rng.integers(lo, hi, (rows, rows)).astype("<i2" if signed else "<u2")
    ds.PixelData = arr.tobytes()
    return ds


def counting_decoder(monkeypatch: pytest.MonkeyPatch, corrupt: bool = False) -> list[int]:
    calls: list[int] = []
    real = REAL_DECODE

    def decode(data: bytes, htj2k: bool, threads: int) -> np.ndarray:
        calls.append(1)
        arr = real(data, htj2k, threads)
        if corrupt:
            arr.flat[0] ^= 1
        return arr

    monkeypatch.setattr(tc, "_decode_codestream", decode)
    return calls


def policy(**kw: object) -> TranscodePolicy:
    return TranscodePolicy.from_mapping({"threads": 1, **kw})


def test_default_is_sampled_at_five_percent() -> None:
    p = TranscodePolicy.from_mapping({})
    assert (p.verification, p.sample_rate) == ("sampled", 0.05)


@pytest.mark.parametrize("bad", [{"verification": "some"}, {"verification": True},
                                 {"sample_rate": 1.5}, {"sample_rate": -0.1},
                                 {"sample_rate": True}, {"sample_rate": "5%"}])
def test_bad_verification_settings_stop_the_node(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TranscodePolicy.from_mapping(bad)


def test_sampled_proves_each_format_of_each_series_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decoder(monkeypatch)
    p = policy(sample_rate=0)
    v = Verifier(p)
    a, b = generate_uid(), generate_uid()
    for ds in [ct(a), ct(a), ct(a), ct(a, rows=32), ct(a, rows=32), ct(a, signed=False),
               ct(b), ct(b)]:
        assert transcode(ds, p, fake_uid, v).status == "transcoded"
    # first of: a 64 signed, a 32 signed, a 64 unsigned, b 64 signed
    assert len(calls) == 4
    assert v.counts == {"first": 4, "header-only": 4}


def test_sampled_draws_a_random_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decoder(monkeypatch)
    p = policy(sample_rate=0.25)
    draws = iter([0.9, 0.1, 0.9, 0.2, 0.9])
    v = Verifier(p, draw=lambda: next(draws))
    s = generate_uid()
    for i in range(6):
        assert transcode(ct(s, seed=i), p, fake_uid, v).status == "transcoded"
    assert len(calls) == 3  # the first, then the draws 0.1 and 0.2
    assert v.counts == {"first": 1, "sample": 2, "header-only": 3}


@pytest.mark.parametrize(("mode", "calls"), [("all", 5), ("off", 0), ("sampled", 1)])
def test_modes(monkeypatch: pytest.MonkeyPatch, mode: str, calls: int) -> None:
    seen = counting_decoder(monkeypatch)
    p = policy(verification=mode, sample_rate=0)
    v = Verifier(p)
    s = generate_uid()
    for i in range(5):
        assert transcode(ct(s, seed=i), p, fake_uid, v).status == "transcoded"
    assert len(seen) == calls


def test_without_a_verifier_everything_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decoder(monkeypatch)
    s = generate_uid()
    for i in range(3):
        transcode(ct(s, seed=i), policy(sample_rate=0), fake_uid)
    assert len(calls) == 3


def test_a_failing_format_is_distrusted_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    p = policy(sample_rate=0)
    v = Verifier(p)
    s = generate_uid()
    counting_decoder(monkeypatch)
    first = ct(s)
    assert transcode(first, p, fake_uid, v).status == "transcoded"  # proven
    # Now the codec "goes wrong" on a sampled instance: it is kept, the format distrusted.
    v.rate = 1.0
    counting_decoder(monkeypatch, corrupt=True)
    bad = ct(s, seed=1)
    out = transcode(bad, p, fake_uid, v)
    assert (out.status, out.reason, out.ds) == ("kept", "verify-failed", bad)
    v.rate = 0.0
    calls = counting_decoder(monkeypatch, corrupt=True)
    for i in range(3):
        assert transcode(ct(s, seed=2 + i), p, fake_uid, v).reason == "verify-failed"
    assert len(calls) == 3
    calls = counting_decoder(monkeypatch)
    assert transcode(ct(s, seed=9), p, fake_uid, v).status == "transcoded"
    assert len(calls) == 1  # still distrusted: decoded although the rate is 0
    assert v.counts["failed"] == 4 and v.counts["distrusted"] == 1


def test_a_header_that_does_not_match_is_never_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even in ``off`` mode: a codestream with the wrong precision is caught undecoded."""
    real = tc._encode_frame

    def wrong_precision(frame: np.ndarray, ds: Dataset, target: object, level: float,
                        threads: int) -> bytes:
        ds2 = Dataset()
        ds2.BitsStored, ds2.PixelRepresentation = 16, ds.PixelRepresentation
        return real(frame, ds2, target, level, threads)  # type: ignore[arg-type]

    monkeypatch.setattr(tc, "_encode_frame", wrong_precision)
    calls = counting_decoder(monkeypatch)
    ds = ct(generate_uid())
    out = transcode(ds, policy(verification="off"), fake_uid, Verifier(policy()))
    assert (out.status, out.reason) == ("kept", "verify-failed")
    assert calls == []


def test_lossy_is_always_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decoder(monkeypatch)
    p = policy(verification="off", lossy={"CT": 8})
    v = Verifier(p)
    s = generate_uid()
    rng = np.random.default_rng(3)
    for _ in range(2):
        ds = ct(s)
        y, x = np.mgrid[0:64, 0:64]
        ds.PixelData = ((x * 20 + y * 7 + rng.integers(0, 3, (64, 64))) % 4000
                        ).astype("<i2").tobytes()
        out = transcode(ds, p, fake_uid, v)
        assert out.status == "transcoded"
    assert len(calls) >= 2


def test_multiframe_is_encoded_in_parallel_and_exact() -> None:
    """Several frames go to the worker pool; the result is still bit-exact, frames in order."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 255, (7, 40, 48, 3)).astype(np.uint8)
    frames[:, :, :, 0] += np.arange(7, dtype=np.uint8)[:, None, None]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.NumberOfFrames = 7
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 40, 48, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.tobytes()
    p = TranscodePolicy.from_mapping({"threads": 3, "verification": "all"})
    out = transcode(ds, p, fake_uid, Verifier(p))
    assert out.status == "transcoded"
    import imagecodecs

    got = [np.asarray(imagecodecs.jpeg2k_decode(f))
           for f in generate_frames(out.ds.PixelData, number_of_frames=7)]
    np.testing.assert_array_equal(np.stack(got), frames)


def test_header_reader() -> None:
    from teachfile.reception import openjpeg

    if not openjpeg.available():
        pytest.skip("system OpenJPEG not available")
    arr = np.arange(30 * 20, dtype=np.int16).reshape(30, 20) - 300
    data = openjpeg.encode_lossless(arr, 12, True, False)
    h = codestream.read_header(data)
    assert (h.width, h.height, h.components, h.reversible, h.mct, h.complete) == (
        20, 30, ((12, True),), True, False, True)
    assert codestream.matches(data, 30, 20, 1, 12, True, False, True)
    assert not codestream.matches(data, 20, 30, 1, 12, True, False, True)
    assert not codestream.matches(data, 30, 20, 1, 11, True, False, True)
    assert not codestream.matches(data, 30, 20, 1, 12, False, False, True)
    assert not codestream.matches(data[:-2], 30, 20, 1, 12, True, False, True)
    assert not codestream.matches(b"\xff\x4f\xff\x51\x00", 30, 20, 1, 12, True, False, True)
    assert not codestream.matches(b"", 30, 20, 1, 12, True, False, True)
    rgb = np.zeros((8, 8, 3), np.uint8)
    data = openjpeg.encode_lossless(rgb, 8, False, True)
    assert codestream.matches(data, 8, 8, 3, 8, False, True, True)
    assert not codestream.matches(data, 8, 8, 3, 8, False, False, True)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm",
                                  "MR_small_bigendian.dcm", "SC_rgb_rle_16bit_2frame.dcm"])
def test_consume_gives_the_same_bytes_as_a_copy(name: str) -> None:
    """The pipeline lets transcode reuse its input; the stored bytes must not change."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available")
    out = []
    for consume in (False, True):
        ds = pydicom.dcmread(path)
        res = transcode(ds, policy(), fake_uid, consume=consume)
        assert res.status == "transcoded"
        buf = io.BytesIO()
        res.ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    assert out[0] == out[1]
