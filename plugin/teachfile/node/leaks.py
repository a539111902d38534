"""Undo the references Orthanc's Python plugin 4.0 leaks on every HTTP request.

Measured on Debian's Orthanc 1.10.1 + Python plugin 4.0: 2,000 ``POST /instances`` of a 39 KB
CT grew the process by 113 MB, linearly, and a 200 MB body stayed resident after its request.
The cause is in the plugin's C++ (``RestCallbacks.cpp`` and ``IncomingHttpRequestFilter.cpp``
of orthanc-python 4.0): each keyword argument handed to a Python callback is created with one
reference, put into the ``kwargs`` dict (which takes a second one) and never released, so when
the dict dies every object keeps a count of one and is never freed. In a REST callback that is
the ``body`` bytes (the whole upload), the ``method`` string, the ``groups`` tuple, the
``headers`` dict and each header value, the ``get`` dict and each of its values; in the HTTP
request filter the ``ip`` string, the ``headers`` and ``get`` dicts and their values. (The
plugin's NEWS calls it a leak "when a python script calls orthanc.RestApiPost() and sibling
methods"; ``RestApiPost`` itself releases its buffer.) Plugin 4.1 fixed both files.

On a leaking plugin the entry script calls :func:`release_rest_kwargs` /
:func:`release_filter_kwargs` once per callback, after the callback is done with its arguments:
each leaked reference is dropped exactly once, so the objects are freed when the plugin drops
its dict, as on 4.1. Whether the plugin leaks is decided by a feature it gained in the same
release (:func:`plugin_leaks_kwargs`), never guessed from reference counts.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

#: Py_DecRef of the running interpreter (the embedded one inside Orthanc).
_DecRef = Callable[[Any], None]


def _py_decref() -> _DecRef:
    fn = ctypes.pythonapi.Py_DecRef
    fn.argtypes = [ctypes.py_object]
    fn.restype = None
    return fn


def plugin_leaks_kwargs(orthanc_module: object) -> bool:
    """True for Python plugins older than 4.1, which leak every callback's keyword arguments.

    4.1 both fixed the leak and added ``RegisterStorageCommitmentScpCallback`` (its NEWS): a
    module without that function is 4.0 or older.
    """
    return not hasattr(orthanc_module, "RegisterStorageCommitmentScpCallback")


class KwargsReleaser:
    """Drops, once per callback, the references a leaking plugin never releases."""

    def __init__(self, enabled: bool, decref: _DecRef | None = None) -> None:
        self.enabled = enabled
        self._decref = decref if decref is not None else (_py_decref() if enabled else None)
        self.released = 0

    def _drop(self, obj: object) -> None:
        assert self._decref is not None
        self._decref(obj)
        self.released += 1

    def _drop_dict(self, value: object) -> None:
        """A leaked dict and each of its leaked values (the keys are managed correctly)."""
        if isinstance(value, dict):
            for item in list(value.values()):
                self._drop(item)
            self._drop(value)

    def rest_callback(self, request: Mapping[str, Any]) -> None:
        """After a ``RegisterRestCallback`` callback, with its ``**request``."""
        if not self.enabled:
            return
        for name in ("method", "groups", "body"):
            if name in request:
                self._drop(request[name])
        for name in ("headers", "get"):
            self._drop_dict(request.get(name))

    def http_filter(self, request: Mapping[str, Any]) -> None:
        """After a ``RegisterIncomingHttpRequestFilter`` callback, with its ``**request``.

        ``method`` is a small int (a shared cached object): its leaked count is harmless and is
        left alone.
        """
        if not self.enabled:
            return
        if "ip" in request:
            self._drop(request["ip"])
        for name in ("headers", "get"):
            self._drop_dict(request.get(name))
