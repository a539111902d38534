"""Burned-in text: pixel rules, ultrasound regions and refusal (issue 8).

Every cleaning test checks the two halves of the promise exactly: the blanked pixels are zero
(YBR_FULL: black, i.e. Y=0 and Cb=Cr=half range) and every other pixel is unchanged.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from teachfile.errors import ConfigError, Refusal
from teachfile.reception import pixels
from teachfile.reception.deid import Deidentifier
from teachfile.reception.pixels import PixelPlan, assess, load_pixel_policy, policy_from_mapping
from teachfile.reception.profile import load_profile
from teachfile.reception.pseudonym import Pseudonymizer
from teachfile.reception.transcode import TranscodePolicy, transcode

CONFIG = Path(__file__).parents[3] / "orthanc-config"
DEFAULT_RULES = CONFIG / "pixel-rules.yaml"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
US_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
# Synthetic "text": strokes drawn inside these rectangles; the rule blanks the first two.
TEXT_AT = ((2, 1, 20, 6), (40, 50, 16, 8))
STRAY_TEXT = (30, 20, 6, 4)  # outside every rule rectangle: must survive
RULE = {
    "name": "acme-echo",
    "signature": {"Manufacturer": "ACME*", "ManufacturerModelName": ["Echo 1", "echo 2"],
                  "Rows": 64, "Columns": 60},
    "rectangles": [list(r) for r in TEXT_AT],
}
POLICY = policy_from_mapping({
    "likely_burned_in": [
        {"name": "burned-in-annotation", "keyword": "BurnedInAnnotation", "match": "YES"},
        {"name": "ultrasound", "keyword": "Modality", "match": ["US"]},
        {"name": "secondary-capture", "keyword": "SOPClassUID",
         "match": [SC_CLASS, SC_CLASS + ".*"]},
        {"name": "save", "keyword": "ImageType", "contains": ["SAVE", "SCREEN"]},
    ],
    "rules": [RULE],
})


def _image(frames: int, rows: int, cols: int, spp: int, bits: int, signed: bool) -> np.ndarray:
    """Noise (never zero, so a blanked pixel is unambiguous) with bright strokes as "text"."""
    rng = np.random.default_rng(rows * cols + frames + spp + bits)
    lo, hi = (1, 200) if bits == 8 else ((-1000, 1000) if signed else (1, 4000))
    shape = (frames, rows, cols) + ((spp,) if spp > 1 else ())
    arr = rng.integers(lo, hi, size=shape)
    arr[arr == 0] = 1
    for x, y, w, h in (*TEXT_AT, STRAY_TEXT):
        arr[:, y + 1:y + h - 1:2, x:x + w] = 255 if bits == 8 else 4000  # horizontal strokes
    kind = "i" if signed else "u"
    return arr.astype(f"{kind}{max(bits, 8) // 8}")


def _dataset(arr: np.ndarray, photometric: str, bits_stored: int | None = None,
             planar: int = 0, sop_class: str = SC_CLASS, **attrs: Any) -> Dataset:
    """A native instance of ``arr`` (frames, rows, cols[, samples])."""
    frames, rows, cols = arr.shape[:3]
    spp = arr.shape[3] if arr.ndim == 4 else 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Manufacturer, ds.ManufacturerModelName = "Acme Imaging", "ECHO 1"
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-123"
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, spp
    ds.PhotometricInterpretation = photometric
    alloc = arr.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored = alloc, bits_stored or alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if spp > 1:
        ds.PlanarConfiguration = planar
        data = np.moveaxis(arr, -1, 1) if planar else arr
    else:
        data = arr
    ds.PixelData = np.ascontiguousarray(data).astype(arr.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if alloc == 8 else "OW"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _reread(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _frames(ds: Dataset) -> np.ndarray:
    """Stored values as (frames, rows, cols[, samples]), whatever the transfer syntax."""
    arr, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)
    spp = int(ds.SamplesPerPixel)
    return arr[np.newaxis] if arr.ndim == (2 if spp == 1 else 3) else arr


def _mask(rows: int, cols: int, plan: PixelPlan) -> np.ndarray:
    """An independent re-statement of what a plan blanks."""
    mask = np.zeros((rows, cols), dtype=bool)
    for x, y, w, h in plan.regions:
        mask[y:y + h, x:x + w] = True
    if plan.keep:
        keep = np.zeros_like(mask)
        for x, y, w, h in plan.keep:
            keep[y:y + h, x:x + w] = True
        mask |= ~keep
    return mask


def _check_cleaned(before: np.ndarray, ds: Dataset, plan: PixelPlan,
                   blank: tuple[int, ...] = (0,)) -> np.ndarray:
    """Round-trip ``ds`` through bytes, then assert blanked == blank and the rest unchanged."""
    after = _frames(_reread(ds))
    assert after.shape == before.shape
    mask = _mask(before.shape[1], before.shape[2], plan)
    assert mask.any() and not mask.all()
    blanked = after[:, mask]
    assert (blanked == np.array(blank, dtype=after.dtype)).all()
    np.testing.assert_array_equal(after[:, ~mask], before[:, ~mask])
    return after


def _codes(ds: Dataset) -> list[str]:
    return [str(i.CodeValue) for i in ds.get("DeidentificationMethodCodeSequence", [])]


# ------------------------------------------------------------------ synthetic images, native
CASES = [
    # (frames, spp, bits allocated, bits stored, signed, photometric, planar)
    (1, 1, 8, 8, False, "MONOCHROME2", 0),
    (1, 1, 16, 12, False, "MONOCHROME2", 0),
    (1, 1, 16, 16, True, "MONOCHROME2", 0),
    (1, 1, 16, 12, False, "MONOCHROME1", 0),
    (3, 1, 16, 12, False, "MONOCHROME2", 0),
    (1, 3, 8, 8, False, "RGB", 0),
    (1, 3, 8, 8, False, "RGB", 1),
    (4, 3, 8, 8, False, "RGB", 1),
    (2, 3, 8, 8, False, "YBR_FULL", 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[5]}-f{c[0]}-b{c[3]}-pc{c[6]}"
                         + ("-signed" if c[4] else ""))
def test_rule_cleans_native(case: tuple[Any, ...]) -> None:
    frames, spp, alloc, stored, signed, photometric, planar = case
    arr = _image(frames, 64, 60, spp, alloc, signed)
    ds = _dataset(arr, photometric, stored, planar)
    plan = assess(ds, POLICY)
    assert (plan.action, plan.rule) == ("clean", "acme-echo")
    assert plan.criteria == ("burned-in-annotation", "secondary-capture")
    pixels.apply(ds, plan)
    ybr = photometric == "YBR_FULL"
    after = _check_cleaned(arr, ds, plan, (0, 128, 128) if ybr else (0,))
    x, y, w, h = STRAY_TEXT
    np.testing.assert_array_equal(after[:, y:y + h, x:x + w], arr[:, y:y + h, x:x + w])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == photometric
    assert ds.BurnedInAnnotation == "NO" and _codes(ds) == ["113101"]
    if spp > 1:
        assert ds.PlanarConfiguration == 0
    if ybr:  # the blanked region is black once displayed
        from pydicom.pixels import convert_color_space
        rgb = convert_color_space(after[0], "YBR_FULL", "RGB")
        assert (rgb[_mask(64, 60, plan)] == 0).all()


# ------------------------------------------------------------------ compressed input
def _encapsulated(ds: Dataset, arr: np.ndarray, syntax: str, encode: Any) -> Dataset:
    frames = [bytes(encode(np.ascontiguousarray(f))) for f in arr]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _compress(ds: Dataset, arr: np.ndarray, syntax: str) -> Dataset:
    import imagecodecs

    if syntax == RLELossless:
        ds.compress(RLELossless)
        return ds
    if syntax == JPEG2000Lossless:
        def j2k(f: np.ndarray) -> bytes:
            return imagecodecs.jpeg2k_encode(f, 0, codecformat="J2K", reversible=True,
                                             bitspersample=int(ds.BitsStored))
        return _encapsulated(ds, arr, syntax, j2k)
    if syntax == JPEGLSLossless:
        return _encapsulated(ds, arr, syntax, lambda f: imagecodecs.jpegls_encode(f, level=0))
    return _encapsulated(ds, arr, syntax, lambda f: imagecodecs.jpeg8_encode(f, level=90))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless],
                         ids=["rle", "j2k", "jpegls"])
@pytest.mark.parametrize("spp", [1, 3], ids=["mono", "rgb"])
def test_rule_cleans_compressed_multiframe(syntax: str, spp: int) -> None:
    arr = _image(3, 64, 60, spp, 8, False)
    ds = _compress(_dataset(arr, "MONOCHROME2" if spp == 1 else "RGB"), arr, syntax)
    before = _frames(ds)
    np.testing.assert_array_equal(before, arr)  # the test input itself is lossless
    plan = assess(ds, POLICY)
    pixels.apply(ds, plan)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "LossyImageCompression" not in ds
    _check_cleaned(before, ds, plan)


def test_lossy_jpeg_input_is_cleaned_and_stays_flagged_lossy() -> None:
    arr = _image(1, 64, 60, 3, 8, False)
    ds = _compress(_dataset(arr, "YBR_FULL_422"), arr, JPEGBaseline8Bit)
    before = _frames(ds)  # the lossy reference: what the decoder gives, before cleaning
    plan = assess(ds, POLICY)
    pixels.apply(ds, plan)
    assert ds.LossyImageCompression == "01"
    assert ds.PhotometricInterpretation == "YBR_FULL"
    _check_cleaned(before, ds, plan, (0, 128, 128))


class _Unavailable:
    """Stands for a pydicom decoder whose plugins are missing."""

    is_available = False


def test_imagecodecs_fallback_when_pydicom_has_no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's runtime may lack pydicom's JPEG plugins: imagecodecs must do the work."""
    arr = _image(2, 64, 60, 3, 8, False)
    ds = _compress(_dataset(arr, "RGB"), arr, JPEG2000Lossless)
    ds.PhotometricInterpretation = "YBR_RCT"
    plan = assess(ds, POLICY)

    import pydicom.pixels as pp
    calls: list[str] = []
    real = pixels._decode_with_imagecodecs

    def spy(*args: Any) -> Any:
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(pp, "get_decoder", lambda uid: _Unavailable())
    monkeypatch.setattr(pixels, "_decode_with_imagecodecs", spy)
    pixels.apply(ds, plan)
    monkeypatch.undo()
    assert calls == [JPEG2000Lossless]
    assert ds.PhotometricInterpretation == "RGB"
    _check_cleaned(arr, ds, plan)


def test_undecodable_pixels_are_a_pixel_error_without_values() -> None:
    arr = _image(1, 64, 60, 1, 8, False)
    ds = _dataset(arr, "MONOCHROME2")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51garbage-Doe^Jane"])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    with pytest.raises(Refusal) as info:
        pixels.apply(ds, assess(ds, POLICY))
    assert info.value.reason == "pixel-error" and "Doe" not in str(info.value)


def test_geometry_must_match_the_assessed_instance() -> None:
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2")
    plan = assess(ds, POLICY)
    ds.Rows = 32
    with pytest.raises(Refusal, match="pixel-error"):
        pixels.apply(ds, plan)


# ------------------------------------------------------------------ the whole path: J2K after
def test_cleaned_pixels_survive_deidentification_and_jpeg2000() -> None:
    arr = _image(2, 64, 60, 3, 8, False)
    original = _dataset(arr, "RGB", planar=1)
    plan = assess(original, POLICY)
    engine = Deidentifier(load_profile("teaching", CONFIG), Pseudonymizer(b"\x01" * 32))
    ds = engine.deidentify(original)
    assert _codes(ds)[:1] == ["113100"]
    pixels.apply(ds, plan)
    assert _codes(ds)[0] == "113100" and _codes(ds)[-1] == "113101"
    out = transcode(ds, TranscodePolicy.from_mapping({"threads": 1}), new_uid=lambda s: s)
    assert out.status == "transcoded", out.reason
    assert out.ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    _check_cleaned(arr, out.ds, plan)


# ------------------------------------------------------------------ decisions
def test_likely_burned_in_without_a_rule_is_refused() -> None:
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2", Manufacturer="Other")
    plan = assess(ds, POLICY)
    assert plan.action == "refuse" and plan.rule is None
    assert plan.reason_code == "likely:burned-in-annotation+secondary-capture;no-rule"
    with pytest.raises(Refusal, match="burned-in"):
        pixels.apply(ds, plan)  # a safety net should a caller forget to refuse


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize("attrs, criterion", [
    ({"BurnedInAnnotation": "yes"}, "burned-in-annotation"),
    ({"Modality": "US"}, "ultrasound"),
    ({"ImageType": ["DERIVED", "SECONDARY", "SCREEN SAVE"]}, "save"),
])
def test_each_criterion_flags_an_instance(attrs: dict[str, Any], criterion: str) -> None:
    ds = _dataset(_image(1, 8, 8, 1, 8, False), "MONOCHROME2", sop_class=CT_CLASS,
                  **{"BurnedInAnnotation": "NO", **attrs})
    plan = assess(ds, POLICY)
    assert plan.action == "refuse" and plan.criteria == (criterion,)


def test_not_likely_and_no_rule_passes_untouched() -> None:
    ds = _dataset(_image(1, 8, 8, 1, 8, False), "MONOCHROME2", sop_class=CT_CLASS,
                  BurnedInAnnotation="NO", Modality="CT")
    before = ds.PixelData
    plan = assess(ds, POLICY)
    assert plan.action == "none"
    assert pixels.apply(ds, plan) is ds and ds.PixelData == before
    assert ds.BurnedInAnnotation == "NO" and _codes(ds) == []


def test_a_rule_also_cleans_an_instance_not_flagged() -> None:
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2", sop_class=CT_CLASS,
                  BurnedInAnnotation="NO", Modality="CT")
    plan = assess(ds, POLICY)
    assert plan.action == "clean" and plan.criteria == ()


def test_flagged_instance_without_pixels_is_refused() -> None:
    ds = _dataset(_image(1, 8, 8, 1, 8, False), "MONOCHROME2")
    del ds.PixelData
    plan = assess(ds, POLICY)
    assert plan.action == "refuse" and plan.reason_code.endswith(";no-pixel-data")


def test_first_matching_rule_wins_and_matching_is_case_insensitive_glob() -> None:
    first = {**RULE, "name": "first", "rectangles": [[0, 0, 4, 4]],
             "signature": {"Manufacturer": "acme imaging", "Rows": [32, 64]}}
    policy = policy_from_mapping({"rules": [first, RULE]})
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2")
    assert assess(ds, policy).rule == "first"
    ds.Manufacturer = "ACME Imaging GmbH"
    assert assess(ds, policy).rule == "acme-echo"  # glob ACME*
    ds.ManufacturerModelName = "Echo 3"
    assert assess(ds, policy).action == "none"  # flagged by nothing in this policy


def test_rectangles_are_clipped_and_a_rule_outside_the_image_does_not_clean() -> None:
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2")
    edge = {**RULE, "rectangles": [[50, 60, 100, 100]]}
    plan = assess(ds, policy_from_mapping({**_as_mapping(POLICY), "rules": [edge]}))
    assert plan.regions == ((50, 60, 10, 4),)
    outside = {**RULE, "rectangles": [[60, 0, 5, 5]]}
    plan = assess(ds, policy_from_mapping({**_as_mapping(POLICY), "rules": [outside]}))
    assert plan.action == "refuse" and plan.reason_code.endswith("rule-outside-image")


def test_disabled_policy_does_nothing() -> None:
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2")
    assert assess(ds, policy_from_mapping({"enabled": False, "rules": [RULE]})).action == "none"


def _as_mapping(policy: pixels.PixelPolicy) -> dict[str, Any]:
    return {"likely_burned_in": [
        {"name": c.name, "keyword": c.keyword,
         **({"match": list(c.match)} if c.match else {"contains": list(c.contains)})}
        for c in policy.likely_burned_in]}


# ------------------------------------------------------------------ ultrasound regions
def _region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
    item = Dataset()
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    return item


def test_ultrasound_regions_blank_everything_outside() -> None:
    arr = _image(2, 64, 60, 3, 8, False)
    ds = _dataset(arr, "RGB", sop_class=US_CLASS, Modality="US", Manufacturer="Other",
                  SequenceOfUltrasoundRegions=Sequence([_region(5, 10, 29, 39),
                                                        _region(30, 30, 54, 59)]))
    plan = assess(ds, POLICY)
    assert plan.action == "clean" and plan.rule is None and plan.regions == ()
    assert plan.keep == ((5, 10, 25, 30), (30, 30, 25, 30))  # Max X1 / Y1 are inclusive
    pixels.apply(ds, plan)
    after = _check_cleaned(arr, ds, plan)
    assert (after[:, 10:40, 5:30] == arr[:, 10:40, 5:30]).all()
    assert (after[:, 0:10] == 0).all() and (after[:, :, 55:] == 0).all()


@pytest.mark.parametrize("regions", [
    [_region(0, 0, 59, 63)],     # keeps the whole image: cleans nothing
    [_region(0, 0, 20, 20), _region(30, 30, 10, 40)],  # a malformed region: layout untrusted
])
def test_unusable_ultrasound_regions_leave_the_instance_refused(regions: list[Dataset]) -> None:
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2", Modality="US",
                  Manufacturer="Other", SequenceOfUltrasoundRegions=Sequence(regions))
    assert assess(ds, POLICY).action == "refuse"


def test_ultrasound_option_off_and_unflagged_instances_are_not_cropped() -> None:
    seq = Sequence([_region(0, 0, 20, 20)])
    ds = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2", Modality="US",
                  Manufacturer="Other", SequenceOfUltrasoundRegions=seq)
    off = policy_from_mapping({**_as_mapping(POLICY), "ultrasound_regions": False})
    assert assess(ds, off).action == "refuse"
    dx = _dataset(_image(1, 64, 60, 1, 8, False), "MONOCHROME2", sop_class=CT_CLASS,
                  Modality="DX", Manufacturer="Other", BurnedInAnnotation="NO",
                  SequenceOfUltrasoundRegions=seq)
    assert assess(dx, POLICY).action == "none"


# ------------------------------------------------------------------ deid-data ultrasound files
def _deid_data_ultrasounds() -> list[Path]:
    try:
        import deid_data
    except ImportError:
        return []
    return sorted((Path(deid_data.__file__).parent / "data" / "ultrasounds").glob("*.dcm"))


US_FILES = _deid_data_ultrasounds()
# The 13 MB greyscale cine (27 frames) is read from its zip; the 104 MB colour cine is left out
# to keep the suite lean (ultrasound-multiframe covers colour multi-frame, planar 1).
US_CASES = [*((p, p.stem in ("GREYSCALE_IMAGE", "RGB_IMAGE", "ultrasound-multiframe"))
              for p in US_FILES),
            *((p.parent / "GREYSCALE_CINE.zip", False) for p in US_FILES[:1])]


def _read_us(path: Path) -> Dataset:
    if path.suffix != ".zip":
        return pydicom.dcmread(path)
    with zipfile.ZipFile(path) as z, z.open(f"{path.stem}.dcm") as f:
        return pydicom.dcmread(io.BytesIO(f.read()))


@pytest.mark.skipif(not US_FILES, reason="deid-data not installed (pip install deid-data)")
@pytest.mark.parametrize("path, has_rule", US_CASES,
                         ids=lambda c: c.stem if isinstance(c, Path) else None)
@pytest.mark.parametrize("rules", ["default", "regions-only"])
def test_deid_data_ultrasound(path: Path, has_rule: bool, rules: str) -> None:
    policy = load_pixel_policy(DEFAULT_RULES)
    if rules == "regions-only":
        policy = pixels.PixelPolicy(True, True, policy.likely_burned_in, ())
    ds = _read_us(path)
    before = _frames(ds)
    plan = assess(ds, policy)
    assert plan.action == "clean" and "ultrasound" in plan.criteria
    assert plan.keep  # all of them carry a Sequence of Ultrasound Regions
    assert (plan.rule is not None) == (rules == "default" and has_rule)
    pixels.apply(ds, plan)
    _check_cleaned(before, ds, plan)
    assert ds.BurnedInAnnotation == "NO" and _codes(ds)[-1] == "113101"


@pytest.mark.skipif(not US_FILES, reason="deid-data not installed (pip install deid-data)")
def test_deid_data_ultrasound_without_regions_or_rule_is_refused() -> None:
    ds = pydicom.dcmread(US_FILES[0])
    del ds.SequenceOfUltrasoundRegions
    policy = load_pixel_policy(DEFAULT_RULES)
    assert assess(ds, pixels.PixelPolicy(True, True, policy.likely_burned_in, ())).action \
        == "refuse"


# ------------------------------------------------------------------ the rules file
def test_default_rules_file_loads() -> None:
    policy = load_pixel_policy(DEFAULT_RULES)
    assert policy.enabled and policy.ultrasound_regions
    names = {c.name for c in policy.likely_burned_in}
    assert {"burned-in-annotation", "ultrasound", "secondary-capture",
            "save-screen-image-type", "save-screen-series"} <= names
    assert len(policy.rules) >= 3


BAD_RULES = [
    ("version: 1\nenabled: maybe\n", 1, "enabled must be true or false"),
    ("version: 2\n", 1, "unsupported pixel rules version"),
    ("- 1\n", 1, "must be a mapping"),
    ("rules: [\n", 2, "YAML syntax"),
    ("colour: red\n", 1, "unknown key(s): colour"),
    ("likely_burned_in:\n  - name: a\n    keyword: BurnedInAnnotation\n    match: YES\n",
     2, "quote YES/NO"),
    ("likely_burned_in:\n  - name: a\n    keyword: PatientNam\n    match: x\n",
     2, "not a DICOM keyword"),
    ("likely_burned_in:\n  - name: a\n    keyword: Modality\n    match: x\n    contains: y\n",
     2, "exactly one of match / contains"),
    ("likely_burned_in:\n  - name: a\n    keyword: Modality\n", 2, "exactly one of"),
    ("rules:\n  - name: r\n    signature:\n      RequestAttributesSequence: x\n"
     "    rectangles: [[0, 0, 1, 1]]\n", 4, "is a sequence"),
    ("rules:\n  - name: r\n    signature: {}\n    rectangles: [[0, 0, 1, 1]]\n",
     2, "non-empty signature"),
    ("rules:\n  - name: r\n    signature: {Modality: US}\n", 2, "blanks nothing"),
    ("rules:\n  - name: r\n    signature: {Modality: US}\n    rectangles: [[0, 0, -1, 5]]\n",
     2, "a rectangle is [x, y, width, height]"),
    ("rules:\n  - name: r\n    signature: {Modality: US}\n    rectangles: [[0, 0, 1.5, 5]]\n",
     2, "a rectangle is"),
    ("rules:\n  - name: r\n    signature: {Modality: US}\n    rectangles: [[0, 0, 1]]\n",
     2, "a rectangle is"),
    ("rules:\n  - name: 'bad name!'\n    signature: {Modality: US}\n"
     "    rectangles: [[0, 0, 1, 1]]\n", 2, "short identifier"),
    ("rules:\n  - {name: r, signature: {Modality: US}, rectangles: [[0, 0, 1, 1]]}\n"
     "  - {name: r, signature: {Modality: CT}, rectangles: [[0, 0, 1, 1]]}\n",
     1, "duplicate rule name(s): r"),
    ("rules:\n  - name: r\n    signature: {Modality: []}\n    rectangles: [[0, 0, 1, 1]]\n",
     3, "needs at least one value"),
    ("rules:\n  - name: r\n    signature: {Modality: US}\n    ultrasound_regions: 1\n",
     2, "ultrasound_regions must be true or false"),
]


@pytest.mark.parametrize("text, line, message", BAD_RULES, ids=[m for _, _, m in BAD_RULES])
def test_bad_rules_file_names_file_and_line(tmp_path: Path, text: str, line: int,
                                            message: str) -> None:
    path = tmp_path / "pixel-rules.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as info:
        load_pixel_policy(path)
    assert f"{path}:{line}:" in str(info.value)
    assert message in str(info.value)


def test_unreadable_rules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unreadable"):
        load_pixel_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"rules: []  # caf\xe9\n")
    with pytest.raises(ConfigError, match="unreadable"):
        load_pixel_policy(bad)


# ------------------------------------------------------------------ optional OCR audit
def test_ocr_unavailable_is_reported_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    from teachfile.reception import ocr

    monkeypatch.setattr(ocr.shutil, "which", lambda name: None)
    assert ocr.ocr_available() is False
    with pytest.raises(ocr.OcrUnavailable):
        ocr.residual_text(_dataset(_image(1, 8, 8, 1, 8, False), "MONOCHROME2"))


@pytest.mark.skipif(not US_FILES, reason="deid-data not installed (pip install deid-data)")
def test_ocr_audit_finds_the_banner_before_cleaning_and_not_after() -> None:
    from teachfile.reception import ocr

    if not ocr.ocr_available():
        pytest.skip("tesseract not installed (Debian package tesseract-ocr)")
    ds = pydicom.dcmread(next(p for p in US_FILES if p.stem == "RGB_IMAGE"))
    identifying = {"ZZZDOWNTIME", "MARY", "00047431395", "120907058", "4/14/2020", "CLINIC"}
    found = " ".join(ocr.residual_text(ds))
    assert sum(t in found for t in identifying) >= 3  # the audit does read the banner
    pixels.apply(ds, assess(ds, load_pixel_policy(DEFAULT_RULES)))
    after = " ".join(ocr.residual_text(ds))
    assert not [t for t in identifying if t in after]
