"""Burned-in identifying text: decide per instance, then blank known regions or refuse.

Why this exists: ultrasound, secondary captures and scanned documents often carry the patient's
name in the pixels, where header de-identification cannot reach. A node must clean such pixels
from a known layout or refuse the instance (fail closed).

Two phases, because de-identification removes attributes a signature needs (Manufacturer...):

* :func:`assess` runs on the ORIGINAL dataset and returns a :class:`PixelPlan` ("none", "clean",
  "refuse"). It never raises for a refusal: the pipeline turns ``action == "refuse"`` into
  ``Refusal("burned-in", plan.reason_code)``.
* :func:`apply` runs on the de-identified dataset (same pixels) and relies only on the image
  pixel module. It decodes any supported syntax, blanks the plan's regions in every frame and
  writes the pixels back as native Explicit VR Little Endian, so that the JPEG 2000 step which
  follows re-encodes them (lossless stays lossless).

Choices worth knowing:

* Blanked samples are stored value 0, whatever the photometric interpretation: the region becomes
  uniform (black for MONOCHROME2/RGB, white for MONOCHROME1, 0 for signed data), which is what
  makes text unreadable and what the tests can check exactly.
* YBR_FULL stays YBR_FULL (converting to RGB is not bit-exact for the pixels that are kept);
  blanked pixels are Y=0, Cb=Cr=half range, i.e. black, rather than a green (0, 0, 0).
* Burned In Annotation becomes "NO" and code 113101 (Clean Pixel Data) is added only by
  :func:`apply`, i.e. only when a rule or the ultrasound regions actually cleaned the pixels.
* The ultrasound option keeps the union of the Sequence of Ultrasound Regions rectangles and
  blanks everything else; regions that cover the whole image clean nothing and do not count.
  It is used only for instances that are likely burned-in or matched by a rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from ..errors import ConfigError, Refusal
from .frames import imagecodecs_frames

#: (x, y, width, height) in pixels, x to the right, y down, origin at the top left pixel.
Rect = tuple[int, int, int, int]

CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
_LINE = "__line__"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_POLICY_KEYS = frozenset({"version", "enabled", "ultrasound_regions", "likely_burned_in", "rules",
                          "ocr_gate"})
_OCR_GATE_KEYS = frozenset({"enabled", "resolves", "max_frames"})
_CRITERION_KEYS = frozenset({"name", "keyword", "match", "contains"})
_RULE_KEYS = frozenset({"name", "signature", "rectangles", "ultrasound_regions"})
_PIXEL_DATA = 0x7FE00010
_DROP_WITH_NATIVE = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (+ Lengths)
_LOSSY_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203",
})
#: imagecodecs decoders used when pydicom has no backend for a syntax (the plugin's runtime).
_FALLBACK_CODECS: Mapping[str, str] = {
    "1.2.840.10008.1.2.4.50": "jpeg8", "1.2.840.10008.1.2.4.51": "jpeg8",
    "1.2.840.10008.1.2.4.57": "ljpeg", "1.2.840.10008.1.2.4.70": "ljpeg",
    "1.2.840.10008.1.2.4.80": "jpegls", "1.2.840.10008.1.2.4.81": "jpegls",
    "1.2.840.10008.1.2.4.90": "jpeg2k", "1.2.840.10008.1.2.4.91": "jpeg2k",
    "1.2.840.10008.1.2.4.201": "htj2k", "1.2.840.10008.1.2.4.202": "htj2k",
    "1.2.840.10008.1.2.4.203": "htj2k",
}


@dataclass(frozen=True)
class Criterion:
    """One "likely burned-in" test: an attribute whose value matches (case-insensitive exact or
    glob) or contains one of the given strings."""

    name: str
    keyword: str
    match: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()

    def matches(self, ds: Dataset) -> bool:
        values = _values(ds, self.keyword)
        if any(_glob(v, p) for v in values for p in self.match):
            return True
        return any(c.casefold() in v.casefold() for v in values for c in self.contains)


@dataclass(frozen=True)
class Rule:
    """A device layout: a signature (keyword -> accepted patterns) and rectangles to blank.

    ``ultrasound_regions`` None inherits the policy's option for instances this rule matches.
    """

    name: str
    signature: tuple[tuple[str, tuple[str, ...]], ...]
    rectangles: tuple[Rect, ...]
    ultrasound_regions: bool | None = None

    def matches(self, ds: Dataset) -> bool:
        return all(any(_glob(v, p) for v in _values(ds, kw) for p in pats)
                   for kw, pats in self.signature)


@dataclass(frozen=True)
class OcrGate:
    """A trusted way in for images judged likely burned-in that no rule cleans (a workstation's
    cleaned Secondary Capture): OCR reads every frame and the instance is stored, unmodified,
    only when it finds no text. ``resolves`` names the likely-burned-in criteria it may
    overrule: an instance flagged by any other criterion (``BurnedInAnnotation YES``, an
    ultrasound) stays refused. More than ``max_frames`` frames: refused (OCR per frame is slow).
    """

    enabled: bool = False
    resolves: tuple[str, ...] = ()
    max_frames: int = 8

    def applies(self, plan: PixelPlan) -> bool:
        return (self.enabled and plan.action == "refuse" and bool(plan.criteria)
                and plan.reason_code.endswith(";no-rule")
                and set(plan.criteria) <= set(self.resolves))


@dataclass(frozen=True)
class PixelPolicy:
    """The node's burned-in text policy (``orthanc-config/pixel-rules.yaml``)."""

    enabled: bool = True
    ultrasound_regions: bool = True
    likely_burned_in: tuple[Criterion, ...] = ()
    rules: tuple[Rule, ...] = ()
    ocr_gate: OcrGate = OcrGate()


@dataclass(frozen=True)
class PixelPlan:
    """What to do with the pixels of one instance, decided before de-identification.

    ``regions`` are blanked; when ``keep`` is not empty everything outside the union of ``keep``
    is blanked too (ultrasound regions). Both are clipped to ``rows`` x ``columns``.
    ``reason_code`` is PHI-free: it names only configured criteria and rules.
    """

    action: str  # "none" | "clean" | "refuse"
    rule: str | None = None
    regions: tuple[Rect, ...] = ()
    keep: tuple[Rect, ...] = ()
    rows: int = 0
    columns: int = 0
    criteria: tuple[str, ...] = ()
    reason_code: str = ""


# --------------------------------------------------------------------------- loading the policy


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records each mapping's 1-based line under ``__line__``."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_pixel_policy(path: Path) -> PixelPolicy:
    """Read and validate a pixel policy; every problem is a ConfigError naming file:line."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: pixel rules unreadable ({type(exc).__name__})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise ConfigError(f"{path}:{line}: YAML syntax: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    return policy_from_mapping(data, str(path))


def policy_from_mapping(data: Any, where: str = "<pixel rules>") -> PixelPolicy:
    """Validate an already parsed mapping (lines are known only if it came from the loader)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}:1: pixel rules must be a mapping")
    top = _Where(where, data)
    _check_keys(data, _POLICY_KEYS, top)
    if data.get("version", 1) != 1:
        raise ConfigError(f"{top}: unsupported pixel rules version (expected 1)")
    enabled = _bool(data, "enabled", True, top)
    ultrasound = _bool(data, "ultrasound_regions", True, top)
    criteria = tuple(_criterion(c, top) for c in _list(data, "likely_burned_in", top))
    rules = tuple(_rule(r, top) for r in _list(data, "rules", top))
    named = (("criterion", [c.name for c in criteria]), ("rule", [r.name for r in rules]))
    for kind, names in named:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{top}: duplicate {kind} name(s): {', '.join(dup)}")
    gate = _ocr_gate(data.get("ocr_gate"), {c.name for c in criteria}, top)
    return PixelPolicy(enabled, ultrasound, criteria, rules, gate)


def _ocr_gate(g: Any, criteria: set[str], parent: _Where) -> OcrGate:
    if g is None:
        return OcrGate()
    where = _Where(parent.file, g, parent)
    if not isinstance(g, dict):
        raise ConfigError(f"{where}: ocr_gate must be a mapping")
    _check_keys(g, _OCR_GATE_KEYS, where)
    enabled = _bool(g, "enabled", False, where)
    resolves = tuple(str(n) for n in _list(g, "resolves", where))
    unknown = sorted(set(resolves) - criteria)
    if unknown:
        raise ConfigError(f"{where}: ocr_gate resolves unknown criteria: {', '.join(unknown)}")
    if enabled and not resolves:
        raise ConfigError(f"{where}: ocr_gate is enabled but resolves no criterion")
    frames = g.get("max_frames", 8)
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 1000:
        raise ConfigError(f"{where}: ocr_gate max_frames must be a whole number, 1 to 1000")
    return OcrGate(enabled, resolves, frames)


class _Where:
    """A file:line label for error messages (the line of the nearest mapping)."""

    __slots__ = ("file", "line")

    def __init__(self, file: str, node: Any, parent: _Where | None = None) -> None:
        line = node.get(_LINE) if isinstance(node, dict) else None
        self.file = file
        self.line: int = line or (parent.line if parent else 1)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def _check_keys(m: dict[Any, Any], allowed: frozenset[str], where: _Where) -> None:
    unknown = sorted(str(k) for k in m if k != _LINE and k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(unknown)}")


def _bool(m: dict[Any, Any], key: str, default: bool, where: _Where) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _list(m: dict[Any, Any], key: str, where: _Where) -> list[Any]:
    value = m.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list")
    return value


def _name(m: dict[Any, Any], where: _Where) -> str:
    name = m.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name must be a short identifier (letters, digits, _.+-)")
    return name


def _keyword(kw: Any, where: _Where) -> str:
    tag = tag_for_keyword(kw) if isinstance(kw, str) else None
    if tag is None:
        raise ConfigError(f"{where}: {kw!s} is not a DICOM keyword")
    if dictionary_VR(tag) == "SQ":
        raise ConfigError(f"{where}: {kw} is a sequence and cannot be matched")
    return str(kw)


def _patterns(value: Any, where: _Where, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float) or item == "":
            hint = " (quote YES/NO/ON/OFF in YAML)" if isinstance(item, bool) else ""
            raise ConfigError(f"{where}: {what} values must be non-empty strings or numbers{hint}")
        out.append(str(item).strip())
    if not out:
        raise ConfigError(f"{where}: {what} needs at least one value")
    return tuple(out)


def _criterion(c: Any, parent: _Where) -> Criterion:
    where = _Where(parent.file, c, parent)
    if not isinstance(c, dict):
        raise ConfigError(f"{where}: each likely_burned_in entry must be a mapping")
    _check_keys(c, _CRITERION_KEYS, where)
    name = _name(c, where)
    kw = _keyword(c.get("keyword"), where)
    if ("match" in c) == ("contains" in c):
        raise ConfigError(f"{where}: criterion {name} needs exactly one of match / contains")
    if "match" in c:
        return Criterion(name, kw, match=_patterns(c["match"], where, "match"))
    return Criterion(name, kw, contains=_patterns(c["contains"], where, "contains"))


def _rule(r: Any, parent: _Where) -> Rule:
    where = _Where(parent.file, r, parent)
    if not isinstance(r, dict):
        raise ConfigError(f"{where}: each rule must be a mapping")
    _check_keys(r, _RULE_KEYS, where)
    name = _name(r, where)
    sig = r.get("signature")
    if not isinstance(sig, dict) or not [k for k in sig if k != _LINE]:
        raise ConfigError(f"{where}: rule {name} needs a non-empty signature mapping")
    swhere = _Where(parent.file, sig, where)
    signature = tuple((_keyword(k, swhere), _patterns(v, swhere, str(k)))
                      for k, v in sig.items() if k != _LINE)
    us = r.get("ultrasound_regions")
    if us is not None and not isinstance(us, bool):
        raise ConfigError(f"{where}: rule {name}: ultrasound_regions must be true or false")
    rects = r.get("rectangles") or []
    if not isinstance(rects, list):
        raise ConfigError(f"{where}: rule {name}: rectangles must be a list of [x, y, w, h]")
    rectangles = tuple(_rect(x, where, name) for x in rects)
    if not rectangles and us is not True:
        raise ConfigError(f"{where}: rule {name} blanks nothing (no rectangles, no ultrasound)")
    return Rule(name, signature, rectangles, us)


def _rect(value: Any, where: _Where, rule: str) -> Rect:
    ok = (isinstance(value, list) and len(value) == 4
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not ok or value[0] < 0 or value[1] < 0 or value[2] <= 0 or value[3] <= 0:
        raise ConfigError(f"{where}: rule {rule}: a rectangle is [x, y, width, height] with "
                          "x, y >= 0 and width, height > 0 (whole pixels)")
    return (value[0], value[1], value[2], value[3])


# --------------------------------------------------------------------------- assessing


def _values(ds: Dataset, keyword: str) -> list[str]:
    """The attribute's values as stripped strings (each value and, if several, the whole)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        parts = [str(v).strip() for v in value]
        return [*parts, "\\".join(parts)]
    return [str(value).strip()]


def _glob(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


def assess(ds_original: Dataset, policy: PixelPolicy) -> PixelPlan:
    """Decide on the original dataset whether its pixels are cleaned, refused or left alone."""
    if not policy.enabled:
        return PixelPlan("none", reason_code="disabled")
    criteria = tuple(c.name for c in policy.likely_burned_in if c.matches(ds_original))
    likely = "likely:" + "+".join(criteria)
    try:
        rows, cols = int(ds_original.Rows), int(ds_original.Columns)
    except (AttributeError, TypeError, ValueError):
        rows = cols = 0
    if _PIXEL_DATA not in ds_original or rows <= 0 or cols <= 0:
        # No integer pixels to clean: a flagged instance (e.g. an encapsulated document with
        # Burned In Annotation YES) cannot be made safe here.
        if criteria:
            return PixelPlan("refuse", criteria=criteria, reason_code=f"{likely};no-pixel-data")
        return PixelPlan("none", reason_code="no-pixel-data")
    rule = next((r for r in policy.rules if r.matches(ds_original)), None)
    use_us = policy.ultrasound_regions
    if rule is not None and rule.ultrasound_regions is not None:
        use_us = rule.ultrasound_regions
    regions = tuple(c for c in (_clip(r, rows, cols) for r in rule.rectangles) if c) if rule \
        else ()
    # The policy-wide ultrasound option only resolves flagged instances (a DX carrying a stray
    # region sequence is not cropped); a matched rule applies it by its own (inherited) choice.
    keep = _ultrasound_keep(ds_original, rows, cols) if use_us and (criteria or rule) else ()
    if regions or keep:
        how = "+".join(x for x in (rule.name if rule and regions else "",
                                   "ultrasound-regions" if keep else "") if x)
        return PixelPlan("clean", rule.name if rule else None, regions, keep, rows, cols,
                         criteria, f"clean:{how}")
    if criteria:
        why = "rule-outside-image" if rule else "no-rule"
        return PixelPlan("refuse", rule.name if rule else None, criteria=criteria,
                         rows=rows, columns=cols, reason_code=f"{likely};{why}")
    return PixelPlan("none", rows=rows, columns=cols, reason_code="not-likely")


def _clip(rect: Rect, rows: int, cols: int) -> Rect | None:
    x, y, w, h = rect
    x1, y1 = min(x + w, cols), min(y + h, rows)
    if x >= cols or y >= rows or x1 <= x or y1 <= y:
        return None
    return (x, y, x1 - x, y1 - y)


def _ultrasound_keep(ds: Dataset, rows: int, cols: int) -> tuple[Rect, ...]:
    """The ultrasound regions to keep, or () when they are absent, malformed or keep it all."""
    seq = ds.get("SequenceOfUltrasoundRegions")
    if not seq:
        return ()
    keep = []
    for item in seq:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            return ()  # one unreadable region: the layout is not trusted at all
        if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
            return ()
        clipped = _clip((x0, y0, x1 - x0 + 1, y1 - y0 + 1), rows, cols)  # Max X1/Y1 inclusive
        if clipped:
            keep.append(clipped)
    if not keep or _mask(rows, cols, (), tuple(keep)).sum() == 0:
        return ()  # nothing would be blanked: the option does not clean this instance
    return tuple(keep)


def _mask(rows: int, cols: int, regions: Iterable[Rect], keep: tuple[Rect, ...]) -> np.ndarray:
    """True where a pixel is blanked."""
    mask = np.zeros((rows, cols), dtype=bool)
    for x, y, w, h in regions:
        mask[y:y + h, x:x + w] = True
    if keep:
        kept = np.zeros((rows, cols), dtype=bool)
        for x, y, w, h in keep:
            kept[y:y + h, x:x + w] = True
        mask |= ~kept
    return mask


# --------------------------------------------------------------------------- applying


def apply(ds: Dataset, plan: PixelPlan) -> Dataset:
    """Blank the plan's regions in every frame of ``ds`` (modified in place and returned).

    "none" returns ``ds`` untouched; "refuse" raises Refusal("burned-in") as a safety net.
    Decoding or geometry problems raise Refusal("pixel-error") with a PHI-free detail.
    """
    if plan.action == "none":
        return ds
    if plan.action != "clean":
        raise Refusal("burned-in", plan.reason_code)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise Refusal("pixel-error", "geometry") from None
    if (rows, cols) != (plan.rows, plan.columns):
        raise Refusal("pixel-error", "geometry")
    frames, photometric = decode_frames(ds)
    if frames.shape[1:3] != (rows, cols):
        raise Refusal("pixel-error", "geometry")
    mask = _mask(rows, cols, plan.regions, plan.keep)
    if not mask.any():
        raise Refusal("pixel-error", "empty-mask")
    frames[:, mask] = _blank_value(ds, photometric, frames.dtype)
    _write_native(ds, frames, photometric)
    ds.BurnedInAnnotation = "NO"
    _add_method_code(ds)
    return ds


def decode_frames(ds: Dataset) -> tuple[np.ndarray, str]:
    """All frames as a new (frames, rows, cols[, samples]) interleaved array, and the
    photometric interpretation of those values (shared with the OCR audit).

    Raises Refusal("pixel-error") with a PHI-free detail when the pixels cannot be decoded.
    """
    try:
        return _decode(ds)
    except Refusal:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure
        raise Refusal("pixel-error", f"decode: {type(exc).__name__}") from None


def _decode(ds: Dataset) -> tuple[np.ndarray, str]:
    from pydicom.pixels import get_decoder

    if _PIXEL_DATA not in ds:
        raise Refusal("pixel-error", "no-pixel-data")
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    alloc = int(ds.BitsAllocated)
    if alloc not in (8, 16, 32):
        raise Refusal("pixel-error", f"bits-allocated-{alloc}")
    photometric = str(ds.PhotometricInterpretation).strip()
    try:
        decoder = get_decoder(UID(ts))
    except NotImplementedError:
        raise Refusal("pixel-error", f"unsupported-syntax {ts}") from None
    if decoder.is_available:
        arr, info = decoder.as_array(ds, raw=True)
        photometric = str(info.get("photometric_interpretation", photometric))
    elif ts in _FALLBACK_CODECS:
        arr, photometric = _decode_with_imagecodecs(ds, ts, photometric)
    else:
        raise Refusal("pixel-error", f"codec-unavailable {ts}")
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    if nframes == 1 and arr.ndim == (2 if spp == 1 else 3):
        arr = arr[np.newaxis]
    if arr.shape[0] != nframes or arr.ndim != (3 if spp == 1 else 4):
        raise Refusal("pixel-error", "frame-shape")
    if photometric == "YBR_FULL_422":
        photometric = "YBR_FULL"  # decoders return full-resolution, interleaved YCbCr
    supported = {1: ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"), 3: ("RGB", "YBR_FULL")}
    if photometric not in supported.get(spp, ()):
        raise Refusal("pixel-error", f"photometric {photometric}")
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True), photometric


def _decode_with_imagecodecs(ds: Dataset, ts: str, photometric: str) -> tuple[np.ndarray, str]:
    """For runtimes without pydicom's JPEG plugins. Colour codestreams come out as RGB
    (libjpeg's YCbCr conversion, J2K's inverse MCT), so the photometric becomes RGB."""
    import imagecodecs

    name = _FALLBACK_CODECS[ts]
    if not getattr(imagecodecs, name.upper()).available:
        raise Refusal("pixel-error", f"codec-unavailable {ts}")
    out = imagecodecs_frames(ds, name)
    if int(ds.SamplesPerPixel) == 3 and (name == "jpeg8" or photometric not in ("RGB", "YBR_FULL")):
        photometric = "RGB"
    return np.stack(out), photometric


def _blank_value(ds: Dataset, photometric: str, dtype: np.dtype) -> Any:
    if photometric == "YBR_FULL":
        half = 1 << (int(ds.BitsStored) - 1)
        return np.array([0, half, half], dtype=dtype)
    return 0


def _write_native(ds: Dataset, frames: np.ndarray, photometric: str) -> None:
    meta = getattr(ds, "file_meta", None)
    old_ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    alloc = int(ds.BitsAllocated)
    kind = "i" if int(ds.PixelRepresentation) else "u"
    data = frames.astype(f"<{kind}{alloc // 8}", copy=False).tobytes()
    for tag in _DROP_WITH_NATIVE:
        if tag in ds:
            del ds[tag]
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    elem = ds["PixelData"]
    elem.VR = "OB" if alloc == 8 else "OW"
    elem.is_undefined_length = False
    ds.PhotometricInterpretation = photometric
    if int(ds.SamplesPerPixel) > 1:
        ds.PlanarConfiguration = 0
    if old_ts in _LOSSY_SYNTAXES and not str(ds.get("LossyImageCompression", "")).strip():
        ds.LossyImageCompression = "01"  # once lossy, always flagged (PS3.3 C.7.6.1.1.5)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _add_method_code(ds: Dataset) -> None:
    if "DeidentificationMethodCodeSequence" not in ds:
        ds.DeidentificationMethodCodeSequence = Sequence()
    seq = ds.DeidentificationMethodCodeSequence
    if any(str(i.get("CodeValue", "")) == CLEAN_PIXEL_CODE[0] for i in seq):
        return
    item = Dataset()
    item.CodeValue = CLEAN_PIXEL_CODE[0]
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = CLEAN_PIXEL_CODE[1]
    seq.append(item)
