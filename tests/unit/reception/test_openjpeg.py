"""The ctypes binding to the system OpenJPEG (teachfile.reception.openjpeg): layout check, bit-exact
round trips decoded by an independent decoder (imagecodecs' bundled OpenJPEG), the BYPASS
code-block style really written, and the transcoder's fallback when the library is absent."""

from __future__ import annotations

import ctypes

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from teachfile.reception import openjpeg
from teachfile.reception import transcode as tc
from teachfile.reception.transcode import TranscodePolicy, transcode

RNG = np.random.default_rng(15444)


def codeblock_style(codestream: bytes) -> int:
    """The code-block style byte of the COD marker segment (ISO/IEC 15444-1 A.6.1)."""
    i = codestream.find(b"\xff\x52")
    assert i > 0
    return codestream[i + 12]


def test_system_library_is_loaded_and_its_layout_verified() -> None:
    # scripts/setup installs libopenjp2-7; the node must not silently run the slower path.
    assert openjpeg.available()
    assert (openjpeg.version() or "").startswith("2.")


def test_a_wrong_structure_layout_is_detected() -> None:
    lib = openjpeg._library()
    assert lib is not None
    fields = openjpeg._CParameters._fields_
    short = type("Short", (ctypes.Structure,), {"_fields_": fields[:-3]})
    shifted = type("Shifted", (ctypes.Structure,),
                   {"_fields_": [("extra", ctypes.c_int), *fields]})
    assert openjpeg._layout_matches(lib)
    assert not openjpeg._layout_matches(lib, short)
    assert not openjpeg._layout_matches(lib, shifted)


@pytest.mark.parametrize(("dtype", "bits", "shape"), [
    ("u1", 8, (64, 48)),
    ("u2", 12, (512, 512)),
    ("u2", 16, (33, 17)),
    ("i2", 12, (100, 90)),
    ("i2", 16, (64, 64)),
    ("u2", 10, (1, 1)),
    ("i2", 9, (1, 300)),
])
@pytest.mark.parametrize("mode", [openjpeg.BYPASS, 0])
def test_round_trip_is_bit_exact(dtype: str, bits: int, shape: tuple[int, int],
                                 mode: int) -> None:
    info = np.iinfo(np.dtype(dtype))
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if info.min < 0 else (0, (1 << bits) - 1)
    frame = RNG.integers(lo, hi, shape, endpoint=True).astype(dtype)
    stream = openjpeg.encode_lossless(frame, bits, info.min < 0, False, threads=2, mode=mode)
    assert stream.startswith(b"\xff\x4f\xff\x51")  # SOC, SIZ: a raw Part 1 codestream
    assert codeblock_style(stream) & openjpeg.BYPASS == mode
    np.testing.assert_array_equal(imagecodecs.jpeg2k_decode(stream), frame)


def test_rgb_with_reversible_colour_transform() -> None:
    frame = RNG.integers(0, 255, (40, 30, 3), endpoint=True).astype("u1")
    stream = openjpeg.encode_lossless(frame, 8, False, True, threads=2)
    np.testing.assert_array_equal(imagecodecs.jpeg2k_decode(stream), frame)


def test_threads_do_not_change_the_codestream() -> None:
    frame = RNG.integers(0, 4095, (256, 256), endpoint=True).astype("u2")
    assert (openjpeg.encode_lossless(frame, 12, False, False, threads=1)
            == openjpeg.encode_lossless(frame, 12, False, False, threads=2))


@pytest.mark.parametrize("shape", [(8, 8, 4), (0, 8), (8, 8, 2)])
def test_unsupported_geometry_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(RuntimeError):
        openjpeg.encode_lossless(np.zeros(shape, "u1"), 8, False, False)


def _ct() -> pydicom.Dataset:
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    return pydicom.dcmread(path)


def _first_fragment(ds: pydicom.Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=1))


@pytest.mark.parametrize(("bypass", "expected"), [(True, openjpeg.BYPASS), (False, 0)])
def test_policy_switch_reaches_the_codestream(bypass: bool, expected: int) -> None:
    policy = TranscodePolicy.from_mapping({"threads": 1, "bypass": bypass})
    out = transcode(_ct(), policy, new_uid=lambda s: "2.25.1")
    assert out.status == "transcoded"
    assert codeblock_style(_first_fragment(out.ds)) & openjpeg.BYPASS == expected


def test_without_the_system_library_imagecodecs_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _ct()
    monkeypatch.setattr(openjpeg, "available", lambda: False)
    out = transcode(ds, TranscodePolicy.from_mapping({"threads": 1}), new_uid=lambda s: "2.25.1")
    assert out.status == "transcoded"
    assert codeblock_style(_first_fragment(out.ds)) & openjpeg.BYPASS == 0
    np.testing.assert_array_equal(pixel_array(out.ds, raw=True), pixel_array(ds, raw=True))
    assert tc.lossless_encoder(TranscodePolicy()).startswith("imagecodecs")


def test_status_names_the_encoder() -> None:
    assert tc.lossless_encoder(TranscodePolicy()).endswith("(system library, code-block BYPASS)")
    assert tc.lossless_encoder(TranscodePolicy(bypass=False)).endswith("(system library)")
