"""Orthanc settings that keep a node answering under silent or half-sent clients (issue 15).

Shared by the launcher (``make run``, the tests) and the roster's rendered configurations, so a
workshop server is as hard to silence as a local node.

- DICOM: Orthanc 1.10's defaults are 4 association threads and a 30 s ``DicomScpTimeout``
  during which an association that sends nothing holds its thread. 16 threads leave room for
  real senders while a few associations idle; 15 s still spans the pauses between instances
  of a normal sender (a sender cut off reconnects). Connections that never send an
  association request are the plugin's job (``teachfile.node.dicomguard``: Orthanc has no
  setting for them).
- HTTP: civetweb's ``request_timeout_ms`` (Orthanc's ``HttpRequestTimeout``, default 30 s)
  bounds the whole time a worker waits for a request's headers, and each wait for more of
  its body. 55 half-sent requests held Orthanc's 50 workers for 29 s; 10 s keeps that short
  while leaving slow links time for every read. Bodies are read only after authentication.
"""

from __future__ import annotations

from typing import Any

DICOM_THREADS = 16
DICOM_SCP_TIMEOUT = 15
HTTP_REQUEST_TIMEOUT = 10
#: Seconds an accepted DICOM connection may take to send its A-ASSOCIATE-RQ before the plugin
#: drops it; and how long the kernel keeps a silent connection from Orthanc (TCP_DEFER_ACCEPT).
DICOM_REQUEST_TIMEOUT = 2
DICOM_DEFER_ACCEPT = 60


def answering_config() -> dict[str, Any]:
    """The Orthanc options above, to merge into a node's or a server's configuration."""
    return {
        "DicomThreadsCount": DICOM_THREADS,
        "DicomScpTimeout": DICOM_SCP_TIMEOUT,
        "HttpRequestTimeout": HTTP_REQUEST_TIMEOUT,
    }
