"""Counters and the bounded refusal log: what the node tells its operator.

Orthanc calls the plugin from many threads at once, so both are guarded by one lock. Nothing in
here may hold an identifying value: refusals carry a reason code, an origin, the calling AET
(an address of a device, not of a person) and a keyed hash of the SOP Instance UID.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Refusal:
    time: float
    origin: str
    calling_aet: str | None
    reason: str
    uid_hash: str | None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))
        return out


class NodeState:
    """Thread-safe counters (by name and reason) and the most recent refusals."""

    def __init__(self, max_refusals: int = 1000) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._by_reason: dict[str, Counter[str]] = {}
        self._refusals: deque[Refusal] = deque(maxlen=max_refusals)
        self.started = time.time()

    def count(self, name: str, reason: str | None = None, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n
            if reason is not None:
                self._by_reason.setdefault(name, Counter())[reason] += n

    def refuse(self, refusal: Refusal) -> None:
        with self._lock:
            self._counters["refused"] += 1
            self._by_reason.setdefault("refused", Counter())[refusal.reason] += 1
            self._refusals.append(refusal)

    def replace_refusal(self, old: Refusal, new: Refusal) -> None:
        """Complete a logged refusal with what was learnt later (the calling AET)."""
        with self._lock:
            for i in range(len(self._refusals) - 1, -1, -1):
                if self._refusals[i] is old:
                    self._refusals[i] = new
                    return

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                name: self._counters.get(name, 0)
                for name in ("received", "stored", "refused", "transcoded", "alarms")
            }
            for name, extra in self._counters.items():
                out.setdefault(name, extra)
            for name, reasons in self._by_reason.items():
                out[f"{name}_by_reason"] = dict(sorted(reasons.items()))
            out.setdefault("refused_by_reason", {})
            return out

    def refusals(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._refusals)
        items.reverse()  # newest first
        if limit is not None:
            items = items[:limit]
        return [r.as_json() for r in items]
