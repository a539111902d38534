"""Keep the DICOM port answering when clients connect and send nothing.

Measured on Debian's Orthanc 1.10.1: four idle TCP connections to the DICOM port blocked every
C-STORE and C-ECHO for ~125 s, and reopening them kept reception down indefinitely. The cause
is in Orthanc's DICOM server, not its worker threads: one thread (``DICOM-SERVER``) accepts
connections and reads each one's A-ASSOCIATE-RQ itself (``Internals::AcceptAssociation`` calls
DCMTK's ``ASC_receiveAssociation``), and DCMTK waits for that first PDU for the network's ARTIM
timeout, which Orthanc hard-codes to 30 s (``ASC_initializeNetwork(NET_ACCEPTOR, port, 30,
...)`` in ``DicomServer::Start``, 1.10 to 1.13). Four silent clients: four times 30 s, one after
the other, while every real sender waits in the kernel's accept queue. ``DicomThreadsCount``
and ``DicomScpTimeout`` only govern associations already accepted; Orthanc has no setting for
this timeout.

So the plugin, which runs inside the Orthanc process, does it from the side:

- The listening socket gets ``TCP_DEFER_ACCEPT``: the kernel hands Orthanc a connection only
  once its first bytes arrive (a DICOM requestor, or a TLS client, always speaks first), so a
  silent client stays in the kernel for ``defer_accept`` seconds instead of in Orthanc's way.
- Any accepted connection on the DICOM port that Orthanc has not answered (nothing it sent was
  acknowledged: no A-ASSOCIATE-AC, -RJ or TLS handshake) after ``request_timeout`` seconds is
  shut down, which wakes Orthanc's accept thread at once (DCMTK sees the peer gone); after
  ``busy_timeout`` only, when other connections wait in the accept queue behind it. A real
  requestor sends its A-ASSOCIATE-RQ within one round trip of connecting and is answered in
  milliseconds; associations already established are never touched.

Everything is read from the process's own descriptors (``/proc/self/fd``, ``fstat``,
``getsockname``, ``TCP_INFO``); a socket is acted on only after ``fstat`` proves the duplicated
descriptor is still the socket that was inspected. Not from ``/proc/net/tcp``: reading it walks
the kernel's whole established-connection hash table (262,144 buckets on a 24 GB machine,
~10 ms per read measured), which at ten passes a second cost a fifth of a core, idle or not,
and slowed reception by as much.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("teachfile")

TCP_ESTABLISHED = 0x01
TCP_LISTEN = 0x0A
#: ``struct tcp_info``: ``tcpi_bytes_acked`` (u64) is at offset 120 (Linux >= 4.1).
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_OFFSET = 120
#: ``tcpi_unacked`` (u32) at offset 24: for a listening socket, its accept queue's length.
_UNACKED = struct.Struct("=I")
_UNACKED_OFFSET = 24
_TCP_INFO_SIZE = 232
TCP_DEFER_ACCEPT = getattr(socket, "TCP_DEFER_ACCEPT", 9)


@dataclass(frozen=True)
class TcpEntry:
    local_port: int
    state: int
    inode: int
    #: For a listening socket, the connections waiting in its accept queue.
    rx_queue: int = 0


def socket_fds(fd_dir: Path = Path("/proc/self/fd")) -> dict[int, int]:
    """Socket inode -> one file descriptor of this process that refers to it."""
    out: dict[int, int] = {}
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            fd = int(name)
            st = os.fstat(fd)
        except (OSError, ValueError):
            continue  # closed since the listing (the listing's own descriptor, for one)
        if stat.S_ISSOCK(st.st_mode):
            out.setdefault(st.st_ino, fd)
    return out


#: What :func:`inspect_socket` says of a socket that can never become one on the DICOM port.
ELSEWHERE = TcpEntry(0, 0, 0)


def inspect_socket(sock: socket.socket, port: int) -> TcpEntry | None:
    """The socket's TCP state if its local port is ``port``; :data:`ELSEWHERE` for a socket
    that is not TCP or is bound to another port (neither can change); None for one not bound
    yet or not readable now (looked at again next time)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return ELSEWHERE
    try:
        local = sock.getsockname()[1]
        if local != port:
            return ELSEWHERE if local else None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    if len(info) < _UNACKED_OFFSET + 4:
        return None
    queue = int(_UNACKED.unpack_from(info, _UNACKED_OFFSET)[0]) if info[0] == TCP_LISTEN else 0
    return TcpEntry(port, info[0], inode, queue)


def unanswered_too_long(first_seen: float, now: float, bytes_acked: int,
                        timeout: float) -> bool:
    """An accepted connection the node never answered, for longer than ``timeout``."""
    return bytes_acked == 0 and now - first_seen >= timeout


def _bytes_acked(sock: socket.socket) -> int | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_OFFSET + 8:
        return None  # a kernel without the field: never act
    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_OFFSET)[0])


def _dup_socket(fd: int, inode: int) -> socket.socket | None:
    """A duplicate of ``fd`` as a socket object, only if it is still socket ``inode``."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        if os.fstat(dup).st_ino != inode:
            os.close(dup)
            return None
        return socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None


@dataclass
class DicomGuard:
    """One pass of :meth:`tick` every fraction of a second keeps the DICOM port answering."""

    port: int
    request_timeout: float = 2.0
    busy_timeout: float = 0.5
    defer_accept: int = 60
    clock: Callable[[], float] = time.monotonic
    fd_dir: Path = Path("/proc/self/fd")
    dropped: int = 0
    _first_seen: dict[int, float] = field(default_factory=dict)
    _deferred: set[int] = field(default_factory=set)
    _elsewhere: set[int] = field(default_factory=set)

    def _entries(self, fds: dict[int, int]) -> Iterable[TcpEntry]:
        """This process's sockets on the DICOM port; other sockets are remembered as such, so
        a pass costs one ``fstat`` per descriptor once they are known."""
        self._elsewhere &= fds.keys()
        for inode, fd in fds.items():
            if inode in self._elsewhere:
                continue
            sock = _dup_socket(fd, inode)
            if sock is None:
                continue
            try:
                entry = inspect_socket(sock, self.port)
            finally:
                sock.close()
            if entry is ELSEWHERE:
                self._elsewhere.add(inode)
            elif entry is not None:
                yield entry

    def tick(self) -> int:
        """Inspect the DICOM port's sockets once; returns how many connections were dropped."""
        fds = socket_fds(self.fd_dir)
        entries = list(self._entries(fds))
        listening = [e.inode for e in entries if e.state == TCP_LISTEN]
        waiting = sum(e.rx_queue for e in entries if e.state == TCP_LISTEN)
        established = [e.inode for e in entries if e.state == TCP_ESTABLISHED]
        now = self.clock()
        self._first_seen = {i: self._first_seen.get(i, now) for i in established}
        todo_listen = [i for i in listening if i not in self._deferred] \
            if self.defer_accept > 0 else []
        if not established and not todo_listen:
            return 0
        for inode in todo_listen:
            if inode in fds and self._defer(fds[inode], inode):
                self._deferred.add(inode)
        dropped = 0
        timeout = min(self.request_timeout, self.busy_timeout) if waiting \
            else self.request_timeout
        if timeout > 0:
            for inode in established:
                if inode in fds and now - self._first_seen[inode] >= timeout:
                    dropped += self._drop_if_unanswered(fds[inode], inode, now, timeout)
        self.dropped += dropped
        return dropped

    def _defer(self, fd: int, inode: int) -> bool:
        sock = _dup_socket(fd, inode)
        if sock is None:
            return False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, self.defer_accept)
            log.info("DICOM port %d: connections reach Orthanc once they send data "
                     "(TCP_DEFER_ACCEPT %d s)", self.port, self.defer_accept)
            return True
        except OSError as exc:
            log.warning("DICOM port %d: cannot set TCP_DEFER_ACCEPT (%s)", self.port,
                        type(exc).__name__)
            return True  # do not retry forever
        finally:
            sock.close()

    def _drop_if_unanswered(self, fd: int, inode: int, now: float, timeout: float) -> int:
        sock = _dup_socket(fd, inode)
        if sock is None:
            return 0
        try:
            acked = _bytes_acked(sock)
            if acked is None or not unanswered_too_long(self._first_seen[inode], now, acked,
                                                         timeout):
                return 0
            sock.shutdown(socket.SHUT_RDWR)
            return 1
        except OSError:
            return 0
        finally:
            sock.close()


def run_forever(guard: DicomGuard, interval: float = 0.1,
                on_drop: Callable[[int], None] | None = None) -> None:
    """The guard's thread: never raises, never stops."""
    last_log = 0.0
    pending = 0
    while True:
        try:
            n = guard.tick()
            if n:
                pending += n
                if on_drop is not None:
                    on_drop(n)
            if pending and time.monotonic() - last_log > 60:
                log.warning("DICOM port %d: dropped %d connection(s) that sent no association "
                            "request within %.0f s", guard.port, pending, guard.request_timeout)
                pending, last_log = 0, time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the guard must outlive any surprise
            log.error("DICOM guard: %s", type(exc).__name__)
            time.sleep(5)
        time.sleep(interval)
