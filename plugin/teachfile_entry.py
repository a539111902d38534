"""The script Orthanc's ``PythonScript`` loads: it wires callbacks and translates, nothing else.

This is the only module that imports ``orthanc``. Every callback is wrapped so that an error
means "not stored": Orthanc's received-instance callback fails OPEN (an exception stores the
original), so no exception may ever leave it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import site
import sys
import threading
import time
import warnings
from pathlib import Path

import orthanc

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
# A venv beside the checkout (scripts/setup) when the launcher did not set PYTHONPATH.
for _sp in sorted((_HERE.parent / ".venv" / "lib").glob("python3*/site-packages")):
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
    """Wrap an HTTP callback so that, on a leaking plugin, its arguments are freed after it."""
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


try:
    from teachfile.api import routes as rest
    from teachfile.node.roles import basic_user
    from teachfile.node.service import Service, Settings, refusal_body

    _service: Service | None = Service(
        Settings.from_orthanc_config(json.loads(orthanc.GetConfiguration())))
except Exception as _exc:  # noqa: BLE001
    # Fail closed: a node that cannot load its profile or key refuses every instance.
    _service = None
    orthanc.LogError(f"teachfile: cannot start ({type(_exc).__name__}: {_exc}); "
                     "every received instance will be refused")


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
                orthanc.RestApiDelete(f"/instances/{instance_id}")
                break
            except Exception as exc:  # noqa: BLE001
                orthanc.LogError(f"teachfile: could not delete unverified instance "
                                 f"{instance_id} (attempt {attempt + 1}): {type(exc).__name__}")
                time.sleep(0.5 * (attempt + 1))


def _on_stored(instance: orthanc.DicomInstance, instance_id: str) -> None:
    try:
        if _service is not None and _service.verify_stored(instance.GetInstanceData()):
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
    system = json.loads(orthanc.RestApiGet("/system"))
    _service.versions["orthanc_version"] = system.get("Version", "unknown")
    try:
        plugin = json.loads(orthanc.RestApiGet("/plugins/python"))
        _service.versions["python_plugin_version"] = plugin.get("Version", "unknown")
    except Exception:  # noqa: BLE001
        _service.versions["python_plugin_version"] = "unknown"
    _service.versions["python_version"] = sys.version.split()[0]


class _Api:
    """Orthanc's internal REST API for the handlers (never from a synchronous callback)."""

    def get(self, uri: str) -> bytes:
        return orthanc.RestApiGet(uri)

    def post(self, uri: str, body: bytes) -> bytes:
        return orthanc.RestApiPost(uri, body)

    def put(self, uri: str, body: bytes) -> bytes:
        return orthanc.RestApiPut(uri, body)

    def delete(self, uri: str) -> None:
        orthanc.RestApiDelete(uri)


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
        if _too_large(headers):
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


def _fail_form_part(output: orthanc.RestOutput, body: bytes) -> None:
    """Make Orthanc answer the form upload with an error whose ``Details`` are the refusal
    (the Python plugin maps any error to Orthanc's "plugin" error: HTTP 500, not a 4xx)."""
    try:
        doc = json.loads(body)
        reasons = "; ".join(f"{r['reason']}: {r.get('explanation', '')}"
                            for r in doc.get("Refusals", []))
        details = f"{doc.get('Message', 'refused')} ({reasons})" if reasons \
            else str(doc.get("Message", "refused"))
        output.SetHttpErrorDetails(details, False)
    except Exception:  # noqa: BLE001 - the failure itself matters more than its details
        pass
    raise FormPartRefused("refused")


def _on_instances(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    """``/instances``: uploads go through the plugin so a refusal is an HTTP error."""
    method = request.get("method")
    if method == "GET":
        body = orthanc.RestApiGet(uri + _query_string(dict(request.get("get") or {})))
        output.AnswerBuffer(body, "application/json")
        return
    if method != "POST":
        output.SendMethodNotAllowed("GET,POST")
        return
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; nothing is stored"}')
        return
    _service.begin_upload("rest")
    orthanc_error = None
    try:
        try:
            result = orthanc.RestApiPost("/instances", request.get("body") or b"")
        except Exception as exc:  # noqa: BLE001 - Orthanc refused: see what the pipeline said
            result = None
            orthanc_error = _error_code(exc)
    finally:
        refusals = _service.end_upload()
    if refusals or result is None:
        stored = json.loads(result) if result is not None else None
        status, body = refusal_body(refusals, stored, orthanc_error)
        if _is_form_part(dict(request.get("headers") or {})):
            _fail_form_part(output, body)
        _answer(output, status, body)
        return
    output.AnswerBuffer(result, "application/json")


orthanc.RegisterReceivedInstanceCallback(_on_received)
orthanc.RegisterIncomingCStoreInstanceFilter(_on_cstore)
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
if _service is not None:
    orthanc.RegisterRestCallback(rest.ROUTE_REGEX, _releasing("rest_callback")(_on_teachfile_rest))
    orthanc.RegisterRestCallback("/instances", _releasing("rest_callback")(_on_instances))
    _logger.info("teachfile %s ready: profile %s, key %s, pid %d",
                 _service.versions["version"], _service.profile.name,
                 _service.key_fingerprint, os.getpid())
