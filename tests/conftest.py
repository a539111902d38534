"""Shared fixtures: real Orthanc nodes that are stopped after each test, with their log shown
in the report of any test that fails."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RUNNING, Node, start_node  # noqa: E402

_NODES = pytest.StashKey[list[Node]]()


def pytest_report_header(config: pytest.Config) -> str:
    """Which Orthanc lane ($TEACHFILE_ORTHANC) this run's nodes start on."""
    from harness import lane_expectations

    try:
        want = lane_expectations()
    except Exception as exc:  # noqa: BLE001 - the nodes' start says it again, as a failure
        return f"teachfile lane: unusable ({exc})"
    return (f"teachfile lane: {want['lane']} (Orthanc {want['orthanc_version']}, Python plugin "
            f"{want['python_plugin_version']}, Python {want['python_version']})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        nodes = list(item.stash.get(_NODES, []))
        nodes += [n for n in RUNNING if n not in nodes]
        for n in nodes:
            report.sections.append((f"Orthanc log of {n.name}", n.log_text()[-20000:]))


@pytest.fixture
def node_factory(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Node]]:
    """Start nodes with ``node_factory(aet=..., extra_config=..., env=...)``."""
    nodes: list[Node] = []
    request.node.stash[_NODES] = nodes

    def make(**kw: Any) -> Node:
        aet = kw.get("aet", "TEACHFILE")
        data_dir = kw.pop("data_dir", None) or tmp_path_factory.mktemp(f"node-{aet.lower()}")
        n = start_node(data_dir, **kw)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.stop()


@pytest.fixture
def node(node_factory: Callable[..., Node]) -> Node:
    """One running teaching-file node with the default profile."""
    return node_factory()
