"""Tests of teachfile.reception.transcode over pydicom's test files and a few synthetic datasets.

Bit-exactness is judged with pydicom's own pixel handlers (pylibjpeg-openjpeg for the output), a
decoder independent of the imagecodecs encoder under test. Files from the optional pydicom-data
package are skipped when it is absent; nothing is ever downloaded.
"""

from __future__ import annotations

import copy
import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, parse_basic_offsets
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import JPEG2000Lossless, RLELossless

from teachfile.errors import ConfigError, Refusal
from teachfile.reception import transcode as tc
from teachfile.reception.transcode import TranscodePolicy, transcode

LOSSLESS = TranscodePolicy.from_mapping({"threads": 1})
OLD_UID_PREFIX = "lossy-j2k:"


def fake_uid(seed: str) -> str:
    return "2.25." + str(int.from_bytes(seed.encode()[-12:], "big"))


def load(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available (pydicom-data not installed)")
    return pydicom.dcmread(path, force=True)


def reference(ds: Dataset) -> np.ndarray:
    """The source pixels as pydicom decodes them (no colour conversion)."""
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed and not get_decoder(ts).is_available:
        pytest.skip(f"pydicom has no decoder for {ts.name}")
    return pixel_array(ds, raw=True)


def reread(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def decode_output(ds: Dataset) -> np.ndarray:
    ts = ds.file_meta.TransferSyntaxUID
    if not get_decoder(ts).is_available:
        pytest.skip(f"pydicom has no decoder for {ts.name}")
    return pixel_array(ds, raw=True)


def siz(codestream: bytes) -> tuple[list[int], list[int]]:
    """(precisions, signedness) of the components from the SIZ marker segment."""
    i = codestream.find(b"\xff\x51")
    ncomp = struct.unpack(">H", codestream[i + 38 : i + 40])[0]
    ssiz = codestream[i + 40 : i + 40 + 3 * ncomp : 3]
    return [(b & 0x7F) + 1 for b in ssiz], [b >> 7 for b in ssiz]


def fragments(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


# name, expected photometric after transcoding
LOSSLESS_CASES = [
    ("CT_small.dcm", "MONOCHROME2"),  # signed 16-bit
    ("MR_small.dcm", "MONOCHROME2"),
    ("MR_small_implicit.dcm", "MONOCHROME2"),
    ("MR_small_bigendian.dcm", "MONOCHROME2"),
    ("MR_small_RLE.dcm", "MONOCHROME2"),
    ("MR_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),
    ("image_dfl.dcm", "MONOCHROME2"),  # deflate, 8-bit
    ("SC_rgb.dcm", "YBR_RCT"),
    ("SC_rgb_small_odd.dcm", "YBR_RCT"),
    ("SC_rgb_rle.dcm", "YBR_RCT"),
    ("SC_rgb_rle_16bit_2frame.dcm", "YBR_RCT"),
    ("SC_rgb_jpeg_gdcm.dcm", "YBR_RCT"),  # JPEG lossless SV1, RGB
    ("examples_palette.dcm", "PALETTE COLOR"),
    ("emri_small.dcm", "MONOCHROME2"),  # 10 frames, 12 of 16 bits
    ("emri_small_RLE.dcm", "MONOCHROME2"),
    ("emri_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),
    ("JPEG-LL.dcm", "MONOCHROME2"),  # JPEG lossless, signed 16-bit
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "MONOCHROME2"),
    ("US1_UNCR.dcm", "YBR_RCT"),
    ("OBXXXX1A_rle_2frame.dcm", "PALETTE COLOR"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MONOCHROME2"),
]


@pytest.mark.parametrize(("name", "photometric"), LOSSLESS_CASES)
def test_lossless_round_trip_is_bit_exact(name: str, photometric: str) -> None:
    ds = load(name)
    expected = reference(ds)
    before = reread(ds)  # snapshot to prove the input is not modified
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)

    assert (out.status, out.reason, out.transfer_syntax) == ("transcoded", "lossless",
                                                             JPEG2000Lossless)
    assert out.ratio is not None and out.ratio > 0
    got = reread(out.ds)
    assert got.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.file_meta.MediaStorageSOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert got.PhotometricInterpretation == photometric
    assert "LossyImageCompressionRatio" not in got
    assert str(got.get("LossyImageCompression", "00")) == "00"
    if ds.SamplesPerPixel == 3:
        assert got.PlanarConfiguration == 0
    np.testing.assert_array_equal(decode_output(got), expected)

    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    frames = fragments(got)
    assert len(frames) == nframes
    assert len(parse_basic_offsets(got.PixelData)) == nframes
    precisions, signs = siz(frames[0])
    assert set(precisions) == {int(ds.BitsStored)}
    assert set(signs) == {int(ds.PixelRepresentation)}
    assert str(reread(ds)) == str(before)


def test_multiframe_has_one_fragment_per_frame_and_offset_table() -> None:
    ds = load("emri_small.dcm")
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    offsets = parse_basic_offsets(out.ds.PixelData)
    assert len(offsets) == 10 == len(fragments(out.ds))
    assert offsets[0] == 0 and offsets == sorted(offsets)


def synthetic_ct(
    bits_stored: int, signed: bool, garbage_high_bits: bool
) -> tuple[Dataset, np.ndarray]:
    """CT_small re-labelled to a smaller Bits Stored; optional junk in the unused high bits."""
    ds = load("CT_small.dcm")
    rng = np.random.default_rng(bits_stored)
    half = 1 << (bits_stored - 1)
    lo, hi = (-half, half) if signed else (0, 2 * half)
    values = rng.integers(lo, hi, size=(ds.Rows, ds.Columns)).astype(np.int64)
    values[:10, :10] = lo  # extremes
    values[-10:, -10:] = hi - 1
    stored = values & ((1 << bits_stored) - 1)
    if signed:
        stored = np.where(values < 0, values & 0xFFFF, stored)  # proper sign extension
    if garbage_high_bits:
        stored = (stored & ((1 << bits_stored) - 1)) | (0xA000 & ~((1 << bits_stored) - 1))
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds, values


@pytest.mark.parametrize("bits", [10, 12, 15])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("junk", [False, True])
def test_bits_stored_below_allocated(bits: int, signed: bool, junk: bool) -> None:
    ds, values = synthetic_ct(bits, signed, junk)
    assert np.array_equal(pixel_array(ds), values)  # pydicom masks / sign-extends
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    assert out.status == "transcoded"
    got = reread(out.ds)
    np.testing.assert_array_equal(decode_output(got), values)
    assert siz(fragments(got)[0]) == ([bits], [int(signed)])


def test_eight_bit_monochrome1() -> None:
    ds = load("image_dfl.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    got = reread(out.ds)
    assert got.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(decode_output(got), reference(ds))


def test_ybr_full_is_kept_ybr_full_without_colour_transform() -> None:
    ds = load("SC_rgb.dcm")
    ds.PhotometricInterpretation = "YBR_FULL"
    expected = pixel_array(ds, raw=True)
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    got = reread(out.ds)
    assert (out.status, got.PhotometricInterpretation) == ("transcoded", "YBR_FULL")
    np.testing.assert_array_equal(decode_output(got), expected)


def test_lossy_sets_attributes_new_uid_and_ratio() -> None:
    ds = load("CT_small.dcm")
    policy = TranscodePolicy.from_mapping({"lossy": {"CT": 8, "MR": 7}, "threads": 1})
    seen: list[str] = []

    def new_uid(seed: str) -> str:
        seen.append(seed)
        return fake_uid(seed)

    out = transcode(ds, policy, new_uid=new_uid)
    assert (out.status, out.reason, out.transfer_syntax) == ("transcoded", "lossy",
                                                             "1.2.840.10008.1.2.4.91")
    assert seen == [OLD_UID_PREFIX + ds.SOPInstanceUID]
    got = reread(out.ds)
    assert got.SOPInstanceUID == fake_uid(seen[0]) == got.file_meta.MediaStorageSOPInstanceUID
    assert got.LossyImageCompression == "01"
    assert got.LossyImageCompressionMethod == "ISO_15444_1"
    size = sum(len(f) for f in fragments(got))
    achieved = ds.Rows * ds.Columns * 2 / size
    assert float(got.LossyImageCompressionRatio) == pytest.approx(achieved, abs=0.01)
    assert out.ratio == pytest.approx(achieved, abs=0.01)
    assert 4 < out.ratio <= 8  # close to, never above, the configured ratio
    decoded = decode_output(got).astype(np.int32)
    original = ds.pixel_array.astype(np.int32)
    assert not np.array_equal(decoded, original)
    assert np.abs(decoded - original).mean() < 10


def test_lossy_colour_uses_ict_and_appends_existing_ratio() -> None:
    ds = load("US1_UNCR.dcm")
    ds.LossyImageCompressionRatio = "1.5"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompression = "00"
    policy = TranscodePolicy.from_mapping({"lossy": {"us": 10}, "threads": 1})
    out = transcode(ds, policy, new_uid=fake_uid)
    got = reread(out.ds)
    assert (out.reason, got.PhotometricInterpretation, got.PlanarConfiguration) == (
        "lossy", "YBR_ICT", 0)
    assert got.LossyImageCompression == "01"
    assert list(got.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    ratios = [float(v) for v in got.LossyImageCompressionRatio]
    assert ratios[0] == 1.5 and ratios[1] == pytest.approx(out.ratio, abs=0.01)
    assert decode_output(got).shape == ds.pixel_array.shape


def test_lossy_only_for_configured_modalities() -> None:
    policy = TranscodePolicy.from_mapping({"lossy": {"CT": 8}, "threads": 1})
    out = transcode(load("MR_small.dcm"), policy, new_uid=fake_uid)
    assert (out.reason, out.transfer_syntax) == ("lossless", JPEG2000Lossless)


@pytest.mark.parametrize(("name", "ratio", "reason"), [
    ("SC_rgb.dcm", 10, "lossless-meets-target"),  # flat synthetic image: lossless ~24:1
    ("SC_rgb_small_odd.dcm", 10, "lossless-no-gain"),  # 3x3: nothing to gain
    ("examples_palette.dcm", 10, "lossless"),  # palette indices are never lossy
])
def test_lossy_request_may_end_lossless(name: str, ratio: float, reason: str) -> None:
    ds = load(name)
    policy = TranscodePolicy.from_mapping({"lossy": {ds.Modality: ratio}, "threads": 1})
    out = transcode(ds, policy, new_uid=fake_uid)
    assert (out.status, out.reason, out.transfer_syntax) == ("transcoded", reason,
                                                             JPEG2000Lossless)
    assert out.ds.SOPInstanceUID == ds.SOPInstanceUID
    np.testing.assert_array_equal(decode_output(reread(out.ds)), reference(ds))


@pytest.mark.parametrize("name", [
    "JPEG-lossy.dcm",  # JPEG extended .51
    "SC_rgb_jpeg.dcm",  # baseline .50
    "color3d_jpeg_baseline.dcm",  # YBR_FULL_422 baseline
    "JPEGLSNearLossless_16.dcm",  # .81
    "SC_ybr_full_uncompressed.dcm",  # native but Lossy Image Compression 01
    "693_J2KI.dcm",  # .91
])
@pytest.mark.filterwarnings("ignore:Expected explicit VR")  # a quirk of SC_rgb_jpeg.dcm
def test_already_lossy_is_kept(name: str) -> None:
    ds = load(name)
    policy = TranscodePolicy.from_mapping({"lossy": {"CT": 8, "OT": 8}})
    out = transcode(ds, policy, new_uid=fake_uid)
    assert (out.status, out.reason, out.ratio) == ("kept", "already-lossy", None)
    assert out.ds is ds
    assert out.transfer_syntax == ds.file_meta.TransferSyntaxUID


def test_lossy_flag_on_native_instance_is_kept() -> None:
    ds = load("CT_small.dcm")
    ds.LossyImageCompression = "01"
    assert transcode(ds, LOSSLESS, new_uid=fake_uid).reason == "already-lossy"


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "rtstruct.dcm"])
def test_no_pixel_data_is_kept(name: str) -> None:
    ds = load(name)
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    assert (out.status, out.reason, out.ds) == ("kept", "no-pixel-data", ds)


def test_unsupported_pixels_are_kept() -> None:
    for name in ("rtdose.dcm", "liver.dcm", "SC_rgb_32bit.dcm"):  # 32-bit, 1-bit, 32-bit RGB
        ds = load(name)
        out = transcode(ds, LOSSLESS, new_uid=fake_uid)
        assert (out.status, out.reason) == ("kept", "unsupported-pixels"), name
    ds = load("SC_ybr_full_422_uncompressed.dcm")
    del ds.LossyImageCompression
    assert transcode(ds, LOSSLESS, new_uid=fake_uid).reason == "unsupported-pixels"
    ds = load("CT_small.dcm")
    del ds.PixelData
    ds.FloatPixelData = np.zeros(4, "<f4").tobytes()
    assert transcode(ds, LOSSLESS, new_uid=fake_uid).reason == "unsupported-pixels"


def test_already_j2k_kept_unless_lossy_requested() -> None:
    ds = load("MR_small_jp2klossless.dcm")
    assert transcode(ds, LOSSLESS, new_uid=fake_uid).reason == "already-j2k"
    policy = TranscodePolicy.from_mapping({"lossy": {"MR": 7}, "threads": 1})
    out = transcode(ds, policy, new_uid=fake_uid)
    assert (out.reason, out.transfer_syntax) == ("lossy", "1.2.840.10008.1.2.4.91")


def test_policy_off_keeps_everything() -> None:
    ds = load("CT_small.dcm")
    out = transcode(ds, TranscodePolicy.from_mapping({"mode": "off"}), new_uid=fake_uid)
    assert (out.status, out.reason, out.ds) == ("kept", "policy-off", ds)


def corrupt_decoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = tc._decode_codestream

    def bad(data: bytes, htj2k: bool, threads: int) -> np.ndarray:
        calls.append(1)
        arr = real(data, htj2k, threads)
        arr.flat[0] ^= 1
        return arr

    monkeypatch.setattr(tc, "_decode_codestream", bad)
    return calls


def test_verify_failure_keeps_native_input_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt_decoder(monkeypatch)
    ds = load("CT_small.dcm")
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    assert (out.status, out.reason, out.ds) == ("kept", "verify-failed", ds)


def test_verify_failure_on_compressed_input_gives_uncompressed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    corrupt_decoder(monkeypatch)
    ds = load("SC_rgb_rle_16bit_2frame.dcm")
    expected = reference(ds)
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    assert (out.status, out.reason, out.transfer_syntax) == (
        "kept", "verify-failed", "1.2.840.10008.1.2.1")
    got = reread(out.ds)
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    np.testing.assert_array_equal(pixel_array(got), expected)
    assert ds.file_meta.TransferSyntaxUID == RLELossless  # input untouched


@pytest.mark.parametrize(("verify", "calls"), [("all", 10), (3, 3), (1, 1), (50, 10)])
def test_verify_sample_size(monkeypatch: pytest.MonkeyPatch, verify: object, calls: int) -> None:
    seen: list[int] = []
    real = tc._decode_codestream

    def counting(data: bytes, htj2k: bool, threads: int) -> np.ndarray:
        seen.append(1)
        return real(data, htj2k, threads)

    monkeypatch.setattr(tc, "_decode_codestream", counting)
    policy = TranscodePolicy.from_mapping({"verify": verify, "threads": 1})
    assert transcode(load("emri_small.dcm"), policy, new_uid=fake_uid).status == "transcoded"
    assert len(seen) == calls


class UnavailableDecoder:
    """Stands in for a pydicom decoder whose backend is not installed."""

    is_available = False


def test_decode_failure_keeps_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ds: Dataset, ts: str) -> np.ndarray:
        raise ValueError("corrupt")

    monkeypatch.setattr(tc, "_decode_source", boom)
    ds = load("MR_small_RLE.dcm")
    out = transcode(ds, LOSSLESS, new_uid=fake_uid)
    assert (out.status, out.reason, out.ds) == ("kept", "decode-error", ds)


def test_encoder_failure_keeps_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("encoder broke")

    monkeypatch.setattr(tc, "_encode_frame", boom)
    ds = load("MR_small_RLE.dcm")
    assert transcode(ds, LOSSLESS, new_uid=fake_uid).reason == "encode-error"


@pytest.mark.parametrize("name", [
    "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_gdcm.dcm", "JPEG-LL.dcm",
    "MR_small_jp2klossless.dcm", "emri_small_jpeg_ls_lossless.dcm",
])
def test_imagecodecs_fallback_decoder_matches_pydicom(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The plugin's runtime may lack pylibjpeg-libjpeg: the imagecodecs path must agree."""
    ds = load(name)
    expected = reference(ds)

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: UnavailableDecoder())
    np.testing.assert_array_equal(tc._decode_source(ds, ds.file_meta.TransferSyntaxUID),
                                  expected)


def test_new_uid_failure_is_a_refusal() -> None:
    def broken(seed: str) -> str:
        raise KeyError(seed)

    policy = TranscodePolicy.from_mapping({"lossy": {"CT": 8}, "threads": 1})
    with pytest.raises(Refusal) as info:
        transcode(load("CT_small.dcm"), policy, new_uid=broken)
    assert info.value.reason == "transcode-error"
    assert "1.3.6" not in str(info.value)  # no UID (a data value) in the message


def test_lossy_without_sop_instance_uid_is_refused() -> None:
    ds = load("CT_small.dcm")
    del ds.SOPInstanceUID
    policy = TranscodePolicy.from_mapping({"lossy": {"CT": 8}, "threads": 1})
    with pytest.raises(Refusal) as info:
        transcode(ds, policy, new_uid=fake_uid)
    assert info.value.reason == "missing-uid"


def test_htj2k_opt_in() -> None:
    if not tc.codec_status()["htj2k"]:
        pytest.skip("imagecodecs without HTJ2K")
    policy = TranscodePolicy.from_mapping({"htj2k": True, "lossy": {"MR": 7}, "threads": 1})
    ct = load("CT_small.dcm")  # 16 of 16 bits
    out = transcode(ct, policy, new_uid=fake_uid)
    assert out.transfer_syntax == "1.2.840.10008.1.2.4.201"
    np.testing.assert_array_equal(decode_output(reread(out.ds)), ct.pixel_array)
    emri = load("emri_small.dcm")  # 12 of 16 bits: OpenJPH cannot write precision 12
    out = transcode(emri, TranscodePolicy.from_mapping({"htj2k": True}), new_uid=fake_uid)
    assert out.transfer_syntax == JPEG2000Lossless
    mr = load("MR_small.dcm")  # 16 of 16 bits, lossy
    out = transcode(mr, policy, new_uid=fake_uid)
    assert (out.reason, out.transfer_syntax) == ("lossy", "1.2.840.10008.1.2.4.203")
    assert out.ds.LossyImageCompressionMethod == "ISO_15444_15"
    assert 1 < out.ratio <= 7


# ---- policy parsing ---------------------------------------------------------------------------

def test_policy_defaults() -> None:
    for raw in (None, {}):
        p = TranscodePolicy.from_mapping(raw)
        assert (p.mode, p.lossy, p.htj2k, p.verify, p.bypass) == ("lossless", (), False, None,
                                                                   True)
        assert p.threads >= 1
    p = TranscodePolicy.from_mapping(
        {"mode": "lossless", "lossy": {"CR": 10, "dx": 10.5}, "htj2k": True, "verify": 4,
         "threads": 2})
    assert p.lossy == (("CR", 10.0), ("DX", 10.5))
    assert (p.lossy_ratio("dx"), p.lossy_ratio("CT"), p.lossy_ratio(None)) == (10.5, None, None)
    assert (p.htj2k, p.verify, p.threads) == (True, 4, 2)
    hash(p)  # frozen and hashable


@pytest.mark.parametrize("raw", [
    ["lossless"],
    {"mode": "lossy"},
    {"mode": None},
    {"modus": "off"},
    {"lossy": [10]},
    {"lossy": {"CT": "ten"}},
    {"lossy": {"CT": 1}},
    {"lossy": {"CT": 0.5}},
    {"lossy": {"CT": 1000}},
    {"lossy": {"CT": True}},
    {"lossy": {"C T": 8}},
    {"lossy": {"ct": 8, "CT": 9}},
    {"htj2k": "yes"},
    {"verify": 0},
    {"verify": "some"},
    {"verify": True},
    {"threads": 0},
    {"threads": "2"},
    {"threads": 2.5},
    {"bypass": "yes"},
    {"bypass": 1},
])
def test_policy_errors(raw: object) -> None:
    with pytest.raises(ConfigError):
        TranscodePolicy.from_mapping(copy.deepcopy(raw))  # type: ignore[arg-type]


def test_concurrent_threads_give_the_same_results() -> None:
    """Orthanc calls the plugin from several threads: encoding must be thread-safe."""
    from concurrent.futures import ThreadPoolExecutor

    names = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb.dcm", "emri_small.dcm"] * 3
    datasets = [load(n) for n in names]
    policy = TranscodePolicy.from_mapping({"threads": 1})
    serial = [transcode(d, policy, new_uid=fake_uid).ds.PixelData for d in datasets]
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = list(pool.map(lambda d: transcode(d, policy, new_uid=fake_uid), datasets))
    assert [o.status for o in parallel] == ["transcoded"] * len(names)
    assert [o.ds.PixelData for o in parallel] == serial


def test_codec_status_reports_jpeg2k() -> None:
    status = tc.codec_status()
    assert status["jpeg2k"] is True
    assert set(status) == {"jpeg2k", "htj2k", "ljpeg", "jpegls"}
