"""Keyed pseudonyms: deterministic, key-dependent, valid, idempotent for UIDs."""

from __future__ import annotations

import re

import pytest

from teachfile.errors import ConfigError
from teachfile.reception.pseudonym import Pseudonymizer

KEY, OTHER = b"k" * 32, b"o" * 32
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


@pytest.mark.parametrize("u", ["1.2.3", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322", "9" * 64])
def test_uid_valid_deterministic_keyed(u: str) -> None:
    a, b = Pseudonymizer(KEY), Pseudonymizer(KEY)
    out = a.uid(u)
    assert UID_RE.match(out) and len(out) <= 64
    assert out == b.uid(u) != Pseudonymizer(OTHER).uid(u)
    assert a.uid(out) == out and a.is_own_uid(out)
    assert not Pseudonymizer(OTHER).is_own_uid(out)


def test_uids_distinct() -> None:
    p = Pseudonymizer(KEY)
    outs = {p.uid(f"1.2.3.{i}") for i in range(2000)}
    assert len(outs) == 2000


def test_patient_pseudonyms() -> None:
    p = Pseudonymizer(KEY)
    assert p.patient_id("123") == Pseudonymizer(KEY).patient_id("123") != p.patient_id("124")
    assert re.match(r"^TF[0-9A-F]{16}$", p.patient_id("123"))
    assert re.match(r"^TF\^[0-9A-F]{8}$", p.patient_name("123"))
    assert "123" not in p.patient_id("123") + p.log_hash("123")


@pytest.mark.parametrize("lo,hi", [(-1095, -366), (-10, 10), (0, 5), (-3, -3)])
def test_date_offset_range_never_zero(lo: int, hi: int) -> None:
    p = Pseudonymizer(KEY)
    for i in range(200):
        off = p.date_offset_days(f"p{i}", lo, hi)
        assert lo <= off <= hi and off != 0


def test_short_key_refused() -> None:
    with pytest.raises(ConfigError):
        Pseudonymizer(b"short")


def test_fingerprint_public() -> None:
    assert Pseudonymizer(KEY).fingerprint == Pseudonymizer(KEY).fingerprint
    assert Pseudonymizer(KEY).fingerprint != Pseudonymizer(OTHER).fingerprint
    assert KEY.hex() not in Pseudonymizer(KEY).fingerprint
