"""The DICOM guard on real loopback sockets of this process (no Orthanc)."""

from __future__ import annotations

import os
import socket

from teachfile.node.dicomguard import (
    ELSEWHERE,
    TCP_DEFER_ACCEPT,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    DicomGuard,
    inspect_socket,
    socket_fds,
    unanswered_too_long,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_own_sockets_give_port_state_inode_and_accept_queue() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    other = socket.socket()
    unbound = socket.socket()
    try:
        other.bind(("127.0.0.1", 0))
        fds = socket_fds()
        assert fds[os.fstat(srv.fileno()).st_ino] >= 0
        listening = inspect_socket(srv, port)
        assert listening is not None
        assert (listening.local_port, listening.state, listening.rx_queue) == (port, TCP_LISTEN, 3)
        assert listening.inode == os.fstat(srv.fileno()).st_ino
        assert inspect_socket(other, port) is ELSEWHERE  # bound elsewhere: never looked at again
        assert inspect_socket(unbound, port) is None  # may still bind to the port: looked at again
        conn, _ = srv.accept()
        try:
            entry = inspect_socket(conn, port)
            assert entry is not None and entry.state == TCP_ESTABLISHED
        finally:
            conn.close()
    finally:
        for s in (srv, other, unbound, *waiting):
            s.close()


def test_only_unanswered_connections_past_the_timeout_are_dropped() -> None:
    assert unanswered_too_long(0, 2.0, 0, 2.0)
    assert not unanswered_too_long(0, 1.9, 0, 2.0)
    assert not unanswered_too_long(0, 99, 68, 2.0)  # answered: an association, never touched


def _listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    return srv


def test_a_silent_accepted_connection_is_shut_down_and_an_answered_one_kept() -> None:
    srv = _listener()
    port = srv.getsockname()[1]
    clock = _Clock()
    guard = DicomGuard(port, request_timeout=2.0, defer_accept=0, clock=clock)
    silent = socket.create_connection(("127.0.0.1", port))
    talking = socket.create_connection(("127.0.0.1", port))
    talking.sendall(b"\x01\x00")
    a, _ = srv.accept()
    b, _ = srv.accept()
    try:
        # whichever accepted socket belongs to the talking client gets an answer
        for conn in (a, b):
            conn.settimeout(1)
        peer_talking = a if a.getpeername() == talking.getsockname() else b
        peer_talking.recv(2)
        peer_talking.sendall(b"\x02\x00")
        talking.recv(2)
        assert guard.tick() == 0  # first sight
        clock.now += 1.0
        assert guard.tick() == 0  # not yet
        clock.now += 1.5
        assert guard.tick() == 1
        silent.settimeout(2)
        assert silent.recv(1) == b""  # the node closed it
        talking.sendall(b"\x03")
        assert peer_talking.recv(1) == b"\x03"  # the answered connection is intact
        assert guard.dropped == 1
    finally:
        for s in (a, b, silent, talking, srv):
            s.close()


def test_the_listening_socket_defers_silent_connections() -> None:
    srv = _listener()
    try:
        guard = DicomGuard(srv.getsockname()[1], defer_accept=30)
        guard.tick()
        assert srv.getsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT) > 0
        guard.tick()  # set once
    finally:
        srv.close()
