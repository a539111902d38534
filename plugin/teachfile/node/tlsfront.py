"""HTTPS in front of Orthanc's HTTP port, for Orthanc builds whose own TLS cannot be used.

Debian bookworm's Orthanc 1.10.1 links the system civetweb 1.15, which calls a null OpenSSL
function pointer on the first HTTPS request (``SslEnabled`` true: the process dies with
SIGSEGV in a civetweb worker; measured with a plain self-signed RSA certificate and no plugin).
A public node therefore terminates TLS itself: this module listens on the node's public port,
speaks TLS only (TLS 1.2 at least), and relays each connection to Orthanc's HTTP server on an
internal loopback port, where ``RemoteAccessAllowed`` false lets nothing else in. A client that
speaks plain HTTP to the public port gets no HTTP answer at all.

Standard library only (it runs inside Orthanc's embedded Python); one thread per connection,
bounded.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from pathlib import Path

log = logging.getLogger("teachfile.tlsfront")

HANDSHAKE_TIMEOUT = 15.0
IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 64
_CHUNK = 65536


def server_context(pem: Path) -> ssl.SSLContext:
    """TLS 1.2+ with the certificate and key from one PEM file (Orthanc's SslCertificate form)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pem))
    return ctx


class TlsFront:
    def __init__(self, listen: str, port: int, target_port: int, pem: Path,
                 target_host: str = "127.0.0.1") -> None:
        self.listen, self.port = listen, port
        self.target = (target_host, target_port)
        self.context = server_context(pem)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._sock: socket.socket | None = None

    def start(self) -> None:
        """Bind now (so a port in use is an error at start-up), serve on a daemon thread."""
        family = socket.AF_INET6 if ":" in self.listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.listen, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"HTTPS port {self.port} already in use or not "
                          f"available ({exc.strerror})") from None
        sock.listen(128)
        self._sock = sock
        threading.Thread(target=self._accept, name="teachfile-https", daemon=True).start()

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                conn.close()  # overloaded: refuse rather than queue without bound
                continue
            threading.Thread(target=self._serve, args=(conn,), name="teachfile-https-conn",
                             daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        upstream: socket.socket | None = None
        tls: ssl.SSLSocket | None = None
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                return  # plain HTTP, a scanner, an untrusting client: nothing to relay
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _relay(tls, upstream)
        except OSError:
            pass
        except Exception as exc:  # noqa: BLE001 - one connection must never stop the front
            log.warning("HTTPS relay failed: %s", type(exc).__name__)
        finally:
            for s in (upstream, tls, raw):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass
            self._slots.release()


def _relay(tls: ssl.SSLSocket, upstream: socket.socket) -> None:
    tls.settimeout(IDLE_TIMEOUT)
    upstream.settimeout(IDLE_TIMEOUT)
    while True:
        # Decrypted bytes may wait inside the TLS object with nothing left on the socket.
        ready = [tls] if tls.pending() else select.select([tls, upstream], [], [],
                                                          IDLE_TIMEOUT)[0]
        if not ready:
            return  # idle
        if tls in ready:
            try:
                data = tls.recv(_CHUNK)
            except ssl.SSLWantReadError:
                data = None
            if data is not None:
                if not data:
                    return
                upstream.sendall(data)
        if upstream in ready:
            data = upstream.recv(_CHUNK)
            if not data:
                return
            tls.sendall(data)
