"""Orthanc's ingest transcoding, configured so that it reaches the node's own transcoder.

Why: with several associations, the node's lossless JPEG 2000 encode runs faster after the
received-instance callback, outside Orthanc's plugin mutex (see reception/deferred.py), and
the only place Orthanc runs a plugin's code there is its ingest transcoding. Orthanc asks the
transcoders in turn: the native plugin's comes first (it is loaded first) and takes only the
instances the reception handed over for it; anything else goes on to GDCM, as for any Orthanc
with ``IngestTranscoding``.

So it is only configured for a profile whose reception would store lossless JPEG 2000 anyway
(``transcoding.mode: lossless``, HTJ2K off); compressed input is never re-encoded by Orthanc
(what the reception keeps compressed stays as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..reception.profile import load_profile
from ..reception.transcode import J2K_LOSSLESS, TranscodePolicy


def ingest_config(profile: str, config_dir: Path) -> dict[str, Any]:
    """The ``IngestTranscoding*`` options of a node with this profile ({} for none)."""
    try:
        policy = TranscodePolicy.from_mapping(load_profile(profile, config_dir).transcoding)
    except (ConfigError, OSError, ValueError):
        return {}  # the plugin refuses to start with it, and says why
    if policy.mode != "lossless" or policy.htj2k:
        return {}
    return {
        "IngestTranscoding": J2K_LOSSLESS,
        "IngestTranscodingOfUncompressed": True,
        "IngestTranscodingOfCompressed": False,
    }
