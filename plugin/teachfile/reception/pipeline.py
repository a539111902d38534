"""The reception path as one pure function: bytes in, a :class:`Decision` out.

strict input check -> parse -> burned-in policy -> de-identify (profile, keyed pseudonyms)
-> clean pixels (rules) -> transcode (J2K policy) -> seal -> bytes -> strict output check.
The two checks (:mod:`.check`) read the bytes themselves: what pydicom forgives on the way in
is refused, and the exact bytes handed to Orthanc are re-read before they are.
Nothing here knows about Orthanc; the entry script translates a Decision into MODIFY or a
refusal that the sender sees. Every failure becomes a refusal with a PHI-free reason code.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..errors import Refusal, safe_detail
from . import check, deferred, pixels, record, seal
from .deid import Deidentifier
from .transcode import (
    Encoded,
    HeaderAhead,
    Outcome,
    TranscodePolicy,
    Verifier,
    encode_pixels,
    lossless_header,
    pixel_view,
    same_pixels,
    transcode,
)

#: At most this long (s) the reception waits for the early encode to get into C; it goes on
#: anyway after it (a slow decode of a compressed input, say): only the overlap is lost.
_HANDOFF_WAIT = 0.25
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: Recorded in De-identification Method (0012,0063) of an instance the OCR gate let in: the
#: pixels were not cleaned, they were read and found to carry no text.
OCR_METHOD_NOTE = "pixels read by OCR (tesseract): no text found"
#: Recorded instead when the instance came in on the word of a trusted sender.
TRUSTED_METHOD_NOTE = "pixels not cleaned: sender trusted to clean captures"


@dataclass(frozen=True)
class Decision:
    """What to do with one received instance."""

    store: bool
    data: bytes | None = None
    reason: str | None = None
    detail: str = ""
    #: Keyed hash of the *original* SOP Instance UID, for the refusal log; never the UID.
    uid_hash: str | None = None
    transcoded: bool = False
    #: Why the instance kept its syntax (``no-pixel-data``, ``already-lossy``...) or, when
    #: transcoded, why it went the way it did (``lossless-meets-target``...); None if plain.
    transcode_reason: str | None = None
    #: The stored (pseudonymous) SOP Class, SOP Instance, Study and Series UIDs, for answers
    #: that must name what was stored (STOW-RS, REST), never the received ones.
    stored_uids: tuple[str, str, str, str] | None = None
    #: How the pixels were judged safe beyond the rules: ``ocr-no-text`` when the OCR gate
    #: read every frame of an image no rule cleans and found no text (see pixel rules).
    pixel_check: str | None = None
    #: Stored only if the C-STORE comes from a sender trusted to clean its captures (the
    #: caller checks the calling AET; any other origin refuses). ``detail`` then says why the
    #: OCR gate alone would have refused.
    needs_trusted_sender: bool = False
    #: Handed to Orthanc uncompressed, for the node's transcoder to store as lossless JPEG
    #: 2000 after the callback (:mod:`.deferred`); ``transcoded`` is False until it has.
    deferred: deferred.Deferred | None = None


class Reception:
    """De-identify and transcode received instances with one profile and one key."""

    def __init__(self, deidentifier: Deidentifier, policy: TranscodePolicy,
                 pixel_policy: pixels.PixelPolicy | None = None,
                 force_failure: str | None = None,
                 output_check: check.OutputCheck | None = None,
                 check_bytes: bool = True,
                 case_titles: Callable[[str], str | None] | None = None,
                 text_reader: Callable[[pydicom.Dataset], list[str]] | None = None,
                 trusted_senders: bool = False, overlap: bool = True) -> None:
        self.deidentifier = deidentifier
        self.pseudonymizer = deidentifier.pseudonymizer
        self.policy = policy
        #: Which pixel formats were proven lossless (``transcoding.verification``).
        self.verifier = Verifier(policy)
        self.pixel_policy = pixel_policy
        #: Test-only switch: "refusal" or "exception" after parsing, to prove fail-closed paths.
        self.force_failure = force_failure
        self.output_check = output_check or check.OutputCheck(deidentifier.profile)
        #: Benchmark switch only (scripts/bench-deid): False skips both byte checks.
        self.check_bytes = check_bytes
        #: Pseudonymous Study Instance UID -> the case title that study must keep (the node's
        #: case store); it may raise :class:`Refusal` when the store cannot be read.
        self.case_titles = case_titles
        #: The OCR gate's reader (:func:`teachfile.reception.ocr.gate_words`); None: no OCR,
        #: so images the gate would read stay refused.
        self.text_reader = text_reader
        #: Some senders are trusted to clean their captures (``TrustedCaptureSenders``): what
        #: the OCR gate would refuse is prepared for storage, marked ``needs_trusted_sender``.
        self.trusted_senders = trusted_senders
        #: Encode the pixels on another thread while the header is de-identified (see
        #: :meth:`_early_encode`); False runs every step in turn (tests compare the two).
        self.overlap = overlap
        #: Set when Orthanc transcodes uncompressed instances after the callback (the node's
        #: ingest transcoding, node/ingest.py). What this reception keeps uncompressed is then
        #: handed over deflated (lossless, and left alone by ingest transcoding), because the
        #: next transcoder in Orthanc's chain, GDCM, rewrites the header as it encodes: it adds
        #: a Study Date of today, among others, which breaks the seal.
        self.deflate_kept = False

    def process(self, raw: bytes, defer: bool = False) -> Decision:
        """``defer``: the node's transcoder will be asked for this instance's JPEG 2000 after
        the callback (:mod:`.deferred`); an eligible instance is then handed over uncompressed,
        with ``Decision.deferred`` saying how to encode it."""
        uid_hash: str | None = None
        try:
            header = check.check_input(raw) if self.check_bytes else b""
            ds = self._parse(raw)
            uid = ds.get("SOPInstanceUID")
            uid_hash = self.pseudonymizer.log_hash(str(uid)) if uid else None
            for keyword in _REQUIRED_UIDS:
                if not ds.get(keyword):
                    raise Refusal("missing-uid", keyword)
            if self.force_failure == "refusal":
                raise Refusal("forced-failure")
            if self.force_failure == "exception":
                raise RuntimeError("forced internal failure (test switch)")
            if record.is_own_record(ds, self.pseudonymizer):
                # A case record this node wrote, unchanged: every byte is already its output.
                return Decision(True, data=raw, uid_hash=uid_hash,
                                transcode_reason="own-record")
            # Burned-in text is judged on the original header (de-identification removes some
            # of the attributes pixel rules match on), cleaned after de-identification.
            plan = pixels.assess(ds, self.pixel_policy) if self.pixel_policy else None
            ocr_checked, pending = False, ""
            if plan is not None and plan.action == "refuse":
                assert self.pixel_policy is not None
                if not self.pixel_policy.ocr_gate.applies(plan):
                    raise Refusal("burned-in", plan.reason_code)
                try:
                    self._ocr_gate(ds, plan, self.pixel_policy.ocr_gate)
                    ocr_checked = True
                except Refusal as exc:
                    if not self.trusted_senders:
                        raise
                    pending = exc.detail
                plan = None
            # Not what only a trusted sender may store: its filter checks the exact bytes.
            defer = defer and not pending and deferred.eligible(ds, self.policy)
            early = None if defer else self._early_encode(ds, plan)
            # The identifiers are read before de-identification replaces them.
            # The raw scan also finds what a swallowing length or a private element hid from
            # the parsed dataset (and so from the engine's cleaning).
            tokens = (self.output_check.tokens(ds) | check.raw_identifier_tokens(header)
                      if self.check_bytes else None)
            ds = self.deidentifier.deidentify(ds, self.case_titles)
            if plan is not None and plan.action == "clean":
                ds = pixels.apply(ds, plan)
            if ocr_checked or pending:
                _add_method_note(ds, OCR_METHOD_NOTE if ocr_checked else TRUSTED_METHOD_NOTE)
                seal.seal(ds, self.pseudonymizer)  # the method values are sealed
            sealed_uid = ds.SOPInstanceUID  # de-identification sealed the instance
            later = self._deferred(ds, tokens) if defer else None
            reason: str | None
            if later is not None:  # written and checked: the node's transcoder encodes it
                data, status, reason = later.native, "deferred", "deferred"
            else:
                ds, data, status, reason = self._transcoded(ds, early, sealed_uid, tokens)
            stored = (str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                      str(ds.SeriesInstanceUID))
        except Refusal as exc:
            return Decision(False, reason=exc.reason, detail=safe_detail(exc.detail),
                            uid_hash=uid_hash)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything at all
            # Only the exception's type is kept: its message may quote a data value.
            return Decision(False, reason="internal-error", detail=type(exc).__name__,
                            uid_hash=uid_hash)
        return Decision(True, data=data, uid_hash=uid_hash, transcoded=status == "transcoded",
                        transcode_reason=reason, stored_uids=stored,
                        pixel_check="ocr-no-text" if ocr_checked else
                        "trusted-sender" if pending else None,
                        detail=safe_detail(pending), needs_trusted_sender=bool(pending),
                        deferred=later)

    def _transcoded(self, ds: pydicom.Dataset,
                    early: tuple[Future[Outcome | Encoded], pydicom.Dataset] | None,
                    sealed_uid: str, tokens: check.Tokens | None
                    ) -> tuple[pydicom.Dataset, bytes, str, str | None]:
        """The de-identified instance transcoded here: the stored dataset (``ds`` itself or a
        new one), the bytes to store (checked), the outcome's status and reason."""
        job = _early_job(early, ds)
        written = self._header_meanwhile(ds, job)
        outcome = transcode(ds, self.policy, new_uid=self.pseudonymizer.uid,
                            verifier=self.verifier, consume=True,
                            encoded=job.result() if job is not None else None)
        out = outcome.ds
        if out.SOPInstanceUID != sealed_uid:  # lossy: a new instance, sealed anew
            seal.seal(out, self.pseudonymizer)
        _trim_native_pixels(out)
        if self.deflate_kept and outcome.status != "transcoded":
            _deflate_native(out)
        if written is not None and outcome.status == "transcoded" and written[0].fits(out):
            data = written[1] + _pixel_element(out)
        else:
            data = _serialize(out)
        if tokens is not None:
            self.output_check.check(data, tokens)
        return out, data, outcome.status, outcome.reason

    def _deferred(self, ds: pydicom.Dataset, tokens: check.Tokens | None
                  ) -> deferred.Deferred | None:
        """The de-identified instance written uncompressed (explicit VR little endian, the
        syntax its JPEG 2000 form shares) and checked, with what the node's transcoder needs
        to encode it later; None when it does not qualify (then it is transcoded here)."""
        if not deferred.eligible(ds, self.policy):
            return None
        _trim_native_pixels(ds)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        data = _serialize(ds)
        job = deferred.prepare(ds, data, self.policy, self.verifier)
        if job is not None and tokens is not None:
            self.output_check.check(data, tokens)
        return job

    def _ocr_gate(self, ds: pydicom.Dataset, plan: pixels.PixelPlan,
                  gate: pixels.OcrGate) -> None:
        """Return only when OCR read every frame and found no text; otherwise refuse, saying
        why in the detail (never the words: they may be a name)."""
        why = plan.reason_code
        if self.text_reader is None:
            raise Refusal("burned-in", why + ";ocr-unavailable")
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            raise Refusal("burned-in", why + ";ocr-frames-unknown") from None
        if frames > gate.max_frames:
            raise Refusal("burned-in", why + ";ocr-too-many-frames")
        try:
            words = self.text_reader(ds)
        except Exception:  # noqa: BLE001 - no reading, no way in
            raise Refusal("burned-in", why + ";ocr-failed") from None
        if words:
            raise Refusal("burned-in", why + ";ocr-found-text")

    def _early_encode(self, ds: pydicom.Dataset, plan: pixels.PixelPlan | None
                      ) -> tuple[Future[Outcome | Encoded], pydicom.Dataset] | None:
        """Start encoding the received pixels while the header is de-identified.

        Why: Orthanc runs one received instance at a time, and over one association nothing
        else happens while it does; de-identification, the identifier scan and the checks are
        Python that holds the GIL, the encode is C that does not, so the two overlap. The
        encode reads a :func:`pixel_view` (its own copies of the pixel module's elements, the
        same pixel bytes); its result is used only if the de-identified instance still has
        exactly those values (:func:`same_pixels`), else the encode runs again on it. Not when
        pixels are to be cleaned: then the pixels change first.
        """
        if not self.overlap or self.policy.mode == "off" or (
                plan is not None and plan.action == "clean"):
            return None
        view = pixel_view(ds)
        busy = threading.Event()
        future = _early_pool().submit(encode_pixels, view, self.policy, busy.set)
        future.add_done_callback(lambda _f: busy.set())
        # Let the encoding thread through its Python before this one goes on with its own:
        # while this thread runs Python, the other gets the GIL back only once per switch
        # interval (5 ms) at each step, and the encode started ~2.7 ms late on a CT slice.
        busy.wait(_HANDOFF_WAIT)
        return future, view

    def _header_meanwhile(self, ds: pydicom.Dataset, job: Future[Outcome | Encoded] | None
                          ) -> tuple[HeaderAhead, bytes] | None:
        """While the early encode runs, write the header the output will have if it is stored
        as lossless JPEG 2000 (:func:`lossless_header`); the caller uses the bytes only if the
        transcoded instance has exactly that header. Why: over one association, and inside
        Orthanc's plugin lock over several, every millisecond after the encode is the
        sender's; writing the header was the longest of them (~1.5-2 ms of a CT slice), and
        during the encode it costs only a share of a core. Not when nothing runs early (the
        steps in turn are the reference) or the encode already said the instance keeps its
        syntax."""
        if job is None:
            return None
        if job.done() and (job.exception() is not None or isinstance(job.result(), Outcome)):
            return None
        header = lossless_header(ds, self.policy)
        return (header, _serialize(header.dataset)) if header is not None else None

    @staticmethod
    def _parse(raw: bytes) -> pydicom.Dataset:
        # pydicom reads the element structure now and values lazily; a value that cannot be
        # decoded later fails de-identification or writing, which refuses the instance too.
        try:
            ds = pydicom.dcmread(io.BytesIO(raw))
        except (InvalidDicomError, Exception) as exc:
            raise Refusal("parse-error", type(exc).__name__) from None
        return ds


@functools.cache
def _early_pool() -> ThreadPoolExecutor:
    # Two: Orthanc runs one received instance at a time, but a test or a tool may not.
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="teachfile-pixels")


def _early_job(early: tuple[Future[Outcome | Encoded], pydicom.Dataset] | None,
               ds: pydicom.Dataset) -> Future[Outcome | Encoded] | None:
    """The early encode if it was made from exactly ``ds``'s pixels, else None (then the
    caller encodes ``ds``, and the early result is never looked at). Checked before ``ds`` is
    written: writing may settle ambiguous VRs in place, which would look like other pixels.
    An exception in the encode comes out of ``result()``: it refuses, as it would in turn."""
    if early is None:
        return None
    future, view = early
    return future if same_pixels(ds, view) else None


def _serialize(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _pixel_element(ds: pydicom.Dataset) -> bytes:
    """The pixel data element as :func:`_serialize` writes it last in a JPEG 2000 instance
    (explicit VR little endian, like every JPEG 2000 syntax)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, ds["PixelData"])
    return fp.getvalue()


def _trim_native_pixels(ds: pydicom.Dataset) -> None:
    """Native pixel data longer than the image is cut to the image (plus a padding byte):
    bytes after the last pixel are no pixels, and could carry anything."""
    if "PixelData" not in ds or str(ds.file_meta.get("TransferSyntaxUID", "")) not in \
            check.NATIVE_SYNTAXES:
        return
    value = ds.PixelData
    try:
        bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1) * \
            int(ds.get("SamplesPerPixel") or 1) * int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return  # the output check refuses what it cannot size
    if str(ds.get("PhotometricInterpretation", "")) in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        bits = bits * 2 // 3
    expected = (bits + 7) // 8
    if isinstance(value, bytes) and len(value) > expected + (expected & 1):
        ds.PixelData = value[:expected + (expected & 1)]


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_INGESTED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def _deflate_native(ds: pydicom.Dataset) -> None:
    """Kept pixels in a little endian native syntax are written deflated (see
    ``Reception.deflate_kept``); big endian ones cannot be rewritten by pydicom, so they are
    refused rather than left to a transcoder that would break their seal."""
    if not any(t in ds for t in _PIXEL_TAGS):
        return  # no pixels: every transcoder in the chain declines it
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if ts in _INGESTED:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif ts == ExplicitVRBigEndian:
        raise Refusal("transcode-error", "kept big endian pixels under ingest transcoding")


def _add_method_note(ds: pydicom.Dataset, note: str) -> None:
    values = ds.get("DeidentificationMethod") or []
    values = [values] if isinstance(values, str) else [str(v) for v in values]
    if note not in values:
        ds.add_new(0x00120063, "LO", [*values, note])
