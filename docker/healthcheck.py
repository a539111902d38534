#!/usr/bin/env python3
"""Container healthcheck: healthy only when the teachfile plugin answers and may receive.

The image's own probe (``/probes/test-aliveness.py``) calls ``/changes``, which answers even when
the plugin failed to load; a node whose plugin is down refuses everything, so Docker must see
it as unhealthy. Reads the port and the admin credentials from the configuration the image
generated (``/tmp/orthanc.json``), so nothing secret is on the command line. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_CONFIG = "/tmp/orthanc.json"


def check(config_path: Path, user: str = "admin", timeout: float = 5.0) -> tuple[bool, str]:
    """``(healthy, reason)``; the reason never holds a secret."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, f"cannot read {config_path}: {type(exc).__name__}"
    port = int(config.get("HttpPort", 8042))
    password = (config.get("RegisteredUsers") or {}).get(user)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/teachfile/status")
    if password is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return False, f"/teachfile/status answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"/teachfile/status did not answer: {type(exc).__name__}"
    if not status.get("key_fingerprint"):
        return False, "the plugin answered without a key fingerprint"
    key_check = status.get("key_check")
    if isinstance(key_check, dict) and key_check.get("may_receive") is False:
        return False, f"pseudonym key check: {key_check.get('state')}"
    return True, "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, type=Path)
    parser.add_argument("--user", default="admin")
    args = parser.parse_args(argv)
    healthy, reason = check(args.config, args.user)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
