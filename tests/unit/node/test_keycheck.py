"""The key check that stops a node with another pseudonym key from joining a cluster."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from teachfile.node import keycheck
from teachfile.node.keycheck import FIRST, MATCH, MISMATCH, UNAVAILABLE, check_directory, decide
from teachfile.node.keys import fingerprint

FP_A = fingerprint(b"a" * 32)
FP_B = fingerprint(b"b" * 32)


@pytest.mark.parametrize(
    ("recorded", "created", "state", "may_receive"),
    [
        (None, False, UNAVAILABLE, True),
        (FP_A, True, FIRST, True),
        (FP_A, False, MATCH, True),
        (FP_B, False, MISMATCH, False),
        ("not hex!", False, UNAVAILABLE, True),
    ],
)
def test_decide(recorded: str | None, created: bool, state: str, may_receive: bool) -> None:
    result = decide(recorded, FP_A, created=created)
    assert result.state == state
    assert result.may_receive is may_receive
    assert result.local == FP_A
    body = result.as_json()
    assert body["state"] == state and body["local_fingerprint"] == FP_A
    json.dumps(body)


def test_decide_rejects_a_malformed_local_fingerprint() -> None:
    with pytest.raises(ValueError):
        decide(FP_A, "KEY")


def test_mismatch_explains_without_secrets() -> None:
    result = decide(FP_B, FP_A)
    assert "split" in result.detail
    assert result.as_json()["cluster_fingerprint"] == FP_B


def test_first_node_records_then_others_compare(tmp_path: Path) -> None:
    first = check_directory(tmp_path, FP_A)
    assert first.state == FIRST
    assert check_directory(tmp_path, FP_A).state == MATCH
    other = check_directory(tmp_path, FP_B)
    assert other.state == MISMATCH and other.recorded == FP_A
    # The record holds the fingerprint only, and no temporary file is left behind.
    marker = tmp_path / keycheck.MARKER_NAME
    assert json.loads(marker.read_text()) == {"key_fingerprint": FP_A}
    assert sorted(p.name for p in tmp_path.iterdir()) == [keycheck.MARKER_NAME]


def test_missing_directory_is_created(tmp_path: Path) -> None:
    assert check_directory(tmp_path / "storage" / "new", FP_A).state == FIRST


def test_unreadable_record_is_unavailable_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / keycheck.MARKER_NAME).write_text("{not json")
    result = check_directory(tmp_path, FP_A)
    assert result.state == UNAVAILABLE and result.may_receive
    assert keycheck.MARKER_NAME in result.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert check_directory(tmp_path, FP_A).state == UNAVAILABLE
    finally:
        tmp_path.chmod(0o700)


def _race(args: tuple[str, str]) -> str:
    directory, fp = args
    return check_directory(Path(directory), fp).state


def test_concurrent_starts_elect_exactly_one_key(tmp_path: Path) -> None:
    """Nodes started together: one records its key, every other one compares with it."""
    fps = [FP_A, FP_B] * 4
    with multiprocessing.get_context("fork").Pool(4) as pool:
        states = pool.map(_race, [(str(tmp_path), fp) for fp in fps])
    assert states.count(FIRST) == 1
    winner = fps[states.index(FIRST)]
    for fp, state in zip(fps, states, strict=True):
        if state != FIRST:
            assert state == (MATCH if fp == winner else MISMATCH)
