"""Orthanc's REST API without the GIL, through ``native/restcall.c`` (Python plugin 4.0).

Python plugin 4.0 holds the GIL while a Python thread waits inside ``orthanc.RestApiPost``; when
that call stores an instance it also waits for Orthanc's plugin mutex, which a C-STORE (or
another upload whose encoder released the GIL) may hold while it waits for the GIL: the node
deadlocks (measured on Orthanc 1.10.1: 3 REST uploaders + 3 C-STORE associations stopped for
good after 16 uploads). A ctypes call releases the GIL, so calling the SDK through the native
plugin waits for the mutex without it. Plugin 4.3 and later release it themselves
(``Python.AllowThreads``), and the node uses their own wrappers there.

The class mirrors the ``orthanc`` module's four functions, so the entry script swaps one for the
other; a failure raises :class:`RestCallError` whose first argument is Orthanc's error code, as
``orthanc.OrthancException`` does.
"""

from __future__ import annotations

import atexit
import ctypes
from collections.abc import Callable
from pathlib import Path

LIBRARY_NAME = "teachfile-restcall.so"
_GET, _POST, _PUT, _DELETE = 0, 1, 2, 3


class _Buffer(ctypes.Structure):
    """``OrthancPluginMemoryBuffer``."""

    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_uint32)]


#: ``teachfile_transcoder_fn`` of native/restcall.c: (buffer, size, sink) -> 0 when delivered.
_TRANSCODER = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint64,
                               ctypes.c_void_p)


class RestCallError(Exception):
    """Orthanc refused a call; ``args[0]`` is its error code (``OrthancPluginErrorCode``)."""


class RestCall:
    """``RestApiGet``/``Post``/``Put``/``Delete`` of Orthanc's built-in API, GIL released."""

    def __init__(self, library: Path | str) -> None:
        lib = ctypes.CDLL(str(library))  # the object Orthanc loaded: same path, same handle
        lib.teachfile_restcall_ready.restype = ctypes.c_int32
        lib.teachfile_restcall.argtypes = [ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p,
                                           ctypes.c_uint32, ctypes.POINTER(_Buffer)]
        lib.teachfile_restcall.restype = ctypes.c_int32
        lib.teachfile_restcall_free.argtypes = [ctypes.POINTER(_Buffer)]
        lib.teachfile_restcall_free.restype = None
        if lib.teachfile_restcall_ready() != 1:
            raise RuntimeError(f"{LIBRARY_NAME} is not loaded by Orthanc (not in its Plugins)")
        self._lib = lib

    def _call(self, method: int, uri: str, body: bytes = b"") -> bytes:
        if len(body) >= 1 << 32:
            raise RestCallError(13, "body above 4 GiB")  # NotEnoughMemory, as Orthanc says
        answer = _Buffer()
        code = self._lib.teachfile_restcall(method, uri.encode("utf-8"), body, len(body),
                                            ctypes.byref(answer))
        try:
            if code != 0:
                raise RestCallError(int(code), f"Orthanc error {code}")
            return ctypes.string_at(answer.data, answer.size) if answer.data else b""
        finally:
            self._lib.teachfile_restcall_free(ctypes.byref(answer))

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802 - the orthanc module's names
        return self._call(_GET, uri)

    def RestApiPost(self, uri: str, body: bytes) -> bytes:  # noqa: N802
        return self._call(_POST, uri, bytes(body))

    def RestApiPut(self, uri: str, body: bytes) -> bytes:  # noqa: N802
        return self._call(_PUT, uri, bytes(body))

    def RestApiDelete(self, uri: str) -> None:  # noqa: N802
        self._call(_DELETE, uri)

    def install_transcoder(self, encode: Callable[[int, Callable[[bytes], bool]], bytes | None]
                           ) -> bool:
        """Make ``encode`` the native plugin's ingest transcoder (see native/restcall.c):
        Orthanc calls it, on the storing thread and outside its plugin mutex, with the size of
        an instance it transcodes to lossless JPEG 2000 and a test ``same(native)`` of whether
        its bytes are exactly ``native``; ``encode`` returns the new instance, or None to
        decline. False when the built library predates the transcoder."""
        lib = self._lib
        if not hasattr(lib, "teachfile_set_transcoder"):
            return False
        memcmp = ctypes.CDLL(None).memcmp
        memcmp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        memcmp.restype = ctypes.c_int
        lib.teachfile_transcoded.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64]
        lib.teachfile_transcoded.restype = ctypes.c_int32
        lib.teachfile_set_transcoder.argtypes = [_TRANSCODER]
        lib.teachfile_set_transcoder.restype = ctypes.c_int32

        def on_transcode(buffer: int, size: int, sink: int) -> int:
            try:
                data = encode(size, lambda native: len(native) == size and
                              memcmp(buffer, native, size) == 0)
                if not data:
                    return 1
                return int(lib.teachfile_transcoded(sink, data, len(data)))
            except BaseException:  # noqa: BLE001 - declined; Orthanc stores what it has
                return 1

        self._transcoder = _TRANSCODER(on_transcode)  # kept alive as long as this object
        if int(lib.teachfile_set_transcoder(self._transcoder)) != 0:
            return False
        # Orthanc finalises the Python plugin before the native one: from then on it must not
        # call into this interpreter.
        atexit.register(lib.teachfile_set_transcoder, _TRANSCODER())  # a NULL pointer
        return True

    def take_instances(self, intake: str, max_body: int) -> bool:
        """Let the native plugin own ``/instances``: it forwards each upload to ``intake`` (the
        Python plugin's internal route) and can answer what the Python plugin cannot, 400/422
        to Orthanc Explorer's refused file and 413 before reading a body above ``max_body``
        bytes. Call it once, while Orthanc loads the Python plugin, so that its callbacks come
        first. False when the built library predates it (the Python handler stays)."""
        take = getattr(self._lib, "teachfile_take_instances", None)
        if take is None:
            return False
        take.argtypes = [ctypes.c_char_p, ctypes.c_uint64]
        take.restype = ctypes.c_int32
        return int(take(intake.encode("ascii"), max_body)) == 0


def find_library(plugins: object) -> Path | None:
    """The native plugin's path in Orthanc's ``Plugins`` configuration, if it is there."""
    if not isinstance(plugins, list):
        return None
    for entry in plugins:
        path = Path(str(entry))
        if path.name == LIBRARY_NAME:
            return path
    return None
