"""Finding cases across the network: the pure half of ``GET /teachfile/search``.

Patterns, case-insensitive matching, one C-FIND association per node, a fan-out bounded in
time, and the merge of every node's answers by Study Instance UID. Nothing here calls Orthanc.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

QUERY_MAX = 64
MAX_RESULTS = 500

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
#: The study-level keys asked of remote nodes; anything else they answer (patient names from a
#: non-teachfile PACS) is dropped.
ANSWER_KEYS = ("StudyInstanceUID", "StudyDescription", "StudyDate", "ModalitiesInStudy",
               "NumberOfStudyRelatedInstances")


def parse_query(raw: str | None) -> str:
    q = " ".join((raw or "").split())
    if not q.strip("*?"):
        raise ValueError("q must contain at least one character besides wildcards")
    if len(q) > QUERY_MAX or _FORBIDDEN.search(q):
        raise ValueError(f"q must be at most {QUERY_MAX} characters, without control "
                        "characters or backslashes")
    return q


def cfind_patterns(q: str) -> list[str]:
    """Study Description patterns for a case-insensitive search over C-FIND.

    Orthanc (like most PACS) matches LO attributes case-sensitively, and DICOM wildcards have no
    character classes, so the usual spellings are asked for one after the other; the answers are
    then filtered with :func:`text_matches`.
    """
    variants = (q, q.lower(), q.capitalize(), q.title(), q.upper())
    out: list[str] = []
    for v in variants:
        pattern = f"*{v}*"
        if pattern not in out:
            out.append(pattern)
    return out


def _wildcard_regex(q: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in q.casefold()]
    return re.compile("".join(parts), re.S)


def text_matches(q: str, text: str) -> bool:
    """``*q*`` against ``text`` with DICOM wildcards, ignoring case."""
    return bool(text) and _wildcard_regex(q).search(text.casefold()) is not None


@dataclass(frozen=True)
class Hit:
    """One study as one node answered it; only PHI-free study-level attributes."""

    node: str
    aet: str
    study_instance_uid: str
    title: str = ""
    study_date: str = ""
    modalities: tuple[str, ...] = ()
    instances: int | None = None
    local_study: str | None = None
    #: The node's own case record (JSON), for local hits only.
    record: Mapping[str, Any] | None = None


def hit_from_answer(node: str, aet: str, answer: Mapping[str, Any]) -> Hit | None:
    """A C-FIND answer (keyword -> text) as a Hit; None without a Study Instance UID."""
    uid = str(answer.get("StudyInstanceUID") or "").strip()
    if not uid:
        return None
    mods = answer.get("ModalitiesInStudy") or ""
    if isinstance(mods, list):
        mods = "\\".join(str(m) for m in mods)
    try:
        count: int | None = int(str(answer.get("NumberOfStudyRelatedInstances")).strip())
    except ValueError:
        count = None
    return Hit(node, aet, uid, str(answer.get("StudyDescription") or "").strip(),
               str(answer.get("StudyDate") or "").strip(),
               tuple(m for m in str(mods).split("\\") if m), count)


def merge_hits(hits: Iterable[Hit], limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
    """One result per Study Instance UID with every node that holds it; the local node first,
    then the others by name."""
    by_uid: dict[str, list[Hit]] = {}
    for h in hits:
        by_uid.setdefault(h.study_instance_uid, []).append(h)
    results: list[dict[str, Any]] = []
    for uid, group in by_uid.items():
        group.sort(key=lambda h: (h.local_study is None, h.node))
        local = next((h for h in group if h.local_study is not None), None)
        first = local or group[0]
        record = next((h.record for h in group if h.record is not None), None)
        counts = [h.instances for h in group if h.instances is not None]
        results.append({
            "study_instance_uid": uid,
            "title": first.title or next((h.title for h in group if h.title), ""),
            "study_date": first.study_date,
            "modalities": sorted({m for h in group for m in h.modalities}),
            "instances": max(counts) if counts else None,
            "sources": [{"node": h.node, "aet": h.aet} for h in
                        {(h.node, h.aet): h for h in group}.values()],
            "local_study": local.local_study if local else None,
            "case": dict(record) if record else None,
        })
    results.sort(key=lambda r: (r["title"].casefold(), r["study_instance_uid"]))
    return results[:limit]


@dataclass(frozen=True)
class NodeOutcome:
    status: str  # ok | unreachable | refused | timeout | error
    hits: tuple[Hit, ...] = ()
    detail: str = ""


def classify_failure(exc: BaseException) -> NodeOutcome:
    """How a failed remote query is reported; the message is Orthanc's error description
    (a fixed vocabulary), never data."""
    text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    low = text.lower()
    if "timeout" in low or "timed out" in low:
        return NodeOutcome("timeout", (), text)
    if "network" in low or "connect" in low or "association" in low:
        return NodeOutcome("unreachable", (), text)
    return NodeOutcome("error", (), text)


def fan_out(tasks: Mapping[str, Callable[[], Sequence[Hit]]],
            deadline: float) -> dict[str, NodeOutcome]:
    """Run every node's query at once and wait at most ``deadline`` seconds in all.

    A node that has not answered by then is reported as a timeout; its thread is left to
    finish (Orthanc's own per-association timeout ends it) and its late answer is dropped.
    """
    answers: queue.Queue[tuple[str, NodeOutcome]] = queue.Queue()

    def run(name: str, task: Callable[[], Sequence[Hit]]) -> None:
        try:
            answers.put((name, NodeOutcome("ok", tuple(task()))))
        except NodeFailure as exc:
            answers.put((name, NodeOutcome(exc.status, (), str(exc))))
        except Exception as exc:  # noqa: BLE001 - a failing node is reported, not fatal
            answers.put((name, classify_failure(exc)))

    for name, task in tasks.items():
        threading.Thread(target=run, args=(name, task), daemon=True,
                         name="teachfile-search").start()
    out: dict[str, NodeOutcome] = {}
    end = time.monotonic() + deadline
    while len(out) < len(tasks):
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        try:
            name, outcome = answers.get(timeout=remaining)
        except queue.Empty:
            break
        out[name] = outcome
    for name in tasks:
        out.setdefault(name, NodeOutcome("timeout", (), f"no answer within {deadline:g} s"))
    return out


class NodeFailure(Exception):
    """A node that could not be queried, with the status the search reports."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True)
class Peer:
    """A configured DICOM node, from Orthanc's ``/modalities?expand``."""

    name: str
    aet: str
    host: str
    port: int


def cfind_study_descriptions(peer: Peer, calling_aet: str, q: str,
                             timeout: float) -> list[Hit]:
    """C-FIND ``peer`` for studies whose description contains ``q``, on one association.

    pynetdicom rather than Orthanc's ``/modalities/{name}/query``: the Python plugin holds the
    interpreter lock during every call into Orthanc, so a slow node would stall the whole
    node's Python (the HTTP filter included) and the per-node threads would run one at a time.
    Sockets release the lock, so nodes are really queried at once, each with its own timeout.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # built at import time
        StudyRootQueryRetrieveInformationModelFind as FIND,
    )

    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(FIND)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    started = time.monotonic()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise NodeFailure("refused", "the node rejected the association")
        if time.monotonic() - started >= timeout * 0.9:
            raise NodeFailure("timeout", f"no association within {timeout:g} s")
        raise NodeFailure("unreachable", "no association (connection refused or aborted)")
    hits: dict[str, Hit] = {}
    try:
        for pattern in cfind_patterns(q):
            ident = Dataset()
            ident.SpecificCharacterSet = "ISO_IR 192"
            ident.QueryRetrieveLevel = "STUDY"
            for key in ANSWER_KEYS:
                setattr(ident, key, "")
            ident.StudyDescription = pattern
            asked = time.monotonic()
            for status, answer in assoc.send_c_find(ident, FIND):
                if status is None or "Status" not in status:
                    if time.monotonic() - asked >= timeout * 0.9:
                        raise NodeFailure("timeout", f"no C-FIND answer within {timeout:g} s")
                    raise NodeFailure("refused", "the node aborted the C-FIND (does it know "
                                      "this node's AET?)")
                if int(status.Status) not in (0xFF00, 0xFF01) or answer is None:
                    if int(status.Status) != 0:
                        raise NodeFailure("error", f"C-FIND failed: 0x{int(status.Status):04X}")
                    continue
                values = {k: _element_text(answer, k) for k in ANSWER_KEYS}
                hit = hit_from_answer(peer.name, peer.aet, values)
                if hit and text_matches(q, hit.title):
                    hits.setdefault(hit.study_instance_uid, hit)
    finally:
        if assoc.is_established:
            assoc.release()
    return list(hits.values())


def _element_text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def peers_from_modalities(modalities: Mapping[str, Any]) -> list[Peer]:
    out = []
    for name, m in sorted(modalities.items()):
        if isinstance(m, Mapping):
            out.append(Peer(name, str(m.get("AET", "")), str(m.get("Host", "")),
                            int(m.get("Port", 104))))
    return out
