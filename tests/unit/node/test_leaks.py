"""The release of plugin 4.0's leaked callback arguments, on a simulated leak (no Orthanc)."""

from __future__ import annotations

import ctypes
import sys
import types

from teachfile.node.leaks import KwargsReleaser, plugin_leaks_kwargs

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]


def _leak(obj: object) -> None:
    """What plugin 4.0 does to each argument: one reference too many."""
    _incref(obj)


def _rest_kwargs() -> dict[str, object]:
    kw: dict[str, object] = {
        "method": "".join(["PO", "ST"]), "groups": tuple([str(1)]),
        "headers": {"content-type": "".join(["application/", "dicom"])},
        "get": {"limit": "".join(["1", "0"])}, "body": bytes(bytearray(b"DICM" * 1000)),
    }
    for name in ("method", "groups", "body"):
        _leak(kw[name])
    for name in ("headers", "get"):
        d = kw[name]
        assert isinstance(d, dict)
        _leak(d)
        for v in d.values():
            _leak(v)
    return kw


def _counts(kw: dict[str, object]) -> list[int]:
    out = []
    for name in ("method", "groups", "body", "headers", "get"):
        out.append(sys.getrefcount(kw[name]))
        v = kw[name]
        if isinstance(v, dict):
            out.extend(sys.getrefcount(x) for x in v.values())
    return out


def test_every_leaked_reference_of_a_rest_callback_is_dropped_once() -> None:
    kw = _rest_kwargs()
    before = _counts(kw)
    r = KwargsReleaser(True)
    r.rest_callback(kw)
    assert _counts(kw) == [c - 1 for c in before]
    assert r.released == 7


def test_filter_arguments_are_released_but_not_the_method() -> None:
    kw: dict[str, object] = {"method": 2, "ip": "".join(["127.", "0.0.1"]),
                             "headers": {"authorization": "".join(["Basic ", "eA=="])}}
    _leak(kw["ip"])
    headers = kw["headers"]
    assert isinstance(headers, dict)
    _leak(headers)
    _leak(headers["authorization"])
    ip_before, h_before = sys.getrefcount(kw["ip"]), sys.getrefcount(headers)
    KwargsReleaser(True).http_filter(kw)
    ip_after, h_after = sys.getrefcount(kw["ip"]), sys.getrefcount(headers)
    assert (ip_after, h_after) == (ip_before - 1, h_before - 1)


def test_nothing_is_touched_on_a_plugin_that_does_not_leak() -> None:
    calls: list[object] = []
    r = KwargsReleaser(False, decref=calls.append)
    r.rest_callback({"body": b"x", "headers": {"a": "b"}})
    r.http_filter({"ip": "127.0.0.1"})
    assert calls == [] and r.released == 0


def test_the_leak_is_detected_by_the_feature_that_came_with_its_fix() -> None:
    old = types.SimpleNamespace(RegisterRestCallback=object())
    new = types.SimpleNamespace(RegisterRestCallback=object(),
                                RegisterStorageCommitmentScpCallback=object())
    assert plugin_leaks_kwargs(old) is True
    assert plugin_leaks_kwargs(new) is False
