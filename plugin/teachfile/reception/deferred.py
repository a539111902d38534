"""Lossless JPEG 2000 encoding after the received-instance callback, outside Orthanc's lock.

Why: Orthanc runs the received-instance callback under its plugin mutex, so an encode done
inside it runs one instance at a time whatever the number of associations. With four
associations on two cores the node then kept the cores ~78 % busy, while Orthanc's own
``IngestTranscoding`` (after that callback, on each association's thread, under a shared lock
only) kept them ~91 % busy. So, when the node's transcoder (``native/restcall.c``) is installed
and Orthanc's ingest transcoding asks it for lossless JPEG 2000, the callback may de-identify,
seal and check an instance as always and hand Orthanc its *uncompressed* bytes; Orthanc then
asks the transcoder for JPEG 2000, and :func:`encode` makes it from exactly those bytes, on that
association's own thread, while the next instance is being de-identified.

Nothing identifying is involved any more: what is encoded is the checked, de-identified output,
and de-identification itself still happens before anything is stored. The JPEG 2000 instance is
the same header bytes (only the transfer syntax in the file meta information changes) followed by
the encapsulated codestream, byte for byte what the callback would have stored itself (unit
tests compare the two). :func:`prepare` therefore takes only instances for which that holds: one
sample per pixel (the photometric interpretation does not change), a little endian native input,
nothing after the pixel data, a modality stored lossless.

Verification is the same as in the callback (:class:`~.transcode.Verifier`), but a failed check
does not keep the instance uncompressed at once: it is encoded again without BYPASS and decoded
again; only if that fails too does :func:`encode` decline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from . import openjpeg
from .transcode import (
    J2K_LOSSLESS,
    TranscodePolicy,
    Verifier,
    _choose_target,
    _encode_frame,
    _format_key,
    _headers_match,
    _Target,
    _unsupported_pixels,
    _verify,
    codec_status,
)

_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_META_START = 132  # preamble and "DICM"
_SYNTAX_TAG = b"\x02\x00\x10\x00"
_LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV")
#: What the encoder and the checks read: the pixel module's values, no identifier.
_VIEW = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
         "PixelRepresentation", "PhotometricInterpretation")


@dataclass(frozen=True)
class Deferred:
    """One instance handed to Orthanc uncompressed, to be encoded by :func:`encode`.

    ``native`` is every byte the callback hands Orthanc, its pixel value from ``pixel_offset``
    to the end; ``head`` is the JPEG 2000 instance's bytes before its pixel data element.
    ``view`` holds the pixel module's values, ``key`` the verifier's format key and ``check``
    why the result is decoded again ("" when only the codestream's header is checked)."""

    native: bytes
    pixel_offset: int
    head: bytes
    view: Dataset
    target: _Target
    key: tuple[object, ...]
    check: str
    frames: int


def eligible(ds: Dataset, policy: TranscodePolicy) -> bool:
    """Whether :func:`prepare` can take ``ds`` once it is de-identified; decided on what
    de-identification does not change, so the reception can ask before it starts anything."""
    meta = getattr(ds, "file_meta", None)
    if policy.mode != "lossless" or meta is None or not openjpeg.available() or \
            not codec_status()["jpeg2k"]:
        return False
    if str(meta.get("TransferSyntaxUID", "")) not in (ExplicitVRLittleEndian,
                                                       ImplicitVRLittleEndian):
        return False
    if policy.lossy_ratio(ds.get("Modality")) is not None:
        return False
    try:
        return (int(ds.SamplesPerPixel) == 1 and "PixelData" in ds
                and not _unsupported_pixels(ds, ExplicitVRLittleEndian)
                and str(ds.get("LossyImageCompression", "")).strip() != "01")
    except (AttributeError, TypeError, ValueError):
        return False


def prepare(ds: Dataset, native: bytes, policy: TranscodePolicy,
            verifier: Verifier) -> Deferred | None:
    """The deferred encode of ``ds``, an explicit VR little endian instance whose exact bytes
    are ``native`` (written and checked by the caller), or None when the callback must
    transcode it itself. Asks ``verifier`` now, so the decision is the one the callback would
    have made."""
    if not eligible(ds, policy) or \
            str(ds.file_meta.get("TransferSyntaxUID", "")) != ExplicitVRLittleEndian:
        return None
    if any(t > 0x7FE00010 for t in ds._dict):
        return None
    target = _choose_target(ds, policy, None)
    if target.uid != J2K_LOSSLESS or target.htj2k or target.mct or \
            target.photometric != str(ds.PhotometricInterpretation).strip():
        return None
    value = ds.PixelData
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = int(ds.Rows) * int(ds.Columns) * frames * (int(ds.BitsAllocated) // 8)
    if not isinstance(value, bytes) or len(value) % 2 or len(value) < pixels or frames < 1:
        return None
    offset = len(native) - len(value)
    start = offset - 12
    if start <= _META_START or native[start:start + 4] != _PIXEL_TAG or \
            native[start + 4:start + 6] not in (b"OW", b"OB") or \
            struct.unpack_from("<I", native, start + 8)[0] != len(value):
        return None
    meta = with_syntax(native, J2K_LOSSLESS)
    if meta is None or meta[1] > start:
        return None
    head = native[:_META_START] + meta[0] + native[meta[1]:start]
    view = Dataset()
    for keyword in _VIEW:
        setattr(view, keyword, ds.get(keyword))
    key = _format_key(ds, ExplicitVRLittleEndian, target)
    return Deferred(native, offset, head, view, target, key, verifier.plan(key), frames)


def with_syntax(data: bytes, uid: str) -> tuple[bytes, int] | None:
    """The file meta information group of ``data`` with Transfer Syntax UID ``uid`` (and its
    group length updated), and the offset where the group ends in ``data``; None when the
    group is not as pydicom writes it. Byte surgery rather than pydicom's writer, which spent
    ~1 ms validating what was validated when ``data`` was written."""
    at = _META_START
    if data[128:132] != b"DICM" or data[at:at + 6] != b"\x02\x00\x00\x00UL" or \
            data[at + 6:at + 8] != b"\x04\x00":
        return None
    end = at + 12 + struct.unpack_from("<I", data, at + 8)[0]
    if end > len(data):
        return None
    pos, out = at + 12, bytearray()
    found = False
    while pos < end:
        tag, vr = data[pos:pos + 4], data[pos + 4:pos + 6]
        if tag[:2] != b"\x02\x00":
            return None
        if vr in _LONG_VRS:
            size, body = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            size, body = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        if body + size > end:
            return None
        if tag == _SYNTAX_TAG and vr == b"UI":
            value = uid.encode("ascii")
            value += b"\0" * (len(value) % 2)
            out += tag + vr + struct.pack("<H", len(value)) + value
            found = True
        else:
            out += data[pos:body + size]
        pos = body + size
    if pos != end or not found:
        return None
    return b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(out)) + bytes(out), end


def encode(job: Deferred, policy: TranscodePolicy, verifier: Verifier,
           threads: int | None = None) -> bytes | None:
    """The JPEG 2000 instance of ``job``, or None when it cannot be made exactly (the caller
    declines then). ``threads`` splits a single frame (None: the policy's); several frames are
    encoded one after the other, each on one thread (several associations run at once here)."""
    view = job.view
    rows, cols = int(view.Rows), int(view.Columns)
    alloc = int(view.BitsAllocated)
    kind = "i" if int(view.PixelRepresentation) else "u"
    count = rows * cols * job.frames
    pixels = np.frombuffer(job.native, f"<{kind}{alloc // 8}", count, job.pixel_offset)
    frames = list(pixels.reshape(job.frames, rows, cols))
    per_frame = (policy.threads if threads is None else threads) if job.frames == 1 else 1
    streams = _exact(frames, job, job.target, policy, per_frame)
    if streams is None:
        verifier.failed(job.key)
        # Once more without BYPASS (another coding path in OpenJPEG), and decoded again.
        streams = _exact(frames, replace(job, check="distrusted"),
                         replace(job.target, bypass=False), policy, per_frame)
        if streams is None:
            return None
    else:
        verifier.passed(job.key, job.check)
    elem = DataElement(0x7FE00010, "OB", encapsulate(streams, fragments_per_frame=1,
                                                     has_bot=True))
    elem.is_undefined_length = True
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem)
    return job.head + fp.getvalue()


def _exact(frames: list[np.ndarray], job: Deferred, target: _Target,
           policy: TranscodePolicy, threads: int) -> list[bytes] | None:
    try:
        streams = [_encode_frame(f, job.view, target, 0.0, threads) for f in frames]
    except Exception:  # noqa: BLE001 - the encoder refused this image
        return None
    if not _headers_match(streams, job.view, target):
        return None
    if job.check and not _verify(streams, frames, target, policy):
        return None
    return streams
