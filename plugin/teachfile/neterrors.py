"""What to tell a user whose request to a node failed before any answer came back.

``requests`` reports ``InvalidSchema`` or ``ConnectionError``: true, but the user then has to
guess what to change. These sentences say what went wrong in the user's terms (the ``--url``
they typed, the host and port it names) and what to try.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

import requests


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo.extend([e.__cause__, e.__context__])
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return out


def _where(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return host, str(port)


def explain(exc: requests.RequestException, url: str, timeout: float | None = None) -> str:
    """One sentence for a failed request to ``url`` (the ``--url`` the user gave)."""
    if isinstance(exc, requests.exceptions.InvalidSchema | requests.exceptions.MissingSchema):
        return (f"--url needs http:// or https:// in front (got {url!r}; for example "
                "http://127.0.0.1:8042)")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.URLRequired):
        return f"--url is not a valid URL (got {url!r}; for example http://127.0.0.1:8042)"
    host, port = _where(url)
    if isinstance(exc, requests.exceptions.SSLError):
        return (f"the TLS handshake with {host}:{port} failed: does the node speak https on "
                "that port (or plain http?), and is its certificate trusted?")
    wait = f" within {timeout:g} s" if timeout else ""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return (f"no connection to {host}:{port}{wait}: is the address right, and does a "
                "firewall let it through?")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return (f"the node at {url} accepted the connection but did not answer{wait}: it may "
                "be busy or stuck; see its log")
    causes = _causes(exc)
    if any(isinstance(c, socket.gaierror) for c in causes) or any(
            "Name or service not known" in str(c) or "Temporary failure in name resolution"
            in str(c) for c in causes):
        return f"cannot resolve the host name {host!r}: check --url"
    if any(isinstance(c, ConnectionRefusedError) or getattr(c, "errno", None)
           == errno.ECONNREFUSED for c in causes) or any(
            "Connection refused" in str(c) for c in causes):
        return (f"nothing listens on port {port} of {host}: is the node running (teachfile "
                "run), and is the port in --url its HTTP port?")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return (f"the connection to {host}:{port} failed or was closed before an answer: is it "
                "an Orthanc HTTP port (not its DICOM port)?")
    return f"the request to {url} failed before an answer came back; check --url"
