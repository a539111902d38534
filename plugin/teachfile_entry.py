"""The script Orthanc's ``PythonScript`` loads: it wires callbacks and translates, nothing else.

This is the only module that imports ``orthanc``. Every callback is wrapped so that an error
means "not stored": Orthanc's received-instance callback fails OPEN (an exception stores the
original), so no exception may ever leave it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import re
import site
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import orthanc

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
# A venv beside the checkout (scripts/setup) when the launcher did not set PYTHONPATH; only one
# made for this very Python: the latest lane's Orthanc sees the checkout's 3.11 .venv too, and
# its compiled modules (and the plugins pydicom finds through their metadata) cannot load here.
_PYDIR = f"python{sys.version_info[0]}.{sys.version_info[1]}"
for _sp in sorted((_HERE.parent / ".venv" / "lib").glob(f"{_PYDIR}/site-packages")):
    if str(_sp) not in sys.path:
        site.addsitedir(str(_sp))

_MODIFY = orthanc.ReceivedInstanceAction.MODIFY
_KEEP = orthanc.ReceivedInstanceAction.KEEP_AS_IS
_ORIGINS = {
    orthanc.InstanceOrigin.DICOM_PROTOCOL: "dicom",
    orthanc.InstanceOrigin.REST_API: "rest",
    orthanc.InstanceOrigin.PLUGIN: "plugin",
    orthanc.InstanceOrigin.LUA: "lua",
    orthanc.InstanceOrigin.WEB_DAV: "webdav",
}
_REFUSE_EVERYTHING = b"TEACHFILE-REFUSED"
_PROCESSING_FAILURE = 0x0110


# -- callbacks on small thread stacks (Python >= 3.14) ----------------------------------------
# Orthanc's HTTP threads have 100 KiB stacks (measured on 1.10.1 and 1.13.0). Python 3.14 bounds
# recursion by the C stack actually left, not by a frame count: a received-instance callback
# nested in an HTTP upload (the /instances handler's RestApiPost, Orthanc's parser, then the
# callback) raises RecursionError at a shallow depth, which is refused as an internal error.
# There, the callback's work runs on a pool thread with a full stack while the Orthanc thread
# waits (the GIL is released while it waits); Python 3.11 counts frames and runs it in place.
_STACK_MEASURED = sys.version_info >= (3, 14)
_SMALL_STACK = 1 << 20
_POOL_STACK = 8 << 20
_POOL_SIZE = 4
_small_stacks: dict[int, bool] = {}
_pool_jobs: queue.SimpleQueue[tuple[object, tuple[object, ...], dict[str, object], list[object],
                                    threading.Event]] = queue.SimpleQueue()
_pool_threads: set[int] = set()


def _thread_stack_size() -> int | None:
    """The calling thread's stack size (glibc's pthread_getattr_np), or None if unknown."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.pthread_self.restype = ctypes.c_ulong
        libc.pthread_getattr_np.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
        attr = ctypes.create_string_buffer(128)  # pthread_attr_t is 56 bytes on x86-64
        if libc.pthread_getattr_np(libc.pthread_self(), attr) != 0:
            return None
        addr, size = ctypes.c_void_p(), ctypes.c_size_t()
        rc = libc.pthread_attr_getstack(attr, ctypes.byref(addr), ctypes.byref(size))
        libc.pthread_attr_destroy(attr)
        return int(size.value) if rc == 0 else None
    except Exception:  # noqa: BLE001 - unknown: assume a full stack
        return None


def _pool_worker() -> None:
    _pool_threads.add(threading.get_ident())
    while True:
        fn, args, kwargs, out, done = _pool_jobs.get()
        try:
            out.append((True, fn(*args, **kwargs)))  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's wrapper
            out.append((False, exc))
        finally:
            done.set()


def _start_pool() -> None:
    previous = threading.stack_size(_POOL_STACK)
    try:
        for i in range(_POOL_SIZE):
            threading.Thread(target=_pool_worker, name=f"teachfile-stack-{i}",
                             daemon=True).start()
    finally:
        threading.stack_size(previous)


def _on_small_stack() -> bool:
    ident = threading.get_ident()
    small = _small_stacks.get(ident)
    if small is None:
        size = _thread_stack_size()
        small = size is not None and size < _SMALL_STACK and ident not in _pool_threads
        _small_stacks[ident] = small
    return small


_RAISE = object()


def _full_stack(fallback: object = _RAISE):  # type: ignore[no-untyped-def]
    """Run a callback in place, or on a pool thread when Python measures a small stack.

    ``fallback`` is what the callback answers if handing it over fails: the callbacks that fail
    open in Orthanc (received instance, C-STORE filter, HTTP filter) must refuse then.
    """

    def wrap(fn):  # type: ignore[no-untyped-def]
        if not _STACK_MEASURED:
            return fn

        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                if not _on_small_stack():
                    return fn(*args, **kwargs)
                out: list[object] = []
                done = threading.Event()
                _pool_jobs.put((fn, args, kwargs, out, done))
                done.wait()
                ok, value = out[0]  # type: ignore[misc]
                if ok:
                    return value
                raise value
            except BaseException:
                if fallback is _RAISE:
                    raise
                return fallback

        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run

    return wrap


if _STACK_MEASURED:
    _start_pool()


class _OrthancLogHandler(logging.Handler):
    """Route the package's logging to Orthanc's log, so operators read one log."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if record.levelno >= logging.ERROR:
                orthanc.LogError(msg)
            elif record.levelno >= logging.WARNING:
                orthanc.LogWarning(msg)
            else:
                orthanc.LogInfo(msg)
        except Exception:  # noqa: BLE001 - logging must never break a callback
            pass


_logger = logging.getLogger("teachfile")
_logger.addHandler(_OrthancLogHandler())
_logger.setLevel(logging.INFO)
_logger.propagate = False
# Any library warning may quote a data value: none reaches Orthanc's log from this process.
warnings.filterwarnings("ignore")

try:
    from teachfile.node.leaks import KwargsReleaser, plugin_leaks_kwargs

    # Plugin 4.0 leaks every HTTP callback's arguments (a whole upload body per request).
    _keep_leaks = (os.environ.get("TEACHFILE_TESTING") == "1" and bool(
        ((json.loads(orthanc.GetConfiguration()).get("Teachfile") or {}).get("Testing") or {})
        .get("KeepPluginLeaks")))  # the benchmark's baseline: the plugin as it is
    _releaser: KwargsReleaser | None = KwargsReleaser(
        plugin_leaks_kwargs(orthanc) and not _keep_leaks)
except Exception as _exc:  # noqa: BLE001 - without it the node leaks, but still works
    _releaser = None
    orthanc.LogWarning(f"teachfile: cannot release plugin 4.0's leaked request arguments "
                       f"({type(_exc).__name__})")


def _releasing(kind: str):  # type: ignore[no-untyped-def]
    """Wrap an HTTP callback so that, on a leaking plugin, its arguments are freed after it.

    On a plugin that does not leak the callback is registered as it is: with the wrapper,
    Orthanc 1.13 + plugin 7.1 + Python 3.14 crashed (SIGSEGV) while finalizing Python at exit.
    """
    if _releaser is None or not _releaser.enabled:
        return lambda fn: fn
    def wrap(fn):  # type: ignore[no-untyped-def]
        @functools.wraps(fn)
        def inner(*args, **request):  # type: ignore[no-untyped-def]
            try:
                return fn(*args, **request)
            finally:
                try:
                    if _releaser is not None:
                        getattr(_releaser, kind)(request)
                except BaseException:  # noqa: BLE001, S110 - never break an answer
                    pass
        return inner
    return wrap


def _rest_api() -> tuple[Any, bool]:
    """Where the entry script calls Orthanc's REST API from, and whether those calls wait
    without the GIL. Python plugin 4.0 keeps the GIL inside ``orthanc.RestApiPost``, so a
    REST callback storing an instance while a C-STORE holds Orthanc's plugin mutex deadlocks
    the node; the native plugin (``native/restcall.c``, listed first in ``Plugins`` by the
    launcher on every lane, since it also owns ``/instances``) makes the same calls with the
    GIL released. Without it, plugins >= 4.3 release it themselves with
    ``Python.AllowThreads``."""
    config = json.loads(orthanc.GetConfiguration())
    allow = bool((config.get("Python") or {}).get("AllowThreads"))
    library = None
    try:
        from teachfile.node.restcall import RestCall, find_library

        library = find_library(config.get("Plugins"))
        if library is not None:
            return RestCall(library), True
    except Exception as exc:  # noqa: BLE001 - the plugin's own calls still work, mostly
        orthanc.LogError(f"teachfile: cannot use {library} ({type(exc).__name__}: {exc})")
    if not allow:
        orthanc.LogWarning("teachfile: REST calls keep the GIL (no teachfile-restcall.so in "
                           "Plugins, no Python.AllowThreads): concurrent uploads and C-STOREs "
                           "can deadlock Orthanc; start it with `teachfile run`")
    return orthanc, allow


_rest, _rest_without_gil = _rest_api()


try:
    from teachfile.api import routes as rest
    from teachfile.node.roles import basic_user
    from teachfile.node.service import (
        Service,
        Settings,
        modification_answer,
        refusal_body,
        stored_answer,
    )

    _service: Service | None = Service(
        Settings.from_orthanc_config(json.loads(orthanc.GetConfiguration())))
except Exception as _exc:  # noqa: BLE001
    # Fail closed: a node that cannot load its profile or key refuses every instance.
    _service = None
    orthanc.LogError(f"teachfile: cannot start ({type(_exc).__name__}: {_exc}); "
                     "every received instance will be refused")


def _install_transcoder() -> None:
    """Lossless JPEG 2000 after the callback, outside Orthanc's plugin mutex, when the launcher
    configured ingest transcoding for it (reception/deferred.py): only through the native
    plugin, whose transcoder Orthanc calls first."""
    config = json.loads(orthanc.GetConfiguration())
    if _service is None or config.get("IngestTranscoding") != "1.2.840.10008.1.2.4.90" or \
            not hasattr(_rest, "install_transcoder"):
        return
    try:
        if _rest.install_transcoder(_service.transcode_ingest):
            _service.enable_deferred()
    except Exception as exc:  # noqa: BLE001 - the callback then encodes, as before
        orthanc.LogError(f"teachfile: ingest transcoder not installed ({type(exc).__name__})")


_install_transcoder()


def _thread_stack_preload() -> bool:
    """Whether native/threadstack.c is mapped in this process: without it Debian's civetweb
    gives HTTP threads 100 KiB stacks, which GDCM's transcoding overflows (Orthanc dies)."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return any(line.rstrip().endswith("/teachfile-threadstack.so") for line in maps)
    except OSError:
        return False


if _service is not None:
    _service.rest_without_gil = _rest_without_gil
    _service.thread_stack_preload = _thread_stack_preload()
    if not _service.thread_stack_preload:
        orthanc.LogWarning("teachfile: Orthanc runs without teachfile-threadstack.so (start it "
                           "with `teachfile run`, or LD_PRELOAD it): GDCM transcodings on HTTP "
                           "threads may crash Orthanc")


@_full_stack((_MODIFY, _REFUSE_EVERYTHING))
def _on_received(raw: bytes, origin: object) -> tuple[object, bytes | None]:
    try:
        if _service is None:
            return _MODIFY, _REFUSE_EVERYTHING
        action, data = _service.receive(raw, _ORIGINS.get(origin, "unknown"))
        if action == "keep":
            return _KEEP, None
        if not data:
            return _MODIFY, _REFUSE_EVERYTHING
        return _MODIFY, data
    except BaseException:  # noqa: BLE001 - fail closed, whatever happened
        return _MODIFY, _REFUSE_EVERYTHING


@_full_stack(_PROCESSING_FAILURE)
def _on_cstore(instance: orthanc.DicomInstance) -> int:
    try:
        if _service is None:
            return _PROCESSING_FAILURE
        return _service.cstore_filter(instance.GetInstanceSize(), instance.GetInstanceData,
                                      instance.GetInstanceRemoteAet())
    except BaseException:  # noqa: BLE001
        return _PROCESSING_FAILURE


# Deleting from inside the on-stored callback could deadlock Orthanc: a worker thread does it.
_to_delete: queue.Queue[str] = queue.Queue()


def _delete_worker() -> None:
    while True:
        instance_id = _to_delete.get()
        for attempt in range(5):
            try:
                _rest.RestApiDelete(f"/instances/{instance_id}")
                break
            except Exception as exc:  # noqa: BLE001
                orthanc.LogError(f"teachfile: could not delete unverified instance "
                                 f"{instance_id} (attempt {attempt + 1}): {type(exc).__name__}")
                time.sleep(0.5 * (attempt + 1))


# Case records that arrive as DICOM (IHE TCE objects) are indexed by a worker thread too.
_to_import: queue.Queue[tuple[str, int]] = queue.Queue()
_RECORD_MARK = b"TEACHFILE RECORD"


def _import_worker() -> None:
    from teachfile.api import portal

    while True:
        instance_id, attempt = _to_import.get()
        try:
            if _service is not None:
                done = portal.import_record(_service, _Api(), instance_id)
                if done == "retry" and attempt < 30:
                    # A KOS may arrive before the images it marks: look again shortly.
                    threading.Timer(1.0, _to_import.put, ((instance_id, attempt + 1),)).start()
                _logger.info("teachfile: case record object %s", done)
        except Exception as exc:  # noqa: BLE001
            _logger.warning("teachfile: could not index a case record: %s", type(exc).__name__)


@_full_stack()
def _on_stored(instance: orthanc.DicomInstance, instance_id: str) -> None:
    try:
        data = instance.GetInstanceData()
        if _service is not None and _service.verify_stored(
                data, instance_id, _ORIGINS.get(instance.GetInstanceOrigin(), "unknown")):
            if _RECORD_MARK in data:
                _to_import.put((instance_id, 0))
            return
        reason = "unsealed"
    except BaseException:  # noqa: BLE001
        reason = "verify-error"
    if _service is not None:
        _service.alarm(reason)
    _to_delete.put(instance_id)


def _answer(output: orthanc.RestOutput, status: int, body: bytes) -> None:
    if status == 200:
        output.AnswerBuffer(body, "application/json")
        return
    try:
        output.SendHttpStatus(status, body)  # plugin >= 4.1: (status, body)
    except TypeError:
        text = body.decode()
        output.SendHttpStatus(status, text, len(body))  # plugin 4.0: (status, str, size)


def _versions() -> None:
    """Fill in Orthanc's and the Python plugin's versions once (not from a sync callback)."""
    if _service is None or "orthanc_version" in _service.versions:
        return
    system = json.loads(_rest.RestApiGet("/system"))
    _service.versions["orthanc_version"] = system.get("Version", "unknown")
    try:
        plugin = json.loads(_rest.RestApiGet("/plugins/python"))
        _service.versions["python_plugin_version"] = plugin.get("Version", "unknown")
    except Exception:  # noqa: BLE001
        _service.versions["python_plugin_version"] = "unknown"
    _service.versions["python_version"] = sys.version.split()[0]


class _Api:
    """Orthanc's internal REST API for the handlers (never from a synchronous callback)."""

    def get(self, uri: str) -> bytes:
        return _rest.RestApiGet(uri)

    def post(self, uri: str, body: bytes) -> bytes:
        return _rest.RestApiPost(uri, body)

    def put(self, uri: str, body: bytes) -> bytes:
        return _rest.RestApiPut(uri, body)

    def delete(self, uri: str) -> None:
        _rest.RestApiDelete(uri)


@_full_stack(False)
def _on_http_request(uri: str, **request: object) -> bool:
    """Roles, on every HTTP request (Orthanc has already checked the password)."""
    try:
        method = request.get("method")
        if _service is None:  # a node that failed to start may still be looked at
            return method in (orthanc.HttpMethod.GET, "GET", "HEAD")
        name = {orthanc.HttpMethod.GET: "GET", orthanc.HttpMethod.POST: "POST",
                orthanc.HttpMethod.PUT: "PUT", orthanc.HttpMethod.DELETE: "DELETE"}.get(
                    method, str(method).upper())
        headers = dict(request.get("headers") or {})
        if _is_intake(uri):
            return False  # the native /instances' internal route, never called from outside
        if _too_large(headers) and not _answers_413(name, uri, headers):
            return False  # before Orthanc allocates the body (see _too_large)
        user = basic_user(headers)
        if user is not None and uri.startswith("/teachfile/"):
            return True  # the handler checks the role and says which one is needed
        return _service.roles.allows(user, name, uri)
    except BaseException:  # noqa: BLE001 - fail closed
        return False


#: Bodies Orthanc may be asked to hold: it allocates the whole Content-Length before reading
#: (HttpServer.cpp), so 1e11 failed with "out of memory" (500) and a size that does fit could
#: exhaust the machine. Orthanc 1.10 lets a plugin refuse a request before its body only
#: through the request filter, whose refusal is Orthanc's empty 403.
_MAX_BODY = int((json.loads(orthanc.GetConfiguration()).get("Teachfile") or {})
                 .get("MaxBodyMegabytes", 2048)) << 20


def _is_intake(uri: str) -> bool:
    """Orthanc matches routes on the URI's non-empty components (``//a/`` is ``/a``)."""
    flat = "/" + "/".join(c for c in uri.split("/") if c)
    return flat.lower().startswith(INTAKE_ROUTE.rsplit("/", 1)[0])


#: Whether native/restcall.c owns ``/instances`` (set where the callbacks are registered).
_owns_uploads = False


def _answers_413(method: str, uri: str, headers: dict[str, str]) -> bool:
    """A too-large upload the native ``/instances`` refuses itself, with 413 and a message,
    before Orthanc reads the body: a plain POST (Explorer's multipart form is read whole before
    any handler, so it keeps the filter's 403)."""
    if not (_owns_uploads and method == "POST" and uri == "/instances"):
        return False
    kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return not str(kind).lower().startswith("multipart/")


def _too_large(headers: dict[str, str]) -> bool:
    raw = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
    try:
        size = int(raw) if raw is not None else 0
    except ValueError:
        return False  # Orthanc answers 411 itself
    if size > _MAX_BODY:
        _logger.warning("refused an HTTP request of %d bytes: above Teachfile.MaxBodyMegabytes "
                        "(%d MB)", size, _MAX_BODY >> 20)
        return True
    return False


@_full_stack()
def _on_teachfile_rest(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; see the Orthanc log", '
                             b'"reason": "unavailable", "status": 503}')
        return
    try:
        _versions()
        headers = dict(request.get("headers") or {})
        user, method = basic_user(headers), str(request.get("method"))
        if not _service.roles.allows(user, method, uri):
            _answer(output, 403, rest.forbidden(_service, user, method, uri).encode())
            return
        req = rest.Request(method, uri, dict(request.get("get") or {}),
                           bytes(request.get("body") or b""), user, _Api())
        resp = rest.dispatch(_service, req)
        if resp.status == 405:  # Orthanc insists on its dedicated call for 405
            output.SendMethodNotAllowed(resp.body["allow"])
            return
        _answer(output, resp.status, resp.encode())
    except Exception as exc:  # noqa: BLE001
        _logger.error("REST handler failed: %s", type(exc).__name__)
        _answer(output, 500, b'{"error": "internal error; see the Orthanc log", '
                             b'"reason": "internal-error", "status": 500}')


@_full_stack()
def _on_portal_rest(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """The portal's page, scripts and images: like :func:`_on_teachfile_rest`, but an answer
    may be bytes of any content type (``teachfile.api.portal.Blob``)."""
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; see the Orthanc log"}')
        return
    try:
        _versions()
        headers = dict(request.get("headers") or {})
        req = rest.Request(str(request.get("method")), uri, dict(request.get("get") or {}),
                           bytes(request.get("body") or b""), basic_user(headers), _Api())
        resp = rest.dispatch(_service, req)
        if resp.status == 405:
            output.SendMethodNotAllowed(resp.body["allow"])
            return
        ctype = getattr(resp, "content_type", None)
        if ctype is None or resp.status != 200:
            _answer(output, resp.status, resp.encode())
            return
        for name, value in getattr(resp, "headers", ()):
            output.SetHttpHeader(name, value)
        output.AnswerBuffer(resp.encode(), ctype)
    except Exception as exc:  # noqa: BLE001
        _logger.error("portal handler failed: %s", type(exc).__name__)
        _answer(output, 500, b'{"error": "internal error", "status": 500}')


def _error_code(exc: Exception) -> int | None:
    """Orthanc's error code from an ``orthanc.OrthancException`` (its first argument)."""
    try:
        return int(exc.args[0])
    except (IndexError, TypeError, ValueError):
        return None


def _query_string(get: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return ("?" + urlencode(get)) if get else ""


def _is_form_part(headers: dict[str, str]) -> bool:
    """Orthanc Explorer's upload: Orthanc splits the multipart/form-data itself and calls this
    handler once per file with the part's own headers, then answers 200 whatever the handler
    answered (HttpServer's MultipartFormDataHandler drops it). Only an error raised here
    reaches the browser."""
    return any(k.lower() == "content-disposition" for k in headers)


class FormPartRefused(Exception):
    """Raised so that Orthanc fails Explorer's upload; its details carry the reasons."""


def _form_details(body: bytes) -> str:
    """A refusal's JSON body as the one line Orthanc puts in its error's ``Details``."""
    try:
        doc = json.loads(body)
        reasons = "; ".join(f"{r['reason']}: {r.get('explanation', '')}"
                            for r in doc.get("Refusals", []))
        message = str(doc.get("Message") or doc.get("error") or "refused")
        return f"{message} ({reasons})" if reasons else message
    except Exception:  # noqa: BLE001 - the failure itself matters more than its details
        return "refused"


def _store_upload(body: bytes, form_part: bool) -> tuple[int, bytes]:
    """One upload through Orthanc's built-in ``/instances`` (whose received-instance callback
    makes it safe or refuses it), and what its client is told: 200 and Orthanc's answer, or the
    refusal's status and JSON body; for an Explorer file part, the refusal as one line of text
    (it becomes the ``Details`` of Orthanc's error answer)."""
    assert _service is not None
    _service.begin_upload("rest")
    orthanc_error = None
    try:
        try:
            result = _rest.RestApiPost("/instances", body)
        except Exception as exc:  # noqa: BLE001 - Orthanc refused: see what the pipeline said
            result = None
            orthanc_error = _error_code(exc)
    finally:
        refusals = _service.end_upload()
        stored_ids = _service.take_upload_stored()
    result = _told_what_was_stored(result, stored_ids)
    if refusals or result is None:
        stored = json.loads(result) if result is not None else None
        status, answer = refusal_body(refusals, stored, orthanc_error)
        return status, _form_details(answer).encode() if form_part else answer
    return 200, result


@_full_stack()
def _on_instances(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """``/instances`` where the native plugin does not own it (``teachfile_take_instances``):
    uploads go through the plugin so a refusal is an HTTP error (500 for an Explorer file)."""
    method = request.get("method")
    if method == "GET":
        body = _rest.RestApiGet(uri + _query_string(dict(request.get("get") or {})))
        output.AnswerBuffer(body, "application/json")
        return
    if method != "POST":
        output.SendMethodNotAllowed("GET,POST")
        return
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; nothing is stored"}')
        return
    form_part = _is_form_part(dict(request.get("headers") or {}))
    status, body = _store_upload(bytes(request.get("body") or b""), form_part)
    if status != 200 and form_part:
        output.SetHttpErrorDetails(body.decode(), False)
        raise FormPartRefused("refused")
    _answer(output, status, body)


#: The internal route behind the native ``/instances`` (native/restcall.c forwards every upload
#: here with its headers and answers its client what this route answers). The request filter
#: refuses it from outside; Orthanc's internal calls do not pass the filter.
INTAKE_ROUTE = "/teachfile-intake/instances"


@_full_stack()
def _on_intake(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """The pipeline's answer to one upload, in the envelope native/restcall.c unwraps (Orthanc
    gives a plugin only the 200 answers of its internal calls): the client's status as three
    digits and a newline, then the body."""
    if request.get("method") != "POST":
        output.SendMethodNotAllowed("POST")
        return
    if _service is None:
        status, body = 503, b'{"error": "teachfile failed to start; nothing is stored"}'
    else:
        status, body = _store_upload(bytes(request.get("body") or b""),
                                     _is_form_part(dict(request.get("headers") or {})))
    output.AnswerBuffer(b"%03d\n" % status + body, "application/octet-stream")


def _take_uploads() -> bool:
    """Whether the native plugin now owns ``/instances`` (answers 400/422 to Explorer and 413
    before reading a body that is too large); otherwise the Python handler does."""
    take = getattr(_rest, "take_instances", None)
    if take is None:
        return False
    try:
        return bool(take(INTAKE_ROUTE, min(_MAX_BODY, (1 << 32) - 1)))
    except Exception as exc:  # noqa: BLE001 - the Python handler still refuses what it must
        orthanc.LogError(f"teachfile: the native plugin cannot take uploads "
                         f"({type(exc).__name__}: {exc})")
        return False


_modifying = threading.Lock()
_MODIFICATION = re.compile(r"^/(patients|studies|series)/([^/]+)/(modify|anonymize)$")


@_full_stack()
def _on_modification(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """``POST /{patients,studies,series}/{id}/{modify,anonymize}``, told what was stored.

    Orthanc answers these from the identifiers its job generated, which the node's pseudonyms
    replace: 1.10 names a resource that does not exist, 1.13 answers 404; both after storing
    the de-identified copy. So the plugin runs the job itself and answers from what was
    stored (``service.modification_answer``). The job runs asynchronously while this thread
    waits in ``time.sleep``: waiting inside ``RestApiPost`` would hold the GIL on plugin 4.0,
    and the job's instances pass through the received-instance callback on the job's thread
    (a deadlock, measured). One modification at a time, so what is stored meanwhile through
    the REST API is this job's. An asynchronous request gets Orthanc's job answer as is."""
    if request.get("method") != "POST":
        output.SendMethodNotAllowed("POST")
        return
    match = _MODIFICATION.match(uri)
    if _service is None or match is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; nothing is stored"}')
        return
    try:
        _rest.RestApiGet(f"/{match.group(1)}/{match.group(2)}")
    except Exception:  # noqa: BLE001 - Orthanc 1.13 calls it a bad parameter (400)
        _answer_error(output, 17, [])
        return
    raw = bytes(request.get("body") or b"{}")  # type: ignore[arg-type]
    try:
        params = json.loads(raw or b"{}")
    except ValueError:
        params = None
    if not isinstance(params, dict) or params.get("Asynchronous") is True:
        _pass_through(output, uri, raw)
        return
    job = None
    with _modifying:
        _service.begin_collect()
        try:
            try:
                job = json.loads(_rest.RestApiPost(uri, json.dumps(
                    {**params, "Asynchronous": True}).encode()))["ID"]
            except Exception as exc:  # noqa: BLE001 - refused before any job: Orthanc's answer
                failure: Exception | None = exc
            else:
                failure = None
                info = _wait_for_job(job)
        finally:
            stored = _service.end_collect()
    if job is None:
        _answer_error(output, _error_code(failure) if failure is not None else None, stored)
        return
    answer = None
    with contextlib.suppress(Exception):  # what it stored may have gone away meanwhile
        answer = modification_answer(_rest.RestApiGet, match.group(1), stored,
                                     match.group(3) == "anonymize")
    if answer is not None:
        answer["FailedInstancesCount"] = int((info.get("Content") or {}).get(
            "FailedInstancesCount", 0) or 0)
        output.AnswerBuffer(json.dumps(answer, indent=3).encode(), "application/json")
        return
    if not stored and info.get("State") == "Failure":
        code = info.get("ErrorCode")
        _answer_error(output, code if isinstance(code, int) else None, stored)
        return
    _answer(output, 500, json.dumps({
        "error": "the modification stored nothing" if not stored else
        "the modification stored instances under more than one resource",
        "job": job, "state": info.get("State"), "stored": len(stored),
        "OrthancError": info.get("ErrorDescription")}).encode())


def _wait_for_job(job: str, timeout: float = 3600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = json.loads(_rest.RestApiGet(f"/jobs/{job}"))
        if info.get("State") in ("Success", "Failure"):
            return info
        time.sleep(0.05)
    return info


def _pass_through(output: orthanc.RestOutput, uri: str, raw: bytes) -> None:
    try:
        output.AnswerBuffer(_rest.RestApiPost(uri, raw), "application/json")
    except Exception as exc:  # noqa: BLE001
        _answer_error(output, _error_code(exc), [])


def _answer_error(output: orthanc.RestOutput, code: int | None, stored: list[str]) -> None:
    status = 404 if code in (7, 17) else 400 if code in (3, 5, 8, 12, 15) else 500
    text = {404: "no such resource", 400: "Orthanc refused the request (bad parameters)"}.get(
        status, "Orthanc could not modify the resource; see its log")
    _answer(output, status, json.dumps({"error": text, "OrthancStatus": code,
                                        "stored": len(stored)}).encode())


@_full_stack()
def _on_modality(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """``/modalities/{name}``: Orthanc's own entry, written back to network.json."""
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; see the Orthanc log"}')
        return
    try:
        from teachfile.api import network as network_api

        groups = list(request.get("groups") or []) or [uri.rsplit("/", 1)[-1]]
        headers = dict(request.get("headers") or {})
        req = rest.Request(str(request.get("method")), uri, {},
                           bytes(request.get("body") or b""), basic_user(headers), _Api())
        resp = network_api.modality(_service.settings.data_dir, req, str(groups[0]))
        if resp.status == 405:
            output.SendMethodNotAllowed(resp.body["allow"])
            return
        _answer(output, resp.status, resp.encode())
    except Exception as exc:  # noqa: BLE001
        _logger.error("modality handler failed: %s", type(exc).__name__)
        _answer(output, 500, b'{"error": "internal error", "status": 500}')


@_full_stack()
def _on_stow(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """``/teachfile/dicom-web/studies``: STOW-RS answered by what was stored (api/stow.py)."""
    if request.get("method") != "POST":
        output.SendMethodNotAllowed("POST")
        return
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; nothing is stored"}')
        return
    from teachfile.api.stow import stow

    service = _service

    def upload(part: bytes) -> tuple[list[object], list[str]]:
        service.begin_upload("stow")
        try:
            _rest.RestApiPost("/instances", part)
        except Exception:  # noqa: BLE001 - refused or unreadable: the refusals say which
            pass
        finally:
            refusals = service.end_upload()
            stored = service.take_upload_stored()
        return refusals, stored

    headers = {str(k).lower(): str(v) for k, v in dict(request.get("headers") or {}).items()}
    root = (json.loads(orthanc.GetConfiguration()).get("DicomWeb") or {}).get("Root",
                                                                               "/dicom-web/")
    wado = f"http://{headers.get('host', 'localhost')}{root}"
    try:
        status, answer = stow(bytes(request.get("body") or b""), _Api(), upload, wado)
    except Exception as exc:  # noqa: BLE001
        _logger.error("STOW-RS handler failed: %s", type(exc).__name__)
        _answer(output, 500, b'{"error": "internal error", "status": 500}')
        return
    body = json.dumps(answer).encode()
    if status == 200:
        output.AnswerBuffer(body, "application/dicom+json")
        return
    if status in (202, 409):  # DICOM JSON, as PS3.18 answers; a 400 is the node's own error
        output.SetHttpHeader("Content-Type", "application/dicom+json")
    _answer(output, status, body)


def _told_what_was_stored(result: bytes | None, stored_ids: list[str]) -> bytes | None:
    """Orthanc's answer made true: it may fail after storing (it parses the received file only
    to answer) and names parents hashed from the received identifiers; see
    ``Service.take_upload_stored``."""
    if not stored_ids:
        return result
    try:
        truth = stored_answer(_rest.RestApiGet, stored_ids)
    except Exception:  # noqa: BLE001 - the instance went away meanwhile: Orthanc's answer
        return result
    if result is None:
        return json.dumps(truth).encode()
    answer = json.loads(result)
    if isinstance(answer, dict) and isinstance(truth, dict) and answer.get("ID") == truth["ID"]:
        answer.update({k: truth[k] for k in ("ParentPatient", "ParentStudy", "ParentSeries")})
        return json.dumps(answer).encode()
    return result


orthanc.RegisterReceivedInstanceCallback(_on_received)
orthanc.RegisterIncomingCStoreInstanceFilter(_on_cstore)
@_full_stack()
def _on_reset(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """``/tools/reset`` is refused: Orthanc would re-run this script after ``Py_Finalize`` in the
    same process, where compiled extensions (PyYAML's ``_yaml``: "metaclass conflict"; numpy,
    which does not support re-initialisation) cannot load again, leaving a node that refuses
    every instance and every write until its process restarts."""
    if request.get("method") != "POST":
        output.SendMethodNotAllowed("POST")
        return
    _answer(output, 403, json.dumps({
        "error": "POST /tools/reset is refused on a teaching-file node: restart the Orthanc "
                 "process instead (Ctrl-C and make run, or restart its service)",
        "reason": "reset-refused",
        "status": 403,
        "detail": "Orthanc restarts in the same process and re-runs the Python plugin in a "
                  "re-initialised interpreter, where the compiled libraries the plugin needs "
                  "cannot load again; the node would refuse every instance until restarted",
    }, indent=2).encode())


orthanc.RegisterOnStoredInstanceCallback(_on_stored)
orthanc.RegisterIncomingHttpRequestFilter(_releasing("http_filter")(_on_http_request))
threading.Thread(target=_delete_worker, name="teachfile-guard", daemon=True).start()
orthanc.RegisterRestCallback("/tools/reset", _releasing("rest_callback")(_on_reset))


def _start_dicom_guard() -> None:
    """Silent TCP clients must not hold Orthanc's DICOM accept thread (see node/dicomguard)."""
    try:
        from teachfile.node import dicomguard

        config = json.loads(orthanc.GetConfiguration())
        section = config.get("Teachfile") or {}
        guard = dicomguard.DicomGuard(
            port=int(config.get("DicomPort", 4242)),
            request_timeout=float(section.get("DicomRequestTimeout", 2)),
            defer_accept=int(section.get("DicomDeferAccept", 60)))
        on_drop = (lambda n: _service.state.count("dicom_silent_dropped", n=n)) \
            if _service is not None else None
        threading.Thread(target=dicomguard.run_forever, args=(guard, 0.1, on_drop),
                         name="teachfile-dicom-guard", daemon=True).start()
    except Exception as exc:  # noqa: BLE001
        orthanc.LogError(f"teachfile: DICOM guard not started ({type(exc).__name__}: {exc})")


_start_dicom_guard()
threading.Thread(target=_import_worker, name="teachfile-records", daemon=True).start()
if _service is not None:
    # Before the generic /teachfile route: Orthanc answers with the first registered match.
    orthanc.RegisterRestCallback("/teachfile/(ui|portal)(/.*)?",
                                 _releasing("rest_callback")(_on_portal_rest))
    orthanc.RegisterRestCallback("/teachfile/dicom-web/studies",
                                 _releasing("rest_callback")(_on_stow))
    orthanc.RegisterRestCallback(rest.ROUTE_REGEX, _releasing("rest_callback")(_on_teachfile_rest))
    _owns_uploads = _take_uploads()
    _service.native_uploads = _owns_uploads
    if _owns_uploads:
        orthanc.RegisterRestCallback(INTAKE_ROUTE, _releasing("rest_callback")(_on_intake))
    else:
        orthanc.RegisterRestCallback("/instances", _releasing("rest_callback")(_on_instances))
    orthanc.RegisterRestCallback("/modalities/([^/]+)", _releasing("rest_callback")(_on_modality))
    orthanc.RegisterRestCallback("/(patients|studies|series)/([^/]+)/(modify|anonymize)",
                                 _releasing("rest_callback")(_on_modification))
    _front = (_service.settings.sharing or {}).get("Front")
    if _front:
        try:
            from teachfile.node.tlsfront import TlsFront

            _inner = int(json.loads(orthanc.GetConfiguration()).get("HttpPort", 8042))
            TlsFront(str(_front["Listen"]), int(_front["Port"]), _inner,
                     Path(_front["Certificate"])).start()
            _logger.info("teachfile: HTTPS on port %s (relayed to Orthanc on 127.0.0.1:%s)",
                         _front["Port"], _inner)
        except Exception as _exc:  # noqa: BLE001
            orthanc.LogError(f"teachfile: cannot serve HTTPS: {_exc}")
    _logger.info("teachfile %s ready: profile %s, key %s, pid %d",
                 _service.versions["version"], _service.profile.name,
                 _service.key_fingerprint, os.getpid())
