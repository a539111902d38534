"""The reception path as one pure function: bytes in, a :class:`Decision` out.

parse -> burned-in policy -> de-identify (profile, keyed pseudonyms) -> clean pixels (rules)
-> transcode (J2K policy) -> seal -> bytes.
Nothing here knows about Orthanc; the entry script translates a Decision into MODIFY or a
refusal that the sender sees. Every failure becomes a refusal with a PHI-free reason code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import Refusal, safe_detail
from . import pixels, seal
from .deid import Deidentifier
from .transcode import TranscodePolicy, Verifier, transcode

_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


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


class Reception:
    """De-identify and transcode received instances with one profile and one key."""

    def __init__(self, deidentifier: Deidentifier, policy: TranscodePolicy,
                 pixel_policy: pixels.PixelPolicy | None = None,
                 force_failure: str | None = None) -> None:
        self.deidentifier = deidentifier
        self.pseudonymizer = deidentifier.pseudonymizer
        self.policy = policy
        #: Which pixel formats were proven lossless (``transcoding.verification``).
        self.verifier = Verifier(policy)
        self.pixel_policy = pixel_policy
        #: Test-only switch: "refusal" or "exception" after parsing, to prove fail-closed paths.
        self.force_failure = force_failure

    def process(self, raw: bytes) -> Decision:
        uid_hash: str | None = None
        try:
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
            # Burned-in text is judged on the original header (de-identification removes some
            # of the attributes pixel rules match on), cleaned after de-identification.
            plan = pixels.assess(ds, self.pixel_policy) if self.pixel_policy else None
            if plan is not None and plan.action == "refuse":
                raise Refusal("burned-in", plan.reason_code)
            ds = self.deidentifier.deidentify(ds)
            if plan is not None and plan.action == "clean":
                ds = pixels.apply(ds, plan)
            sealed_uid = ds.SOPInstanceUID  # de-identification sealed the instance
            outcome = transcode(ds, self.policy, new_uid=self.pseudonymizer.uid,
                                verifier=self.verifier, consume=True)
            ds = outcome.ds
            if ds.SOPInstanceUID != sealed_uid:  # lossy: a new instance, sealed anew
                seal.seal(ds, self.pseudonymizer)
            data = _serialize(ds)
        except Refusal as exc:
            return Decision(False, reason=exc.reason, detail=safe_detail(exc.detail),
                            uid_hash=uid_hash)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything at all
            # Only the exception's type is kept: its message may quote a data value.
            return Decision(False, reason="internal-error", detail=type(exc).__name__,
                            uid_hash=uid_hash)
        transcoded = outcome.status == "transcoded"
        return Decision(True, data=data, uid_hash=uid_hash, transcoded=transcoded,
                        transcode_reason=outcome.reason)

    @staticmethod
    def _parse(raw: bytes) -> pydicom.Dataset:
        # pydicom reads the element structure now and values lazily; a value that cannot be
        # decoded later fails de-identification or writing, which refuses the instance too.
        try:
            ds = pydicom.dcmread(io.BytesIO(raw))
        except (InvalidDicomError, Exception) as exc:
            raise Refusal("parse-error", type(exc).__name__) from None
        return ds


def _serialize(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
