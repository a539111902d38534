"""Certificates for a shared node: a small certificate authority, the node's certificate, and
certificates the node issues to colleagues (DICOM TLS client certificates) or a workshop's
nodes.

Everything is generated once and kept under ``$TEACHFILE_DATA/tls/``; private keys are written
mode 0600 from the first byte and never printed. Only the launcher and the CLI use this module
(Orthanc reads the PEM files it names), so ``cryptography`` is never imported inside Orthanc.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers accept for a server certificate


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - a dependency of the project
        raise ConfigError("the Python package 'cryptography' is missing; run scripts/setup") \
            from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def write_private(path: Path, data: bytes) -> None:
    """Write a secret: mode 0600 from creation, replaced atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate (DER), as browsers and ``openssl x509 -fingerprint`` show it."""
    x509 = _crypto()[0]
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def default_hosts(extra: Iterable[str] = ()) -> list[str]:
    """Names a client may use for this machine: loopback, the host name, and what is given."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    for name in (socket.gethostname(), socket.getfqdn(), *extra):
        name = name.strip()
        if name and name not in hosts:
            hosts.append(name)
    return hosts


def _san(hosts: Sequence[str]):  # type: ignore[no-untyped-def]
    x509 = _crypto()[0]
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def make_ca(key_path: Path, cert_path: Path, name: str) -> None:
    """A self-signed CA (EC P-256) that only signs the certificates of this node or workshop."""
    x509, hashes, serialization, ec, _, NameOID = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "teachfile")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def issue(ca_key_path: Path, ca_cert_path: Path, key_path: Path, cert_path: Path,
          common_name: str, hosts: Sequence[str] = ()) -> None:
    """A leaf certificate signed by the CA, good for TLS servers and clients (DICOM TLS
    authenticates both ends), with ``hosts`` as subject alternative names."""
    x509, hashes, serialization, ec, EKU, NameOID = _crypto()
    ca_key = serialization.load_pem_private_key(Path(ca_key_path).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(Path(ca_cert_path).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                           common_name[:64])]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH, EKU.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_cert.public_key()), critical=False))
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def cert_hosts(cert_path: Path) -> set[str]:
    x509 = _crypto()[0]
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)}


@dataclass(frozen=True)
class NodeTls:
    """The PEM files Orthanc is given, and what a colleague needs to check them."""

    directory: Path
    cert: Path          # the node's certificate (HTTPS and DICOM TLS)
    key: Path           # its private key (0600)
    https_pem: Path     # certificate + key in one file, as Orthanc's SslCertificate wants
    ca_cert: Path | None  # the node's own CA (None with a supplied certificate)
    trusted: Path       # the CA bundle DICOM TLS peers are checked against
    fingerprint: str
    generated: bool     # created during this call


def ensure_node_tls(data_dir: Path, name: str, hosts: Sequence[str] = (),
                    cert: Path | None = None, key: Path | None = None) -> NodeTls:
    """The node's TLS files, created at first start (idempotent).

    With ``cert``/``key`` (``TEACHFILE_TLS_CERT``/``TEACHFILE_TLS_KEY``) those are used as
    they are; otherwise the node makes its own CA and a certificate for ``hosts`` signed by it,
    and issues a new certificate (same CA) when a host is added.
    """
    tls = Path(data_dir) / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(tls, 0o700)
    (tls / "trusted").mkdir(exist_ok=True)
    generated = False
    ca_cert: Path | None = tls / "ca.crt"
    if cert or key:
        if not (cert and key):
            raise ConfigError("give both $TEACHFILE_TLS_CERT and $TEACHFILE_TLS_KEY")
        for p in (cert, key):
            if not Path(p).is_file():
                raise ConfigError(f"TLS file not found: {p}")
        cert_path, key_path = Path(cert), Path(key)
        if b"PRIVATE KEY" not in key_path.read_bytes():
            raise ConfigError(f"{key_path} holds no PEM private key")
        if b"BEGIN CERTIFICATE" not in cert_path.read_bytes():
            raise ConfigError(f"{cert_path} holds no PEM certificate")
        if not (tls / "ca.crt").exists():
            ca_cert = None
    else:
        ca_key = tls / "ca.key"
        assert ca_cert is not None
        if not ca_key.exists() or not ca_cert.exists():
            make_ca(ca_key, ca_cert, f"{name} node CA")
            generated = True
        cert_path, key_path = tls / "node.crt", tls / "node.key"
        wanted = set(hosts)
        if not cert_path.exists() or not key_path.exists() or \
                not wanted <= cert_hosts(cert_path):
            issue(ca_key, ca_cert, key_path, cert_path, name, sorted(wanted, key=str))
            generated = True
    cert_pem = cert_path.read_bytes()
    key_pem = key_path.read_bytes()
    bundle = cert_pem.rstrip(b"\n") + b"\n" + key_pem
    https_pem = tls / "https.pem"
    if not https_pem.exists() or https_pem.read_bytes() != bundle:
        write_private(https_pem, bundle)
    trusted = tls / "trusted.pem"
    parts = [ca_cert.read_bytes()] if ca_cert is not None and ca_cert.exists() else [cert_pem]
    parts += [p.read_bytes() for p in sorted((tls / "trusted").glob("*.pem"))]
    data = b"".join(p.rstrip(b"\n") + b"\n" for p in parts)
    if not trusted.exists() or trusted.read_bytes() != data:
        _write_public(trusted, data)
    return NodeTls(tls, cert_path, key_path, https_pem, ca_cert if ca_cert and ca_cert.exists()
                   else None, trusted, fingerprint(cert_pem), generated)


def trust(data_dir: Path, name: str, pem: bytes) -> Path:
    """Add a CA (or a peer's certificate) to the bundle DICOM TLS peers are checked against."""
    if b"BEGIN CERTIFICATE" not in pem:
        raise ConfigError("not a PEM certificate")
    _crypto()[0].load_pem_x509_certificates(pem)  # raises on garbage
    tls = Path(data_dir) / "tls" / "trusted"
    tls.mkdir(parents=True, exist_ok=True)
    out = tls / f"{name}.pem"
    _write_public(out, pem)
    return out
