"""Keyed, deterministic pseudonyms: the same input and key always give the same output.

Determinism without state is what lets a series sent days after its study land in the same
pseudonymous study, and lets several nodes sharing a key agree. Every value is an HMAC-SHA256
under the node key with a per-purpose domain, so pseudonyms cannot be reversed by hashing a
dictionary of candidate identifiers (unlike the unkeyed MD5 of older tools).

UIDs are *self-authenticating*: the 128-bit integer of "2.25.<int>" is 96 bits of HMAC of the
original UID followed by a 32-bit HMAC of those 96 bits. :meth:`Pseudonymizer.uid` recognises its
own output and returns it unchanged, which makes re-de-identifying the node's output a no-op for
UIDs while any foreign UID added later (say by an Orthanc /modify) is still replaced.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from ..errors import ConfigError

_UID_ROOT = "2.25."
_CACHE = 65536


def fingerprint(key: bytes) -> str:
    """A short public name for the key: nodes that share a key show the same fingerprint."""
    return hashlib.sha256(b"teachfile-key-fingerprint\0" + key).hexdigest()[:16]


class Pseudonymizer:
    """All keyed derivations of one node key. Results are cached (bounded LRU) per instance."""

    def __init__(self, key: bytes, cache_size: int = _CACHE) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise ConfigError("the pseudonym key must be at least 128 bits")
        self._base = hmac.new(bytes(key), digestmod=hashlib.sha256)
        self._fingerprint = fingerprint(bytes(key))
        # Per-instance caches, so a Pseudonymizer with another key never sees these results.
        self._uid_c = lru_cache(maxsize=cache_size)(self._uid)
        self._own_c = lru_cache(maxsize=cache_size)(self._is_own_uid)
        self._pid_c = lru_cache(maxsize=cache_size)(self._patient_id)
        self._pname_c = lru_cache(maxsize=cache_size)(self._patient_name)
        self._offset_c = lru_cache(maxsize=cache_size)(self._date_offset)

    def uid(self, u: str) -> str:
        """The pseudonymous UID for ``u``: "2.25.<int>" (at most 44 characters); own UIDs
        come back unchanged."""
        return self._uid_c(u)

    def is_own_uid(self, u: str) -> bool:
        """Whether ``u`` is a UID this key produced (false positives: 1 in 2**32)."""
        return self._own_c(u)

    def patient_id(self, pid: str) -> str:
        """A stable pseudonymous Patient ID: "TF" and 16 hex digits."""
        return self._pid_c(pid)

    def patient_name(self, pid: str) -> str:
        """A stable, readable pseudonymous Patient Name such as "TF^A1B2C3D4"."""
        return self._pname_c(pid)

    def date_offset_days(self, pid: str, lo: int, hi: int) -> int:
        """Days to add to every date of this patient: in [lo, hi], never 0."""
        return self._offset_c(pid, lo, hi)

    @property
    def fingerprint(self) -> str:
        """The key's public name (see :func:`fingerprint`)."""
        return self._fingerprint

    def mac(self, domain: bytes, *parts: str | bytes) -> bytes:
        """HMAC-SHA256 of ``parts`` under ``domain``; parts are length-prefixed so none can
        be shifted into its neighbour to forge a collision."""
        h = self._base.copy()
        h.update(domain + b"\0")
        for p in parts:
            b = p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p
            h.update(len(b).to_bytes(4, "big") + b)
        return h.digest()

    def _uid(self, u: str) -> str:
        u = u.strip(" \0")
        if self._own_c(u):
            return u
        body = int.from_bytes(self.mac(b"uid", u)[:12], "big")
        return f"{_UID_ROOT}{(body << 32) | self._uid_check(body)}"

    def _uid_check(self, body: int) -> int:
        return int.from_bytes(self.mac(b"uid-check", body.to_bytes(12, "big"))[:4], "big")

    def _is_own_uid(self, u: str) -> bool:
        if not u.startswith(_UID_ROOT) or len(u) > 44:
            return False
        digits = u[len(_UID_ROOT):]
        if not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
            return False
        n = int(digits)
        if n >> 128:
            return False
        return self._uid_check(n >> 32) == n & 0xFFFFFFFF

    def _patient_id(self, pid: str) -> str:
        return "TF" + self.mac(b"patient-id", pid).hex()[:16].upper()

    def _patient_name(self, pid: str) -> str:
        return "TF^" + self.mac(b"patient-name", pid).hex()[:8].upper()

    def _date_offset(self, pid: str, lo: int, hi: int) -> int:
        # Never 0: a zero shift would leave the real dates in place.
        if lo > hi:
            raise ValueError("lo must not exceed hi")
        n = int.from_bytes(self.mac(b"date-offset", pid)[:8], "big")
        off = lo + n % (hi - lo + 1)
        if off == 0:
            off = hi if hi != 0 else lo
        return off

    def log_hash(self, value: str | bytes) -> str:
        """A short keyed hash that lets logs correlate events without showing the value."""
        return self.mac(b"log", value).hex()[:12]
