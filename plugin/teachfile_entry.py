"""The script Orthanc's ``PythonScript`` loads: it wires callbacks and translates, nothing else.

This is the only module that imports ``orthanc``. Every callback is wrapped so that an error
means "not stored": Orthanc's received-instance callback fails OPEN (an exception stores the
original), so no exception may ever leave it.
"""

from __future__ import annotations

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
    from teachfile.api import routes as rest
    from teachfile.node.roles import basic_user
    from teachfile.node.service import Service, Settings, refusal_body, stored_answer

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
        if _service is not None and _service.verify_stored(instance.GetInstanceData(),
                                                           instance_id):
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
        user = basic_user(dict(request.get("headers") or {}))
        return _service.roles.allows(user, name, uri)
    except BaseException:  # noqa: BLE001 - fail closed
        return False


def _on_teachfile_rest(output: orthanc.RestOutput, uri: str, **request: object) -> None:
    if _service is None:
        _answer(output, 503, b'{"error": "teachfile failed to start; see the Orthanc log"}')
        return
    try:
        _versions()
        headers = dict(request.get("headers") or {})
        req = rest.Request(str(request.get("method")), uri, dict(request.get("get") or {}),
                           bytes(request.get("body") or b""), basic_user(headers), _Api())
        resp = rest.dispatch(_service, req)
        if resp.status == 405:  # Orthanc insists on its dedicated call for 405
            output.SendMethodNotAllowed(resp.body["allow"])
            return
        _answer(output, resp.status, resp.encode())
    except Exception as exc:  # noqa: BLE001
        _logger.error("REST handler failed: %s", type(exc).__name__)
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
        stored_ids = _service.take_upload_stored()
    result = _told_what_was_stored(result, stored_ids)
    if refusals or result is None:
        stored = json.loads(result) if result is not None else None
        status, body = refusal_body(refusals, stored, orthanc_error)
        _answer(output, status, body)
        return
    output.AnswerBuffer(result, "application/json")


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
            orthanc.RestApiPost("/instances", part)
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
    output.SetHttpHeader("Content-Type", "application/dicom+json")
    _answer(output, status, body)


def _told_what_was_stored(result: bytes | None, stored_ids: list[str]) -> bytes | None:
    """Orthanc's answer made true: it may fail after storing (it parses the received file only
    to answer) and names parents hashed from the received identifiers; see
    ``Service.take_upload_stored``."""
    if not stored_ids:
        return result
    try:
        truth = stored_answer(orthanc.RestApiGet, stored_ids)
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
orthanc.RegisterOnStoredInstanceCallback(_on_stored)
orthanc.RegisterIncomingHttpRequestFilter(_on_http_request)
threading.Thread(target=_delete_worker, name="teachfile-guard", daemon=True).start()
if _service is not None:
    orthanc.RegisterRestCallback("/teachfile/dicom-web/studies", _on_stow)  # before /teachfile/.*
    orthanc.RegisterRestCallback(rest.ROUTE_REGEX, _on_teachfile_rest)
    orthanc.RegisterRestCallback("/instances", _on_instances)
    _logger.info("teachfile %s ready: profile %s, key %s, pid %d",
                 _service.versions["version"], _service.profile.name,
                 _service.key_fingerprint, os.getpid())
