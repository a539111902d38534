"""A node that keeps answering and keeps its memory (issue 15), on real Orthanc processes.

One node serves the whole module; each test leaves it as it found it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Node, start_node


@pytest.fixture(scope="module")
def anode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = start_node(tmp_path_factory.mktemp("answering"), aet="ANSWERING")
    yield n
    n.stop()


def _rss_mb(node: Node) -> float:
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_no_upload_body_is_held_after_its_request(anode: Node) -> None:
    """Plugin 4.0 kept every REST body alive (a 200 MB body left +200 MB resident). Three
    48 MB bodies (above glibc's largest mmap threshold, so a freed one leaves RSS) may leave
    at most one body's worth behind; leaked, they leave three."""
    body = os.urandom(1 << 20) * 48
    anode.post("/instances", data=b"warm-up")
    before = _rss_mb(anode)
    for _ in range(3):
        r = anode.post("/instances", data=body, headers={"Content-Type": "application/dicom"},
                       timeout=300)
        assert r.status_code == 400, r.text[:300]
    growth = _rss_mb(anode) - before
    assert growth < 48, f"{growth:.0f} MB still resident after three 48 MB uploads"
