"""The node's behaviour behind Orthanc's callbacks, as plain Python.

The entry script owns the ``orthanc`` module and calls into one :class:`Service`; everything that
decides (what to store, what to refuse, what the sender is told, what is counted) lives here so
that it runs in plain pytest too.

How a refusal reaches the sender (Orthanc 1.10.1 + Python plugin 4.0, measured):
- C-STORE: DISCARD would answer Success, so the received-instance callback returns a tiny
  PHI-free *tombstone* instead; the C-STORE instance filter, which Orthanc calls next on the same
  thread, recognises it and returns a failure DIMSE status (0xC000 for unreadable input, 0x0110
  Processing failure otherwise). Nothing is stored.
- Every other origin (REST, STOW-RS, /modify, Lua, plugins) gets bytes Orthanc cannot parse, so
  Orthanc stores nothing and raises "Bad file format" to the caller. ``POST /instances`` is served
  by the plugin, which turns that into HTTP 422 (400 for unreadable input) with a JSON reason.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from .. import __version__
from ..errors import REASONS, UNREADABLE, ConfigError
from ..reception import deferred, seal
from ..reception.deid import Deidentifier
from ..reception.pipeline import Decision, Reception
from ..reception.pixels import PixelPolicy, load_pixel_policy
from ..reception.profile import Profile, load_profile
from ..reception.pseudonym import Pseudonymizer
from ..reception.transcode import J2K_LOSSLESS, TranscodePolicy, lossless_encoder
from .keycheck import REASON as KEY_MISMATCH
from .keycheck import KeyCheck, check_directory
from .keys import fingerprint, load_or_create_key
from .records import DIRECTORY_NAME as CASE_DIRECTORY
from .records import CaseStore, use_store
from .roles import Roles
from .state import NodeState, Refusal

log = logging.getLogger("teachfile")

#: Returned to Orthanc instead of a refused instance from a non-DICOM origin: it cannot be
#: parsed, so Orthanc stores nothing and reports an error to whoever asked.
UNSTORABLE = b"TEACHFILE-REFUSED"
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110
#: A callback entering within this many seconds of the previous one's return was queued.
_QUEUED = 0.001
_TOMBSTONE_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture; never stored anyway


@dataclass(frozen=True)
class Settings:
    """The plugin's part of the Orthanc configuration (section ``Teachfile``)."""

    profile: str
    config_dir: Path
    data_dir: Path
    #: Pixel rules file (burned-in text); None: ``pixel-rules.yaml`` in the config directory.
    pixel_rules: Path | None = None
    #: Optional OCR of stored pixels in the audit (Debian's tesseract); off by default.
    ocr_audit: bool = False
    force_failure: str | None = None
    bypass_reception: bool = False
    max_refusals: int = 1000
    roles: Mapping[str, str] = field(default_factory=dict)
    users: tuple[str, ...] = ()
    #: Orthanc's storage directory: shared by every node of a scale-out cluster, so the place
    #: where the cluster's key fingerprint is recorded (see :mod:`teachfile.node.keycheck`).
    storage_dir: Path | None = None
    #: Where case records live (see :mod:`teachfile.node.records`); None: ``teachfile-cases``
    #: in the storage directory, which every replica shares.
    case_dir: Path | None = None
    #: ``Teachfile.Sharing`` as the launcher wrote it: public/HTTPS, DICOM TLS, fingerprint.
    sharing: Mapping[str, Any] = field(default_factory=dict)
    #: Calling AETs trusted to clean their own captures (``TrustedCaptureSenders``): what the
    #: OCR gate would refuse is stored when it comes by C-STORE from one of them.
    trusted_capture_senders: tuple[str, ...] = ()
    #: Orthanc transcodes uncompressed instances after the callback (``IngestTranscoding``
    #: with ``IngestTranscodingOfUncompressed``, its default): see Reception.deflate_kept.
    ingest_uncompressed: bool = False

    @classmethod
    def from_orthanc_config(cls, config: Mapping[str, Any],
                            environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        section = config.get("Teachfile", {}) or {}
        if not isinstance(section, Mapping):
            raise ConfigError("the Teachfile configuration section must be an object")
        default_cfg = Path(__file__).resolve().parents[3] / "orthanc-config"
        data_default = Path(config.get("StorageDirectory", "OrthancStorage")) / "teachfile"
        testing = section.get("Testing", {}) or {}
        if testing and env.get("TEACHFILE_TESTING") != "1":
            # A switch that bypasses reception must never reach a real node by accident.
            raise ConfigError("Teachfile.Testing is for the test suite only (it needs "
                              "TEACHFILE_TESTING=1 in the environment); remove it")
        force = testing.get("ForceFailure")
        if force not in (None, "refusal", "exception"):
            raise ConfigError("Teachfile.Testing.ForceFailure must be 'refusal' or 'exception'")
        return cls(
            profile=str(section.get("Profile", "teaching")),
            config_dir=Path(section.get("ConfigDirectory", default_cfg)),
            data_dir=Path(section.get("DataDirectory", data_default)),
            pixel_rules=Path(section["PixelRules"]) if section.get("PixelRules") else None,
            ocr_audit=bool(section.get("OcrAudit", False)),
            force_failure=force,
            bypass_reception=bool(testing.get("BypassReception", False)),
            max_refusals=int(section.get("MaxRefusals", 1000)),
            roles=dict(section.get("Roles", {}) or {}),
            users=tuple((config.get("RegisteredUsers") or {}).keys()),
            storage_dir=Path(config.get("StorageDirectory", "OrthancStorage")),
            case_dir=Path(section["CaseDirectory"]) if section.get("CaseDirectory") else None,
            sharing=dict(section.get("Sharing", {}) or {}),
            trusted_capture_senders=_trusted_senders(config, section),
            ingest_uncompressed=bool(config.get("IngestTranscoding"))
            and bool(config.get("IngestTranscodingOfUncompressed", True)),
        )


class Service:
    """Everything the plugin does, minus the Orthanc calls."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        quiet_pydicom()
        self.settings = settings
        env = os.environ if environ is None else environ
        self.key = load_or_create_key(settings.data_dir / "pseudonym.key", env)
        self.key_fingerprint = fingerprint(self.key)
        self.profile: Profile = load_profile(settings.profile, settings.config_dir)
        self.pseudonymizer = Pseudonymizer(self.key)
        self.transcode_policy = TranscodePolicy.from_mapping(self.profile.transcoding)
        self.pixel_policy = load_pixel_policy(
            settings.pixel_rules or settings.config_dir / "pixel-rules.yaml")
        self.cases = CaseStore(settings.case_dir or (
            settings.storage_dir or settings.data_dir) / CASE_DIRECTORY)
        use_store(self.cases)
        self.reception = Reception(Deidentifier(self.profile, self.pseudonymizer),
                                   self.transcode_policy, self.pixel_policy,
                                   settings.force_failure, case_titles=self.cases.title_for,
                                   text_reader=_ocr_gate_reader(self.pixel_policy),
                                   trusted_senders=bool(settings.trusted_capture_senders))
        self.state = NodeState(settings.max_refusals)
        self.roles = Roles.from_config(settings.roles, dict.fromkeys(settings.users))
        self.key_check: KeyCheck | None = None
        if settings.storage_dir is not None:
            self.key_check = check_directory(settings.storage_dir, self.key_fingerprint)
            if not self.key_check.may_receive:
                self.state.count("alarms", KEY_MISMATCH)
                log.error("teachfile: this node's pseudonym key differs from the one recorded "
                          "for the shared storage; every instance will be refused (%s)",
                          self.key_check.detail)
        self.versions: dict[str, str] = {"version": __version__}
        #: Whether Orthanc runs with native/threadstack.c preloaded (set by the entry script):
        #: without it GDCM transcodings on HTTP threads crash Orthanc (README, thread stacks).
        self.thread_stack_preload: bool | None = None
        #: Whether the entry script's calls into Orthanc's REST API wait without the GIL
        #: (native/restcall.c or Python.AllowThreads): otherwise concurrent uploads and
        #: C-STOREs can deadlock Orthanc (README, "A node that keeps answering").
        self.rest_without_gil: bool | None = None
        #: Whether native/restcall.c owns ``/instances`` (Explorer's refused file gets 400/422,
        #: a body above MaxBodyMegabytes 413); set by the entry script.
        self.native_uploads: bool | None = None
        self._lock = threading.Lock()
        #: thread id -> (tombstone bytes, its refusal) awaiting the C-STORE filter, which
        #: Orthanc calls on the same thread right after the received-instance callback.
        self._pending: dict[int, tuple[bytes, Refusal]] = {}
        #: thread id -> (bytes, decision) of a capture stored only if the C-STORE filter sees
        #: a trusted calling AET.
        self._trusted: dict[int, tuple[bytes, Decision]] = {}
        #: thread id -> refusals seen while the plugin itself uploads for an HTTP client, so
        #: they are attributed to that client and reported to it; and that upload's origin.
        self._uploads: dict[int, list[Refusal]] = {}
        self._upload_origin: dict[int, str] = {}
        #: thread id -> Orthanc IDs of the instances stored while the plugin uploads for an
        #: HTTP client (the on-stored callback runs on the uploading thread).
        self._upload_stored: dict[int, list[str]] = {}
        #: Instances stored while a modification job runs (see :meth:`begin_collect`).
        self._collected: list[str] | None = None
        #: thread id -> the instance its callback handed to Orthanc uncompressed, for
        #: :meth:`transcode_ingest` (Orthanc's ingest transcoding runs on the same thread).
        self._deferred: dict[int, deferred.Deferred] = {}
        #: Whether Orthanc asks this node's transcoder for JPEG 2000 (:meth:`enable_deferred`).
        self.ingest_transcoder = False
        #: When the last received-instance callback returned (monotonic seconds): another one
        #: entering right after it was waiting for Orthanc's plugin mutex.
        self._last_exit = 0.0
        #: Deferred encodes running now.
        self._encoding = 0
        #: thread id -> what the reception handed over uncompressed ("native", "deferred", or
        #: "encoded" once the transcoder made it JPEG 2000), read by the C-STORE filter and the
        #: on-stored callback, which Orthanc calls next on the same thread.
        self._handed: dict[int, str] = {}
        self.reception.deflate_kept = settings.ingest_uncompressed

    # -- reception -------------------------------------------------------------------------

    def receive(self, raw: bytes, origin: str) -> tuple[str, bytes | None]:
        """Decide on one instance: ``("modify", bytes)`` or ``("keep", None)`` (test bypass)."""
        tid = threading.get_ident()
        with self._lock:
            self._pending.pop(tid, None)
            self._trusted.pop(tid, None)
            self._handed.pop(tid, None)
            self._deferred.pop(tid, None)
            origin = self._upload_origin.get(tid, origin)
        self.state.count("received")
        if self.settings.bypass_reception:
            return "keep", None
        if self.key_check is not None and not self.key_check.may_receive:
            decision = Decision(False, reason=KEY_MISMATCH)
        else:
            try:
                # Only C-STOREs: their filter refuses what the transcoder could not encode.
                decision = self.reception.process(
                    raw, defer=origin == "dicom" and self._contended())
            finally:
                self._last_exit = time.monotonic()
        if decision.needs_trusted_sender and origin != "dicom":
            decision = _untrusted(decision)  # only a C-STORE has a calling AET to trust
        if decision.store:
            if decision.needs_trusted_sender:
                assert decision.data is not None
                with self._lock:
                    self._trusted[tid] = (decision.data, decision)
            elif decision.pixel_check:
                self.state.count("pixels_checked", decision.pixel_check)
            if self.ingest_transcoder and not decision.transcoded:
                with self._lock:
                    self._handed[tid] = "deferred" if decision.deferred is not None else "native"
            if decision.deferred is not None:
                with self._lock:
                    self._deferred[tid] = decision.deferred
            elif decision.transcoded:
                self.state.count("transcoded", decision.transcode_reason or "default")
            else:
                self.state.count("not_transcoded", decision.transcode_reason or "unknown")
            return "modify", decision.data
        refusal = self._record_refusal(decision, origin)
        if origin == "dicom":
            tomb = make_tombstone()
            with self._lock:
                self._pending[tid] = (tomb, refusal)
            return "modify", tomb
        return "modify", UNSTORABLE

    # -- lossless JPEG 2000 after the callback (reception/deferred.py) -----------------------

    def enable_deferred(self) -> None:
        """Called by the entry script once the node's transcoder is installed and Orthanc's
        ingest transcoding asks it for lossless JPEG 2000: from then on, while instances queue
        for Orthanc's plugin mutex, the reception leaves eligible ones uncompressed and
        :meth:`transcode_ingest` encodes them."""
        self.ingest_transcoder = True

    def _contended(self) -> bool:
        """Defer the encode only when other instances are in flight: one came in right after
        the previous callback returned (it was waiting for Orthanc's plugin mutex), or a
        deferred encode is still running. Alone, over one association, the encode inside the
        callback is faster: it splits the image over the cores while the header is
        de-identified (see Reception._early_encode)."""
        if not self.ingest_transcoder:
            return False
        return self._encoding > 0 or time.monotonic() - self._last_exit < _QUEUED

    def transcode_ingest(self, size: int, same: Any) -> bytes | None:
        """The JPEG 2000 instance Orthanc's ingest transcoding asks this thread's transcoder
        for, if this thread's callback handed those very bytes over (``same(native)`` tells);
        None declines. Failed, the instance stays marked "deferred" and the C-STORE filter
        refuses it: the next transcoder (GDCM) would rewrite its header and break its seal."""
        tid = threading.get_ident()
        with self._lock:
            job = self._deferred.get(tid)
        if job is None or len(job.native) != size or not same(job.native):
            return None
        with self._lock:
            self._deferred.pop(tid, None)
        with self._lock:
            self._encoding += 1
        try:
            # One thread each: several instances are encoded at once by now.
            out = deferred.encode(job, self.transcode_policy, self.reception.verifier, 1)
        finally:
            with self._lock:
                self._encoding -= 1
        if out is None:
            log.error("teachfile: an instance handed over for lossless JPEG 2000 could not be "
                      "encoded exactly; it is refused")
            return None
        with self._lock:
            self._handed[tid] = "encoded"
        self.state.count("transcoded", "lossless-after-callback")
        return out

    def _count_ingest(self, handed: str, stored_syntax: str) -> None:
        """An instance the reception handed over uncompressed that Orthanc stored as JPEG 2000
        anyway (another transcoder took it): never expected, since what is kept is deflated
        and what is deferred is refused when not encoded; counted if it happens."""
        if handed == "native" and stored_syntax == J2K_LOSSLESS:
            self.state.count("transcoded_by_orthanc", "ingest")

    def _record_refusal(self, decision: Decision, origin: str) -> Refusal:
        refusal = Refusal(time.time(), origin, None, decision.reason or "internal-error",
                          decision.uid_hash, decision.detail)
        self.state.refuse(refusal)
        tid = threading.get_ident()
        with self._lock:
            if tid in self._uploads:
                self._uploads[tid].append(refusal)
        log.warning("refused an instance: origin=%s reason=%s uid-hash=%s detail=%s",
                    origin, refusal.reason, refusal.uid_hash, refusal.detail)
        return refusal

    def cstore_filter(self, instance_bytes_size: int, get_bytes: Any, calling_aet: str) -> int:
        """DIMSE status for an instance that reached the C-STORE filter (0 stores it).

        ``get_bytes`` is only called when this thread has a pending tombstone, so accepted
        instances cost one dictionary lookup.
        """
        with self._lock:
            pending = self._pending.pop(threading.get_ident(), None)
            trusted = self._trusted.pop(threading.get_ident(), None)
            unencoded = self._handed.get(threading.get_ident()) == "deferred"
        if unencoded:
            refusal = self._record_refusal(Decision(False, reason="transcode-error",
                                                    detail="deferred encode failed"), "dicom")
            if calling_aet:
                self.state.replace_refusal(refusal, replace(refusal, calling_aet=calling_aet))
            return STATUS_PROCESSING_FAILURE
        if trusted is not None:
            return self._trusted_filter(trusted, instance_bytes_size, get_bytes, calling_aet)
        if pending is None:
            return 0
        tomb, refusal = pending
        if not _is_tombstone(bytes(get_bytes()), tomb):
            # A stale entry from a C-STORE that never reached the filter: not this instance.
            return 0
        if calling_aet:
            self.state.replace_refusal(refusal, replace(refusal, calling_aet=calling_aet))
        if refusal.reason in UNREADABLE:
            return STATUS_CANNOT_UNDERSTAND
        return STATUS_PROCESSING_FAILURE

    def _trusted_filter(self, trusted: tuple[bytes, Decision], size: int, get_bytes: Any,
                        calling_aet: str) -> int:
        """Store a capture the OCR gate would refuse only for a trusted sender; anything
        unexpected (other bytes than prepared) refuses too."""
        data, decision = trusted
        same = size == len(data) and bytes(get_bytes()) == data
        if same and calling_aet.strip() in self.settings.trusted_capture_senders:
            self.state.count("pixels_checked", "trusted-sender")
            return 0
        refusal = self._record_refusal(_untrusted(decision), "dicom")
        if calling_aet:
            self.state.replace_refusal(refusal, replace(refusal, calling_aet=calling_aet))
        return STATUS_PROCESSING_FAILURE

    # -- uploads the plugin performs for HTTP clients ---------------------------------------

    def begin_upload(self, origin: str) -> None:
        tid = threading.get_ident()
        with self._lock:
            self._uploads[tid] = []
            self._upload_origin[tid] = origin

    def end_upload(self) -> list[Refusal]:
        tid = threading.get_ident()
        with self._lock:
            self._upload_origin.pop(tid, None)
            return self._uploads.pop(tid, [])

    def take_upload_stored(self) -> list[str]:
        """Orthanc IDs of what the last upload on this thread really stored.

        Orthanc 1.10 answers ``POST /instances`` from the *received* file, which it parses only
        then: an upload DCMTK cannot read fails after its de-identified instance was stored,
        and the answer's parent IDs are hashes of the received identifiers. The plugin answers
        from this list instead, so the client is told what was stored."""
        with self._lock:
            return self._upload_stored.pop(threading.get_ident(), [])

    # -- second line of defence ---------------------------------------------------------------

    def verify_stored(self, data: bytes, instance_id: str | None = None,
                      origin: str | None = None) -> bool:
        """True when a stored instance carries this node's valid seal; counts it as stored.

        Counting here rather than at reception means ``stored`` is what Orthanc really wrote.
        ``instance_id`` is remembered for the answer of a plugin upload on this thread.
        """
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            ok = bool(seal.verify(ds, self.pseudonymizer))
        except Exception:  # noqa: BLE001 - unreadable means unverified
            ok = False
        if self.ingest_transcoder:
            with self._lock:
                handed = self._handed.pop(threading.get_ident(), None)
            if ok and handed is not None:
                self._count_ingest(handed, str(ds.file_meta.get("TransferSyntaxUID", "")))
        if ok:
            self.state.count("stored")
            if instance_id is not None:
                tid = threading.get_ident()
                with self._lock:
                    if tid in self._uploads:
                        self._upload_stored.setdefault(tid, []).append(instance_id)
                    elif origin in ("rest", "plugin") and self._collected is not None:
                        self._collected.append(instance_id)
        return ok

    # -- modifications Orthanc runs as jobs ---------------------------------------------------

    def begin_collect(self) -> None:
        """Remember what Orthanc stores through its REST API or for a plugin from now on, except
        the uploads the plugin serves: a ``/modify`` or ``/anonymize`` job stores on a job
        thread (with the origin of whoever asked: the plugin, when it asked), so only this tells
        what it stored (the caller runs one modification at a time)."""
        with self._lock:
            self._collected = []

    def end_collect(self) -> list[str]:
        with self._lock:
            out, self._collected = self._collected or [], None
        return out

    def alarm(self, reason: str) -> None:
        self.state.count("alarms", reason)
        log.error("second line of defence: deleted an unverified stored instance (%s)", reason)

    # -- REST ---------------------------------------------------------------------------------

    def profile_json(self) -> dict[str, Any]:
        p = self.profile
        actions = {f"({t >> 16:04X},{t & 0xFFFF:04X})": a for t, a in sorted(p.actions.items())}
        actions.update({f"({k})": a for k, a in sorted(p.repeating.items())})
        return {
            "name": p.name,
            "version": p.version,
            "description": p.description,
            "table_edition": p.table_edition,
            "options": sorted(p.options),
            "date_shift_days": list(p.date_shift_days),
            "method_codes": [{"code": c, "meaning": m} for c, m in p.method_codes()],
            "safe_private": [f"{s.group:04X},{s.creator},{s.element:02X}" for s in p.safe_private],
            "actions": actions,
            "transcoding": _plain(p.transcoding),
        }

    def status(self) -> dict[str, Any]:
        return {
            **self.versions,
            "profile": {"name": self.profile.name, "version": self.profile.version},
            "key_fingerprint": self.key_fingerprint,
            "key_check": self.key_check.as_json() if self.key_check else None,
            "lossless_encoder": lossless_encoder(self.transcode_policy),
            "verification": self.reception.verifier.status(),
            "counters": self.state.snapshot(),
            "uptime_seconds": round(time.time() - self.state.started, 1),
            "thread_stack_preload": self.thread_stack_preload,
            "rest_calls_without_gil": self.rest_without_gil,
            "native_uploads": self.native_uploads,
            "sharing": {
                "public": bool(self.settings.sharing.get("Public", False)),
                "https": bool(self.settings.sharing.get("Https", False)),
                "dicom_tls": bool(self.settings.sharing.get("DicomTls", False)),
                "tls_fingerprint_sha256": self.settings.sharing.get("TlsFingerprint"),
            },
        }


def _untrusted(decision: Decision) -> Decision:
    """The refusal a capture gets when no trusted sender vouches for it."""
    return Decision(False, reason="burned-in", detail=decision.detail,
                    uid_hash=decision.uid_hash)


def _trusted_senders(config: Mapping[str, Any], section: Mapping[str, Any]) -> tuple[str, ...]:
    """``Teachfile.TrustedCaptureSenders``: AETs of configured modalities only. A calling AET
    is only a name a sender claims; with ``DicomCheckModalityHost`` Orthanc also checks that
    it calls from the modality's address, so the node warns when that check is off."""
    raw = section.get("TrustedCaptureSenders") or []
    if not isinstance(raw, list) or not all(isinstance(a, str) and a.strip() for a in raw):
        raise ConfigError("Teachfile.TrustedCaptureSenders must be a list of AETs")
    known = set()
    for m in (config.get("DicomModalities") or {}).values():
        if isinstance(m, list) and m:
            known.add(str(m[0]))
        elif isinstance(m, Mapping) and m.get("AET"):
            known.add(str(m["AET"]))
    unknown = sorted({a.strip() for a in raw} - known)
    if unknown:
        raise ConfigError("Teachfile.TrustedCaptureSenders names AETs that are not configured "
                          "in DicomModalities: " + ", ".join(unknown))
    if raw and not config.get("DicomCheckModalityHost", False):
        log.warning("teachfile: TrustedCaptureSenders without DicomCheckModalityHost: any "
                    "host may claim a trusted AET")
    return tuple(a.strip() for a in raw)


def _ocr_gate_reader(policy: PixelPolicy) -> Any:
    """The OCR gate's reader when the pixel rules enable it and tesseract is installed."""
    from ..reception.ocr import gate_words, ocr_available

    if not policy.ocr_gate.enabled:
        return None
    if not ocr_available():
        log.warning("teachfile: the pixel rules enable ocr_gate but tesseract is not installed "
                    "(Debian package tesseract-ocr): images it would read stay refused")
        return None
    return gate_words


def quiet_pydicom() -> None:
    """pydicom's validation warnings quote the offending value (a name, a date): inside the
    node they must not reach stderr or Orthanc's log. Values are not validated on reading;
    what de-identification writes is checked when it is written."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logger = logging.getLogger("pydicom")
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False


def _plain(value: Any) -> Any:
    """Read-only mappings from the profile as JSON-ready data."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _is_tombstone(data: bytes, tomb: bytes) -> bool:
    """Whether the filter's instance is this tombstone: its exact bytes, or those bytes as
    Orthanc's ingest transcoding rewrote them (another transfer syntax; its unique UID stays)."""
    if data == tomb:
        return True
    uid = _tombstone_uid(tomb)
    return uid is not None and uid in data


def _tombstone_uid(tomb: bytes) -> bytes | None:
    at = tomb.find(b"TEACHFILE-REFUSED")
    start = tomb.find(b"2.25.")
    if at < 0 or start < 0:
        return None
    end = start + 5
    while end < len(tomb) and tomb[end:end + 1].isdigit():
        end += 1
    return tomb[start:end]


def make_tombstone() -> bytes:
    """A minimal, PHI-free instance that stands in for a refused one until the C-STORE filter
    refuses it; unique so the filter can tell it from any real instance."""
    import secrets

    uid = "2.25." + str(int.from_bytes(secrets.token_bytes(15), "big"))
    ds = Dataset()
    ds.SOPClassUID = _TOMBSTONE_CLASS
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.PatientID = "TEACHFILE-REFUSED"
    ds.file_meta = FileMetaDataset()
    # The syntax the node stores, though it holds no pixel data (its elements are explicit VR
    # little endian either way): Orthanc's ingest transcoding then leaves it alone instead of
    # asking GDCM, which fails on it and logs an error after every refusal.
    ds.file_meta.TransferSyntaxUID = UID(J2K_LOSSLESS)
    ds.file_meta.MediaStorageSOPClassUID = UID(_TOMBSTONE_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


#: Orthanc error codes that blame the upload, not the server: ParameterOutOfRange,
#: BadParameterType, BadRequest, BadFileFormat, InexistentTag (OrthancPluginErrorCode).
ORTHANC_INPUT_ERRORS = frozenset({3, 5, 8, 15, 21})


def refusal_body(refusals: list[Refusal], stored: Any = None,
                 orthanc_error: int | None = None) -> tuple[int, bytes]:
    """HTTP status and JSON body for an upload that was not (wholly) stored.

    ``stored`` is what Orthanc answered for the instances it did store (a ZIP upload can be
    partly refused). Without a refusal, Orthanc itself failed: 400 when its error blames the
    upload (``orthanc_error`` in :data:`ORTHANC_INPUT_ERRORS`), 500 otherwise.
    """
    if not refusals:
        unreadable = orthanc_error in ORTHANC_INPUT_ERRORS
        body: dict[str, Any] = {
            "Status": "Failure", "HttpStatus": 400 if unreadable else 500,
            "Message": "Orthanc could not read the upload as DICOM" if unreadable
            else "Orthanc could not store the upload; see its log"}
        return body["HttpStatus"], json.dumps(body, indent=2).encode()
    status = 400 if all(r.reason in UNREADABLE for r in refusals) else 422
    body = {
        "Status": "Refused" if stored is None else "PartlyRefused",
        "HttpStatus": status,
        "Message": "the node refused the upload: it could not make it safe to store"
        if stored is None else "the node refused part of the upload; the rest is stored",
        "Refusals": [
            {**r.as_json(), "explanation": REASONS.get(r.reason, "")} for r in refusals
        ],
    }
    if stored is not None:
        body["Stored"] = stored
    return status, json.dumps(body, indent=2).encode()


def stored_answer(get: Any, instance_ids: list[str]) -> Any:
    """Orthanc's answer to ``POST /instances`` rebuilt from what was stored: ``get`` is the
    internal REST API's GET (bytes); one instance gives an object, several a list.

    Two small GETs per instance: the study's JSON lists its series only. ``/series/{id}``
    lists every instance of the series, so asking for it made each upload into a series of
    n instances build and parse n identifiers (a 10,000-slice series: ~450 KB per upload)."""
    out = []
    for iid in instance_ids:
        inst = json.loads(get(f"/instances/{iid}"))
        study = json.loads(get(f"/instances/{iid}/study"))
        out.append({"ID": iid, "Path": f"/instances/{iid}", "Status": "Success",
                    "ParentSeries": inst["ParentSeries"], "ParentStudy": study["ID"],
                    "ParentPatient": study["ParentPatient"]})
    return out[0] if len(out) == 1 else out


#: The levels a modification names its result at.
_PARENT = ("patients", "studies", "series")


def modification_answer(get: Any, level: str, stored_ids: list[str],
                        anonymization: bool) -> dict[str, Any] | None:
    """Orthanc's answer to ``POST /{level}/{id}/modify`` or ``/anonymize``, rebuilt from what
    the job stored; None unless it stored instances under exactly one new resource.

    Why: Orthanc's job names its result by the identifiers it generated, which the node's
    pseudonyms replace (1.10 names a resource that does not exist, 1.13 answers 404). One GET
    per instance, then one per distinct series and study: a study's instances share them."""
    if level not in _PARENT or not stored_ids:
        return None
    series = {json.loads(get(f"/instances/{i}"))["ParentSeries"] for i in stored_ids}
    studies = {json.loads(get(f"/series/{s}"))["ParentStudy"] for s in series}
    patients = {json.loads(get(f"/studies/{s}"))["ParentPatient"] for s in studies}
    parents = {"series": series, "studies": studies, "patients": patients}[level]
    if len(parents) != 1 or len(patients) != 1:
        return None
    (new_id,), (patient,) = parents, patients
    return {"Description": "REST API", "FailedInstancesCount": 0, "ID": new_id,
            "InstancesCount": len(stored_ids), "IsAnonymization": anonymization,
            "Path": f"/{level}/{new_id}", "PatientID": patient,
            "Type": {"patients": "Patient", "studies": "Study", "series": "Series"}[level]}
