"""JPEG 2000 transcoding of de-identified instances, before they are stored.

Why this exists: teaching cases should be small on disk and fast over the network, so every image
is stored as JPEG 2000 (lossless by default, per-modality lossy only on explicit request). It runs
after de-identification and works on a pydicom ``Dataset`` only; it never imports ``orthanc``.

Design choices worth knowing:

* Lossless JPEG 2000 is encoded by the system OpenJPEG through :mod:`.openjpeg` with
  the code-block BYPASS style (``transcoding.bypass``, on by default: ~35 % faster to encode and
  ~40 % faster to decode for ~1 % larger files); without that library, and for lossy and HTJ2K,
  imagecodecs (OpenJPEG / OpenJPH) encodes. Both release the GIL, so reception threads encode at
  once; pylibjpeg-openjpeg holds the GIL and is not thread-safe.
* Lossless output is proven, not assumed: every codestream's header is checked against the image
  (:mod:`.codestream`), and the codestreams are decoded again and compared with the source pixels
  for the first instance of every pixel format of a series plus a random sample
  (``verification: sampled``, the default; ``all`` decodes everything), see :class:`Verifier`.
  A mismatch keeps the instance uncompressed (no silent loss) and distrusts that format.
* Frames of a multi-frame instance are encoded and decoded in parallel (one frame per worker
  thread); a single frame is split by OpenJPEG's own threads. Both release the GIL, which
  matters because Orthanc runs the received-instance callback one instance at a time.
* An instance is never re-encoded if it is already lossy; instances the codec cannot represent are
  kept in their syntax with a short reason code. Only when no safe fallback exists does it raise
  :class:`~teachfile.errors.Refusal` ``"transcode-error"``.
* imagecodecs' OpenJPEG binding has no rate control, only a PSNR target, so a lossy ratio is reached
  by bisection on PSNR (on one sample frame). If the lossless codestream already reaches the
  configured ratio, the lossless one is stored instead: same size target, no loss.
* YBR_FULL colour is encoded as is (no MCT, Photometric stays YBR_FULL, allowed by PS3.5 8.2.4),
  because converting it to RGB first is not bit-exact. RGB becomes YBR_RCT (lossless) or YBR_ICT
  (lossy). PALETTE COLOR is only ever stored lossless (lossy indices would be meaningless).
* HTJ2K (opt-in) is used only when Bits Stored equals Bits Allocated, because the OpenJPH binding
  cannot write a codestream precision below the container size; other images fall back to classic
  JPEG 2000 so that codestream precision always equals Bits Stored.
"""

from __future__ import annotations

import copy
import functools
import os
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..errors import ConfigError, Refusal
from . import codestream, openjpeg
from .frames import imagecodecs_frames

_T = TypeVar("_T")
_R = TypeVar("_R")

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K_LOSSY = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSY = "1.2.840.10008.1.2.4.203"

_P = "1.2.840.10008.1.2.4."
_NATIVE = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
     DeflatedExplicitVRLittleEndian}
)
#: Lossless compressed inputs that are decoded and re-encoded.
_JPEG_LOSSLESS = frozenset({_P + "57", _P + "70"})
_JPEGLS_LOSSLESS = _P + "80"
_RLE = "1.2.840.10008.1.2.5"
_DECODABLE = _JPEG_LOSSLESS | {_JPEGLS_LOSSLESS, _RLE}
_J2K_LOSSLESS_IN = frozenset({J2K_LOSSLESS, HTJ2K_LOSSLESS, _P + "202"})
#: Syntaxes that are (or may be) lossy: never re-encoded. .91 may be reversible, but we cannot
#: know without parsing the codestream, so it is treated as lossy (conservative).
_LOSSY = frozenset(
    [_P + s for s in ("50", "51", "52", "53", "54", "55", "56", "59", "60", "61", "62", "63",
                      "64", "81", "91", "93", "111", "112", "203")]
    + [_P + str(n) for n in range(100, 109)]
)

_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_FLOAT_PIXELS = (Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))
_POLICY_KEYS = frozenset({"mode", "lossy", "htj2k", "verify", "threads", "bypass",
                          "verification", "sample_rate"})
_VERIFICATION = ("all", "sampled", "off")


@dataclass(frozen=True)
class TranscodePolicy:
    """The ``transcoding:`` section of a profile, validated once at start-up.

    ``lossy`` is a sorted tuple of (modality, ratio) pairs so that the policy stays immutable and
    hashable; use :meth:`lossy_ratio`. ``verify`` is ``None`` for "all frames", else a sample size.
    ``verification`` says which lossless instances get the decoding check (see :class:`Verifier`),
    ``sample_rate`` the chance that an instance of an already proven format is checked anyway.
    """

    mode: str = "lossless"
    lossy: tuple[tuple[str, float], ...] = ()
    htj2k: bool = False
    verify: int | None = None
    threads: int = 1
    bypass: bool = True
    verification: str = "sampled"
    sample_rate: float = 0.05

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> TranscodePolicy:
        """Build a policy; any typo or bad value is a ConfigError so a node never starts
        with a transcoding setting it silently ignores."""
        if m is None:
            m = {}
        if not isinstance(m, Mapping):
            raise ConfigError("transcoding: must be a mapping")
        unknown = sorted(str(k) for k in m if k not in _POLICY_KEYS)
        if unknown:
            raise ConfigError(f"transcoding: unknown key(s) {', '.join(unknown)}")
        mode = m.get("mode", "lossless")
        if mode not in ("lossless", "off"):
            raise ConfigError("transcoding.mode: must be 'lossless' or 'off' (lossy is per "
                              "modality, under transcoding.lossy)")
        lossy = _parse_lossy(m.get("lossy"))
        htj2k = m.get("htj2k", False)
        if not isinstance(htj2k, bool):
            raise ConfigError("transcoding.htj2k: must be true or false")
        verify_raw = m.get("verify", "all")
        if verify_raw == "all":
            verify = None
        elif isinstance(verify_raw, int) and not isinstance(verify_raw, bool) and verify_raw >= 1:
            verify = verify_raw
        else:
            raise ConfigError("transcoding.verify: must be 'all' or a positive number of frames")
        threads = m.get("threads", os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise ConfigError("transcoding.threads: must be an integer between 1 and 256")
        bypass = m.get("bypass", True)
        if not isinstance(bypass, bool):
            raise ConfigError("transcoding.bypass: must be true or false")
        verification = m.get("verification", "sampled")
        if verification not in _VERIFICATION:
            raise ConfigError("transcoding.verification: must be 'all', 'sampled' or 'off'")
        rate = m.get("sample_rate", 0.05)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ConfigError("transcoding.sample_rate: must be a number from 0 to 1")
        return cls(mode=mode, lossy=lossy, htj2k=htj2k, verify=verify, threads=threads,
                   bypass=bypass, verification=verification, sample_rate=float(rate))

    def lossy_ratio(self, modality: str | None) -> float | None:
        """The configured lossy ratio for a modality, or None for lossless."""
        if not modality:
            return None
        key = str(modality).strip().upper()
        for mod, ratio in self.lossy:
            if mod == key:
                return ratio
        return None


def _parse_lossy(raw: Any) -> tuple[tuple[str, float], ...]:
    if raw is None or raw is False:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError("transcoding.lossy: must map modality codes to compression ratios")
    out: dict[str, float] = {}
    for mod, ratio in raw.items():
        key = str(mod).strip().upper()
        if not key.isalnum() or not 1 <= len(key) <= 16:
            raise ConfigError("transcoding.lossy: modality keys must be DICOM modality codes")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise ConfigError(f"transcoding.lossy.{key}: ratio must be a number")
        if not 1.0 < float(ratio) <= 200.0:
            raise ConfigError(f"transcoding.lossy.{key}: ratio must be > 1 and <= 200")
        if key in out:
            raise ConfigError(f"transcoding.lossy: modality {key} given twice")
        out[key] = float(ratio)
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class Outcome:
    """What happened to one instance. ``reason`` is a short PHI-free code; ``ratio`` is the
    achieved uncompressed/compressed byte ratio when transcoded."""

    ds: Dataset
    status: str
    reason: str
    ratio: float | None
    transfer_syntax: str | None


@dataclass(frozen=True)
class _Target:
    """The encoding chosen for one instance."""

    uid: str
    lossy_ratio: float | None
    htj2k: bool
    photometric: str
    mct: bool
    #: Code-block BYPASS for lossless Part 1 (needs the system OpenJPEG, see .openjpeg).
    bypass: bool = False


@functools.cache
def codec_status() -> dict[str, bool]:
    """Which codecs this process can use (for health checks and start-up logs); feature-detected
    once, since the installed imagecodecs cannot change while the process runs. Do not mutate."""
    out = {"jpeg2k": False, "htj2k": False, "ljpeg": False, "jpegls": False}
    try:
        import imagecodecs
    except ImportError:
        return out
    for name, attr in (("jpeg2k", "JPEG2K"), ("htj2k", "HTJ2K"), ("ljpeg", "LJPEG"),
                       ("jpegls", "JPEGLS")):
        codec = getattr(imagecodecs, attr, None)
        out[name] = bool(getattr(codec, "available", False)) and hasattr(
            imagecodecs, f"{name}_decode")
    out["htj2k"] = out["htj2k"] and hasattr(imagecodecs, "htj2k_encode")
    return out


def lossless_encoder(policy: TranscodePolicy) -> str:
    """Which library writes lossless JPEG 2000 on this node, for /teachfile/status: an operator
    comparing nodes (or a missing libopenjp2 in an image) should not have to guess."""
    if policy.htj2k and codec_status()["htj2k"]:
        return "HTJ2K via imagecodecs (classic JPEG 2000 when Bits Stored < Bits Allocated)"
    if openjpeg.available():
        style = ", code-block BYPASS" if policy.bypass else ""
        return f"OpenJPEG {openjpeg.version()} (system library{style})"
    if codec_status()["jpeg2k"]:
        import imagecodecs

        return f"imagecodecs {imagecodecs.jpeg2k_version()}"
    return "none"


@dataclass(frozen=True)
class Encoded:
    """The pixel half of a transcoding: codestreams made from the pixel module alone, waiting
    for :func:`transcode` to check them against the de-identified instance and build it."""

    ts: str
    frames: list[np.ndarray]
    streams: list[bytes]
    target: _Target
    note: str


#: What :func:`encode_pixels` reads besides group 0028 and 7FE0 (pixel data and its tables).
_VIEW_TAGS = (Tag(0x0008, 0x0016), Tag(0x0008, 0x0060))
#: Group 0028 attributes that de-identification adds, removes or replaces (PS3.15 Table E.1-1:
#: Image Presentation Comments, the palette UIDs; Longitudinal Temporal Information Modified
#: when dates shift) and that no encode reads: outside the view, so they never force a re-encode.
_NOT_READ = frozenset({0x00280303, 0x00281199, 0x00281214, 0x00284000})


def _view_tags(ds: Dataset) -> set[int]:
    return {t for t in ds._dict
            if (t >> 16 in (0x0028, 0x7FE0) and t not in _NOT_READ) or t in _VIEW_TAGS}


def pixel_view(ds: Dataset) -> Dataset:
    """A dataset with only what :func:`encode_pixels` reads (pixel module, pixel data, SOP
    Class, Modality, transfer syntax), sharing their values: the encode can then run on another
    thread while ``ds`` itself is de-identified. :func:`same_pixels` tells afterwards whether
    the de-identified instance still has exactly these values."""
    view = Dataset()
    view.file_meta = FileMetaDataset()
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        view.file_meta.TransferSyntaxUID = meta.TransferSyntaxUID
    for tag in sorted(_view_tags(ds)):
        view[tag] = copy.copy(ds[tag])  # converted here, on the caller's thread
    return view


def same_pixels(ds: Dataset, view: Dataset) -> bool:
    """True when every value :func:`encode_pixels` read from ``view`` is still in ``ds``, and
    ``ds`` has nothing more of the kind: then the codestreams made from ``view`` are ``ds``'s."""
    meta = getattr(ds, "file_meta", None)
    if str(meta.get("TransferSyntaxUID", "") if meta is not None else "") != \
            str(view.file_meta.get("TransferSyntaxUID", "")):
        return False
    tags = _view_tags(ds)
    if tags != set(view._dict):
        return False
    for tag in tags:
        a, b = ds[tag], view[tag]
        if a.VR != b.VR or not (a.value is b.value or a.value == b.value):
            return False
    return True


#: Per thread: who waits to hear that :func:`encode_pixels` is about to let go of the GIL.
_busy = threading.local()


def _going_busy() -> None:
    """This thread is about to spend a long time in C without the GIL: tell whoever waits
    for that (``on_busy`` of :func:`encode_pixels`), once."""
    hook = getattr(_busy, "hook", None)
    if hook is not None:
        _busy.hook = None
        hook()


def encode_pixels(ds: Dataset, policy: TranscodePolicy,
                  on_busy: Callable[[], None] | None = None) -> Outcome | Encoded:
    """The first half of :func:`transcode`: decide, decode the source, encode. It reads only
    what :func:`pixel_view` keeps, and never the verifier, whose keys hold the de-identified
    Series Instance UID. Returns the codestreams, or why the instance keeps its syntax.

    ``on_busy`` is called once, on this thread, just before the long GIL-free part (the
    encode in C, or waiting for the frame workers): a caller on another thread can wait for
    it, so that its own Python does not hold back this thread's (see the pipeline).
    """
    _busy.hook = on_busy
    try:
        return _encode_pixels(ds, policy)
    finally:
        _busy.hook = None


def _encode_pixels(ds: Dataset, policy: TranscodePolicy) -> Outcome | Encoded:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""

    def kept(reason: str) -> Outcome:
        return Outcome(ds, "kept", reason, None, ts or None)

    if policy.mode == "off":
        return kept("policy-off")
    if _PIXEL_DATA not in ds:
        return kept("unsupported-pixels" if any(t in ds for t in _FLOAT_PIXELS)
                    else "no-pixel-data")
    if str(ds.get("LossyImageCompression", "")).strip() == "01" or ts in _LOSSY:
        return kept("already-lossy")
    if not ts:
        return kept("unknown-syntax")
    ratio_target = policy.lossy_ratio(ds.get("Modality"))
    if ts in _J2K_LOSSLESS_IN and ratio_target is None:
        return kept("already-j2k")
    if ts not in _NATIVE and ts not in _DECODABLE and ts not in _J2K_LOSSLESS_IN:
        return kept("unsupported-syntax")
    if not codec_status()["jpeg2k"]:
        return kept("codec-unavailable")
    why = _unsupported_pixels(ds, ts)
    if why:
        return kept(why)
    target = _choose_target(ds, policy, ratio_target)

    try:
        frames = _frames_of(_decode_source(ds, ts), ds)
    except _CodecMissing:
        return kept("codec-unavailable")
    except Exception:  # any decoder failure means "cannot transcode safely"
        return kept("decode-error")

    try:
        streams, target, note = _encode_all(frames, ds, policy, target)
    except Exception:  # encoder refused this image: keep the lossless input
        return kept("encode-error")
    return Encoded(ts, frames, streams, target, note)


def transcode(
    ds: Dataset, policy: TranscodePolicy, new_uid: Callable[[str], str],
    verifier: Verifier | None = None, consume: bool = False,
    encoded: Outcome | Encoded | None = None,
) -> Outcome:
    """Transcode one de-identified instance to JPEG 2000 according to ``policy``.

    The input dataset is never modified; a transcoded instance is a new Dataset. Ordinary
    "cannot represent" cases return status ``"kept"`` with a reason instead of raising.
    ``verifier`` remembers which pixel formats were proven lossless (the reception keeps one
    for the life of the node); without one every format is new, so everything is decoded.
    ``consume=True`` lets a transcoded result reuse ``ds`` itself instead of a copy (the
    reception pipeline no longer needs its input; the copy costs ~10 % of a CT slice's CPU).
    ``encoded`` is :func:`encode_pixels` already run on this instance's pixels (on a
    :func:`pixel_view` the caller checked with :func:`same_pixels`); None runs it here.
    """
    stage = encoded if encoded is not None else encode_pixels(ds, policy)
    if isinstance(stage, Outcome):
        return replace(stage, ds=ds)  # kept: said of the view, true of the instance
    ts, frames, streams, target, note = (stage.ts, stage.frames, stage.streams, stage.target,
                                         stage.note)

    if verifier is None:
        verifier = Verifier(policy)
    key = _format_key(ds, ts, target)
    check = verifier.plan(key) if target.lossy_ratio is None else "lossy"
    if not _headers_match(streams, ds, target) or (
            check and not _verify(streams, frames, target, policy)):
        verifier.failed(key)
        if ts in _NATIVE:
            return Outcome(ds, "kept", "verify-failed", None, ts)
        return Outcome(_as_native(ds, frames), "kept", "verify-failed", None,
                       ExplicitVRLittleEndian)

    verifier.passed(key, check)
    # Frames are in their Bits Allocated container, so nbytes is the uncompressed size.
    ratio = sum(f.nbytes for f in frames) / max(1, sum(len(s) for s in streams))
    try:
        # pydicom will not write a dataset read as big endian in another byte order.
        out = _build_output(ds, streams, target, ratio, new_uid,
                            consume and ts != ExplicitVRBigEndian)
    except Refusal:
        raise
    except Exception as exc:
        raise Refusal("transcode-error", type(exc).__name__) from None
    reason = "lossy" if target.lossy_ratio is not None else (note or "lossless")
    return Outcome(out, "transcoded", reason, round(ratio, 3), target.uid)


class Verifier:
    """Decides which lossless results are decoded again and compared with the source pixels.

    Why not every one: the decoding check costs about as much CPU as the encode saved by BYPASS
    (a 512x512 CT slice: ~17 ms of ~45 ms), and on reception it sits inside Orthanc's plugin
    lock, where it bounds the whole node. What could make a lossless encode inexact is
    systematic, not random: a precision, sign, colour-transform or layout mistake for a kind of
    image, which shows on the first instance of that kind. So, in ``sampled`` mode:

    * the first instance of every pixel format in a series (series, size, samples, bits
      allocated and stored, sign, photometric, planar configuration, source transfer syntax,
      target syntax and options, single- or multi-frame) is fully decoded and compared before
      that format is trusted;
    * every other instance is decoded with probability ``sample_rate`` (default 5 %, drawn from
      :mod:`secrets`, so a sender cannot predict which);
    * a format that ever fails is distrusted for the life of the process: every later instance
      of it is decoded (and a failing instance is kept uncompressed, as in ``all`` mode);
    * every codestream, decoded or not, must pass :func:`codestream.matches` (header = image,
      reversible wavelet, complete stream).

    ``all`` decodes every lossless result, ``off`` only checks headers. Lossy results are
    always decoded (their geometry is checked). The state is bounded (LRU) and in memory only:
    after a restart every format is proven again. Keys hold the de-identified Series Instance
    UID only.
    """

    def __init__(self, policy: TranscodePolicy, capacity: int = 4096,
                 draw: Callable[[], float] | None = None) -> None:
        self.mode = policy.verification
        self.rate = policy.sample_rate
        self.capacity = capacity
        self._draw = draw or (lambda: secrets.randbelow(1 << 30) / float(1 << 30))
        self._proven: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self._distrusted: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self._lock = threading.Lock()
        #: How many instances were checked for which reason ("first", "sample", "distrusted",
        #: "all", "lossy", "header-only") and how many failed ("failed"), for status pages.
        self.counts: Counter[str] = Counter()

    def plan(self, key: tuple[object, ...]) -> str:
        """Why this instance is decoded, or "" when only its headers are checked."""
        with self._lock:
            if self.mode == "all":
                return "all"
            if self.mode == "off":
                return ""
            if key in self._distrusted:
                return "distrusted"
            if key not in self._proven:
                return "first"
            self._proven.move_to_end(key)
        return "sample" if self.rate > 0 and self._draw() < self.rate else ""

    def passed(self, key: tuple[object, ...], check: str) -> None:
        with self._lock:
            self.counts[check or "header-only"] += 1
            if check == "first":
                self._proven[key] = None
                while len(self._proven) > self.capacity:
                    self._proven.popitem(last=False)

    def status(self) -> dict[str, object]:
        """For /teachfile/status: the mode and how many results were checked which way."""
        with self._lock:
            return {"mode": self.mode, "sample_rate": self.rate, "checked": dict(self.counts),
                    "proven_formats": len(self._proven),
                    "distrusted_formats": len(self._distrusted)}

    def failed(self, key: tuple[object, ...]) -> None:
        with self._lock:
            self.counts["failed"] += 1
            self._proven.pop(key, None)
            self._distrusted[key] = None
            while len(self._distrusted) > self.capacity:
                self._distrusted.popitem(last=False)


def _format_key(ds: Dataset, ts: str, target: _Target) -> tuple[object, ...]:
    return (str(ds.get("SeriesInstanceUID", "")), int(ds.Rows), int(ds.Columns),
            int(ds.SamplesPerPixel), int(ds.BitsAllocated), int(ds.BitsStored),
            int(ds.PixelRepresentation), str(ds.PhotometricInterpretation).strip(),
            int(ds.get("PlanarConfiguration", 0) or 0), ts, target,
            # one frame is split by OpenJPEG's threads, several go one per worker: two code paths
            int(ds.get("NumberOfFrames", 1) or 1) > 1)


def _headers_match(streams: list[bytes], ds: Dataset, target: _Target) -> bool:
    rows, cols, spp = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    stored, signed = int(ds.BitsStored), int(ds.PixelRepresentation) == 1
    lossless = target.lossy_ratio is None
    return all(codestream.matches(s, rows, cols, spp, stored, signed, target.mct, lossless)
               for s in streams)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the life of the process: frames of a multi-frame instance are
    encoded (and decoded) in parallel, since the codecs release the GIL."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teachfile-j2k")


def _parallel(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> list[_R]:
    seq = list(items)
    if workers <= 1 or len(seq) <= 1:
        return [fn(x) for x in seq]
    _going_busy()  # this thread now only waits for the workers
    return list(_pool(min(workers, 64)).map(fn, seq))


class _CodecMissing(Exception):
    """No decoder for the input syntax in this process."""


def _unsupported_pixels(ds: Dataset, ts: str) -> str:
    """Return a reason when JPEG 2000 (as used here) cannot represent the pixels exactly."""
    try:
        spp = int(ds.SamplesPerPixel)
        alloc = int(ds.BitsAllocated)
        stored = int(ds.BitsStored)
        rep = int(ds.PixelRepresentation)
        photometric = str(ds.PhotometricInterpretation).strip()
        int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return "unsupported-pixels"
    if alloc not in (8, 16) or not 1 <= stored <= alloc or rep not in (0, 1):
        return "unsupported-pixels"
    if spp == 1 and photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"):
        return "" if not (photometric == "PALETTE COLOR" and rep) else "unsupported-pixels"
    if spp == 3 and photometric in ("RGB", "YBR_FULL") and rep == 0:
        return ""
    if spp == 3 and photometric == "YBR_RCT" and ts in _J2K_LOSSLESS_IN and rep == 0:
        return ""  # decoders undo the reversible MCT: the pixels come out as RGB
    return "unsupported-pixels"


def _choose_target(ds: Dataset, policy: TranscodePolicy, ratio: float | None) -> _Target:
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "PALETTE COLOR":
        ratio = None
    ht = (policy.htj2k and codec_status()["htj2k"]
          and int(ds.BitsStored) == int(ds.BitsAllocated))
    if ratio is None:
        uid = HTJ2K_LOSSLESS if ht else J2K_LOSSLESS
    else:
        uid = HTJ2K_LOSSY if ht else J2K_LOSSY
    mct = photometric in ("RGB", "YBR_RCT")
    if mct:
        photometric = "YBR_ICT" if ratio else "YBR_RCT"
    return _Target(uid, ratio, ht, photometric, mct, policy.bypass)


def _decode_source(ds: Dataset, ts: str) -> np.ndarray:
    """Decode with pydicom's own handlers; fall back to imagecodecs for JPEG lossless and
    JPEG-LS when pydicom has no backend (the plugin's runtime may lack pylibjpeg-libjpeg)."""
    from pydicom.pixels import get_decoder, pixel_array

    if ts in _NATIVE or get_decoder(UID(ts)).is_available:
        return pixel_array(ds, raw=True)
    if ts in _JPEG_LOSSLESS or ts == _JPEGLS_LOSSLESS or ts in _J2K_LOSSLESS_IN:
        _going_busy()  # imagecodecs decodes without the GIL
        return _decode_with_imagecodecs(ds, ts)
    raise _CodecMissing


def _decode_with_imagecodecs(ds: Dataset, ts: str) -> np.ndarray:

    if ts in _JPEG_LOSSLESS:
        name = "ljpeg"
    elif ts == _JPEGLS_LOSSLESS:
        name = "jpegls"
    else:
        name = "jpeg2k" if ts == J2K_LOSSLESS else "htj2k"
    if not codec_status()[name]:
        raise _CodecMissing
    out = imagecodecs_frames(ds, name)
    nframes = len(out)
    if any(arr.shape[:2] != (int(ds.Rows), int(ds.Columns)) for arr in out):
        raise ValueError("frame shape")
    return np.stack(out) if nframes > 1 else out[0]


def _frames_of(pixels: np.ndarray, ds: Dataset) -> list[np.ndarray]:
    """Split into native-endian, contiguous per-frame arrays (imagecodecs needs both)."""
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    arr = pixels.astype(pixels.dtype.newbyteorder("="), copy=False)
    if nframes == 1 and arr.ndim == (2 if spp == 1 else 3):
        arr = arr[np.newaxis]
    return [np.ascontiguousarray(f) for f in arr]


def _encode_frame(frame: np.ndarray, ds: Dataset, target: _Target, level: float,
                  threads: int) -> bytes:
    """Encode one frame; level 0 means lossless (PSNR dB for J2K, quantisation step for HT)."""
    import imagecodecs

    if level == 0 and not target.htj2k and openjpeg.available():
        return openjpeg.encode_lossless(
            frame, int(ds.BitsStored), int(ds.PixelRepresentation) == 1, target.mct, threads,
            openjpeg.BYPASS if target.bypass else 0, on_start=_going_busy)
    _going_busy()  # imagecodecs encodes in one call without the GIL
    if target.htj2k:
        if level == 0:
            return bytes(imagecodecs.htj2k_encode(frame, 0, reversible=True))
        return bytes(imagecodecs.htj2k_encode(frame, level, reversible=False))
    # ``level`` is a PSNR in dB: OpenJPEG takes a float, imagecodecs' stub says int.
    return bytes(imagecodecs.jpeg2k_encode(
        frame, level, codecformat="J2K", bitspersample=int(ds.BitsStored),  # type: ignore[arg-type]
        reversible=level == 0, mct=target.mct, numthreads=threads))


def _encode_all(frames: list[np.ndarray], ds: Dataset, policy: TranscodePolicy,
                target: _Target) -> tuple[list[bytes], _Target, str]:
    """Encode every frame; for lossy, first pick the quality on a sample frame.

    Returns the codestreams, the target actually used and a reason for the lossless outcome
    of a lossy request ("" if none): "lossless-meets-target" when lossless already reaches the
    ratio, "lossless-no-gain" when loss would buy less than 10 % over lossless (tiny images).
    """
    level, note = 0.0, ""
    pick = len(frames) // 2
    done: dict[float, bytes] = {}  # codestreams of the sample frame, by level: never encode twice
    if target.lossy_ratio is not None:
        sample = frames[pick]
        done[0.0] = _encode_frame(sample, ds, target, 0.0, policy.threads)
        lossless_ratio = sample.nbytes / max(1, len(done[0.0]))
        if lossless_ratio >= target.lossy_ratio:
            note = "lossless-meets-target"
        else:
            level, lossy_ratio, done[level] = _search_level(sample, ds, target, policy.threads)
            if lossy_ratio < 1.1 * lossless_ratio or lossy_ratio <= 1.0:
                note = "lossless-no-gain"
        if note:
            target = _Target(HTJ2K_LOSSLESS if target.htj2k else J2K_LOSSLESS, None,
                             target.htj2k, "YBR_RCT" if target.mct else target.photometric,
                             target.mct, target.bypass)
            level = 0.0
    # Several frames: one frame per worker, single-threaded each (no per-image split, no
    # idle threads at the end of each frame); one frame: OpenJPEG's own threads split it.
    per_frame = 1 if len(frames) > 1 else policy.threads

    def encode(item: tuple[int, np.ndarray]) -> bytes:
        i, f = item
        if i == pick and level in done:
            return done[level]
        return _encode_frame(f, ds, target, level, per_frame)

    streams = _parallel(encode, enumerate(frames), policy.threads)
    return streams, target, note


def _search_level(frame: np.ndarray, ds: Dataset, target: _Target,
                  threads: int) -> tuple[float, float, bytes]:
    """Bisect the encoder's quality knob for the largest ratio not above the target; return
    (level, ratio on this frame, codestream of this frame).

    The parameter t grows with the ratio: t = -PSNR for OpenJPEG, log10(qstep) for OpenJPH.
    """
    goal = float(target.lossy_ratio or 1.0)
    lo, hi = (-160.0, -10.0) if not target.htj2k else (-6.0, 0.0)

    def level_of(t: float) -> float:
        return -t if not target.htj2k else 10.0 ** t

    best: tuple[float, float, bytes] | None = None  # (ratio, level, codestream), ratio <= goal
    over: tuple[float, float, bytes] | None = None  # the smallest ratio seen above the goal
    for _ in range(9):
        t = (lo + hi) / 2
        stream = _encode_frame(frame, ds, target, level_of(t), threads)
        ratio = frame.nbytes / max(1, len(stream))
        if ratio <= goal:
            if best is None or ratio > best[0]:
                best = (ratio, level_of(t), stream)
            if ratio >= 0.95 * goal:
                break
            lo = t
        else:
            if over is None or ratio < over[0]:
                over = (ratio, level_of(t), stream)
            hi = t
    chosen = best or over
    if chosen is None:  # unreachable: the loop runs at least once
        raise ValueError("no quality level")
    return chosen[1], chosen[0], chosen[2]


def _decode_codestream(data: bytes, htj2k: bool, threads: int) -> np.ndarray:
    """Independent of pydicom on purpose: verification must work in the plugin's runtime."""
    import imagecodecs

    if htj2k:
        return np.asarray(imagecodecs.htj2k_decode(data))
    return np.asarray(imagecodecs.jpeg2k_decode(data, numthreads=threads))


def _verify(streams: list[bytes], frames: list[np.ndarray], target: _Target,
            policy: TranscodePolicy) -> bool:
    """Lossless must be bit-exact on the checked frames; lossy must at least decode to the
    right geometry (a broken codestream is never stored)."""
    n = len(frames)
    indices: Iterable[int]
    if policy.verify is None or policy.verify >= n:
        indices = range(n)
    else:
        indices = sorted({int(round(i)) for i in np.linspace(0, n - 1, policy.verify)})
    per_frame = 1 if len(indices) > 1 else policy.threads

    def check(i: int) -> bool:
        try:
            got = _decode_codestream(streams[i], target.htj2k, per_frame)
        except Exception:
            return False
        if got.shape != frames[i].shape:
            return False
        return target.lossy_ratio is not None or bool(np.array_equal(got, frames[i]))

    return all(_parallel(check, indices, policy.threads))


_IMMUTABLE = (str, int, float, bytes, type(None))


def _clone_without_pixels(ds: Dataset) -> Dataset:
    """A copy that shares no mutable value with ``ds`` and does not copy the (possibly huge)
    pixel data twice. Elements holding an immutable value get a shallow copy (a new element
    object, the same str/int/bytes): deep-copying every element cost ~2.5 ms of a ~35 ms
    512x512 slice. Sequences and multi-values are still deep-copied."""
    out = Dataset()
    for elem in ds:
        if elem.tag == _PIXEL_DATA:
            continue
        out.add(copy.copy(elem) if isinstance(elem.value, _IMMUTABLE) else copy.deepcopy(elem))
    meta = getattr(ds, "file_meta", None)
    out.file_meta = copy.deepcopy(meta) if meta is not None else FileMetaDataset()
    if getattr(ds, "preamble", None) is not None:
        out.preamble = ds.preamble
    return out


def _as_native(ds: Dataset, frames: list[np.ndarray]) -> Dataset:
    """The decoded pixels as Explicit VR Little Endian: the lossless fallback for a compressed
    input whose JPEG 2000 result failed verification."""
    try:
        out = _clone_without_pixels(ds)
        alloc = int(ds.BitsAllocated)
        kind = "i" if int(ds.PixelRepresentation) else "u"
        data = b"".join(f.astype(f"<{kind}{alloc // 8}").tobytes() for f in frames)
        out.PixelData = data + (b"\0" if len(data) % 2 else b"")
        out["PixelData"].VR = "OB" if alloc == 8 else "OW"
        if int(ds.SamplesPerPixel) > 1:
            out.PlanarConfiguration = 0
        out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return out
    except Exception as exc:
        raise Refusal("transcode-error", f"native fallback: {type(exc).__name__}") from None


def _append_values(ds: Dataset, keyword: str, value: str) -> None:
    current = ds.get(keyword)
    if current is None or current == "":
        setattr(ds, keyword, value)
        return
    if isinstance(current, MultiValue | list | tuple):
        values = [str(v) for v in current]
    else:
        values = [str(current)]
    setattr(ds, keyword, [*values, value])


def _pixel_header(ds: Dataset, target: _Target) -> list[DataElement]:
    """The header elements a JPEG 2000 output changes besides its syntax (new element objects,
    so a copy sharing ``ds``'s elements can take them without changing ``ds``)."""
    out = [DataElement(0x00280004, "CS", target.photometric)]
    if int(ds.SamplesPerPixel) > 1:
        out.append(DataElement(0x00280006, "US", 0))
    return out


@dataclass(frozen=True)
class HeaderAhead:
    """The header an instance will have once stored as lossless JPEG 2000, made before the
    encode ends (:func:`lossless_header`). ``dataset`` has no pixel data and shares the
    instance's elements; ``values`` holds each shared element with the value object it had,
    so that :meth:`fits` sees a value set since (pydicom sets values in place)."""

    dataset: Dataset
    values: tuple[tuple[DataElement, object], ...]
    #: The elements the encode changes (:func:`_pixel_header`), new objects.
    changed: tuple[DataElement, ...]

    def fits(self, ds: Dataset) -> bool:
        """True when transcoded ``ds`` has exactly this header besides its pixel data: the same
        elements holding the same values, equal changed ones, the same syntax. (Inside a
        sequence item only the item objects are compared; nothing between the header and the
        output changes one: the lossless path sets pixel data, photometric interpretation,
        planar configuration and the syntax, nothing else.)"""
        d, h = ds._dict, self.dataset._dict
        if len(d) != len(h) + 1 or _PIXEL_DATA not in d:
            return False
        if str(ds.file_meta.get("TransferSyntaxUID", "")) != \
                str(self.dataset.file_meta.get("TransferSyntaxUID", "")):
            return False
        for elem, value in self.values:
            if d.get(elem.tag) is not elem or elem.value is not value:
                return False
        for theirs in self.changed:
            mine = d.get(theirs.tag)
            if mine is None or mine.VR != theirs.VR or mine.value != theirs.value:
                return False
        return True


def lossless_header(ds: Dataset, policy: TranscodePolicy) -> HeaderAhead | None:
    """``ds``'s header as :func:`transcode` leaves it when it stores the pixels as lossless JPEG
    2000: a copy without the pixel data that shares ``ds``'s elements, with the new photometric
    interpretation, planar configuration and transfer syntax.

    Why: writing the header is the longest step after the encode, and it needs nothing the
    encode makes, so the reception writes it while the pixels are still being encoded; the
    output is then this header's bytes followed by the pixel data element, and only if
    :meth:`HeaderAhead.fits` the transcoded instance. None when that cannot be known now: a
    modality stored lossy (new UIDs), elements after the pixel data, an element not yet
    decoded, a big endian input (written by another path).
    """
    if policy.mode == "off" or policy.lossy_ratio(ds.get("Modality")) is not None:
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) == ExplicitVRBigEndian:
        return None
    d = ds._dict
    if _PIXEL_DATA not in d or any(t > _PIXEL_DATA for t in d):
        return None
    try:
        target = _choose_target(ds, policy, None)
        changed = _pixel_header(ds, target)
    except Exception:  # noqa: BLE001 - no header now; transcode decides as always
        return None
    out = Dataset()
    tags = {e.tag for e in changed}
    shared: list[tuple[DataElement, object]] = []
    for t, e in d.items():
        if t == _PIXEL_DATA or t in tags:
            continue
        if not isinstance(e, DataElement):  # not decoded yet: written later, maybe otherwise
            return None
        shared.append((e, e.value))
    out._dict.update((e.tag, e) for e, _ in shared)
    for elem in changed:
        out[elem.tag] = elem
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    out.file_meta = copy.deepcopy(meta)  # FileMetaDataset(meta) would share meta's dict
    out.file_meta.TransferSyntaxUID = UID(target.uid)
    if getattr(ds, "preamble", None) is not None:
        out.preamble = ds.preamble
    return HeaderAhead(out, tuple(shared), tuple(changed))


def _build_output(ds: Dataset, streams: list[bytes], target: _Target, ratio: float,
                  new_uid: Callable[[str], str], consume: bool = False) -> Dataset:
    out = ds if consume else _clone_without_pixels(ds)
    out.PixelData = encapsulate(streams, fragments_per_frame=1, has_bot=True)
    elem = out["PixelData"]
    elem.VR = "OB"
    elem.is_undefined_length = True
    for changed in _pixel_header(ds, target):
        out[changed.tag] = changed
    out.file_meta.TransferSyntaxUID = UID(target.uid)
    if target.lossy_ratio is not None:
        old = str(ds.get("SOPInstanceUID", "")).strip()
        if not old:
            raise Refusal("missing-uid", "SOPInstanceUID")
        try:
            uid = str(new_uid("lossy-j2k:" + old))
        except Exception as exc:
            raise Refusal("transcode-error", f"new_uid: {type(exc).__name__}") from None
        out.SOPInstanceUID = uid
        out.file_meta.MediaStorageSOPInstanceUID = UID(uid)
        out.LossyImageCompression = "01"
        _append_values(out, "LossyImageCompressionRatio", f"{ratio:.2f}")
        _append_values(out, "LossyImageCompressionMethod",
                       "ISO_15444_15" if target.htj2k else "ISO_15444_1")
    return out
