"""The node's network: modalities, Orthanc peers and users, kept as the node's own data.

``orthanc.json`` is regenerated at every start, so anything added to it by hand, or through
Orthanc's ``PUT /modalities/{name}``, would vanish. The network lives instead in
``$TEACHFILE_DATA/network.json`` (mode 0600: it holds passwords) and the launcher merges it into
the configuration it writes. This module is the pure model (load, validate, merge) plus the one
locked read-modify-write that every writer (the CLI, the plugin's REST hook) goes through.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .roles import ROLES

FILE_NAME = "network.json"
VERSION = 1

#: Orthanc's per-modality permissions (all default to true in Orthanc).
PERMISSIONS = ("Echo", "Find", "FindWorklist", "Get", "Move", "Store", "StorageCommitment",
               "Transcoding")
#: What a colleague's viewer needs: look, query, retrieve. Storing is off unless asked for.
DEFAULT_PERMISSIONS = frozenset({"Echo", "Find", "Get", "Move", "Transcoding"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_AET = re.compile(r"^[A-Z0-9_-]{1,16}$")
_HOST = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The node's own administrator comes from $TEACHFILE_ADMIN_PASSWORD / admin-password.
RESERVED_USERS = frozenset({"admin"})


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{what} name must be 1-64 characters of A-Z a-z 0-9 _ . - "
                          f"(starting with a letter or digit), not {name!r}")
    return name


def check_aet(aet: object) -> str:
    if not isinstance(aet, str) or not _AET.match(aet):
        raise ConfigError(f"AE title must be 1-16 characters of A-Z 0-9 - _, not {aet!r}")
    return aet


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not _HOST.match(host):
        raise ConfigError(f"host must be a host name or an IP address, not {host!r}")
    return host


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"port must be a number between 1 and 65535, not {port!r}")
    return port


@dataclass(frozen=True)
class Modality:
    """A DICOM peer: who may query and retrieve (and where C-MOVE sends)."""

    name: str
    aet: str
    host: str
    port: int
    permissions: frozenset[str] = DEFAULT_PERMISSIONS
    tls: bool = False
    manufacturer: str = "Generic"

    def __post_init__(self) -> None:
        _check_name(self.name, "modality")
        check_aet(self.aet)
        _check_host(self.host)
        _check_port(self.port)
        unknown = set(self.permissions) - set(PERMISSIONS)
        if unknown:
            raise ConfigError(f"unknown permission(s) {', '.join(sorted(unknown))}; "
                              f"choose from {', '.join(PERMISSIONS)}")

    def to_orthanc(self) -> dict[str, Any]:
        """The object form of an entry of Orthanc's ``DicomModalities``."""
        out: dict[str, Any] = {"AET": self.aet, "Host": self.host, "Port": self.port,
                               "Manufacturer": self.manufacturer}
        for p in PERMISSIONS:
            out[f"Allow{p}"] = p in self.permissions
        out["UseDicomTls"] = self.tls
        return out

    @classmethod
    def from_orthanc(cls, name: str, body: Mapping[str, Any] | list[Any]) -> Modality:
        """From what ``PUT /modalities/{name}`` takes (object or ``[AET, host, port]`` form)."""
        if isinstance(body, list):
            if len(body) not in (3, 4):
                raise ConfigError("a modality is [AET, host, port] or [AET, host, port, "
                                  "manufacturer]")
            body = {"AET": body[0], "Host": body[1], "Port": body[2],
                    **({"Manufacturer": body[3]} if len(body) == 4 else {})}
        if not isinstance(body, Mapping):
            raise ConfigError("a modality is a JSON object")
        known = {"AET", "Host", "Port", "Manufacturer", "UseDicomTls"} | {
            f"Allow{p}" for p in PERMISSIONS}
        unknown = set(body) - known
        if unknown:
            raise ConfigError(f"modality {name!r}: unsupported field(s) "
                              f"{', '.join(sorted(unknown))}")
        port = body.get("Port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        # Orthanc's default for an absent Allow* is true; keep that meaning for REST callers.
        perms = frozenset(p for p in PERMISSIONS if body.get(f"Allow{p}", True) is not False)
        return cls(name=name, aet=body.get("AET", ""), host=body.get("Host", ""),
                   port=port,  # type: ignore[arg-type]  # validated in __post_init__
                   permissions=perms, tls=bool(body.get("UseDicomTls", False)),
                   manufacturer=str(body.get("Manufacturer", "Generic")))

    def to_json(self) -> dict[str, Any]:
        return {"aet": self.aet, "host": self.host, "port": self.port,
                "permissions": sorted(self.permissions), "tls": self.tls,
                "manufacturer": self.manufacturer}

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> Modality:
        return cls(name=name, aet=raw.get("aet", ""), host=raw.get("host", ""),
                   port=raw.get("port"),  # type: ignore[arg-type]
                   permissions=frozenset(raw.get("permissions", DEFAULT_PERMISSIONS)),
                   tls=bool(raw.get("tls", False)),
                   manufacturer=str(raw.get("manufacturer", "Generic")))


@dataclass(frozen=True)
class Peer:
    """Another Orthanc (an ``OrthancPeers`` entry): for sending cases node to node."""

    name: str
    url: str
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "peer")
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", self.url or ""):
            raise ConfigError(f"peer {self.name!r}: URL must be http(s)://host[:port]/")
        if (self.username is None) != (self.password is None):
            raise ConfigError(f"peer {self.name!r}: give both a user name and a password, "
                              "or neither")

    def to_orthanc(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Url": self.url}
        if self.username is not None:
            out.update(Username=self.username, Password=self.password)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "username": self.username, "password": self.password}


@dataclass(frozen=True)
class User:
    name: str
    password: str
    role: str = "viewer"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _USER.match(self.name):
            raise ConfigError(f"user name must be 1-64 characters of A-Z a-z 0-9 _ . -, "
                              f"not {self.name!r}")
        if self.name in RESERVED_USERS:
            raise ConfigError(f"user {self.name!r} is the node's own administrator "
                              "(its password: $TEACHFILE_ADMIN_PASSWORD or admin-password)")
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}; choose one of {', '.join(ROLES)}")
        if not isinstance(self.password, str) or len(self.password) < 8:
            raise ConfigError("a password has at least 8 characters")
        if any(ord(c) < 32 for c in self.password):
            raise ConfigError("a password has no control characters")

    def to_json(self) -> dict[str, Any]:
        return {"password": self.password, "role": self.role}


@dataclass(frozen=True)
class Network:
    modalities: Mapping[str, Modality] = field(default_factory=dict)
    peers: Mapping[str, Peer] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)

    def with_modality(self, m: Modality) -> Network:
        return replace(self, modalities={**self.modalities, m.name: m})

    def without_modality(self, name: str) -> Network:
        if name not in self.modalities:
            raise ConfigError(f"no modality named {name!r}")
        return replace(self, modalities={k: v for k, v in self.modalities.items() if k != name})

    def with_peer(self, p: Peer) -> Network:
        return replace(self, peers={**self.peers, p.name: p})

    def without_peer(self, name: str) -> Network:
        if name not in self.peers:
            raise ConfigError(f"no peer named {name!r}")
        return replace(self, peers={k: v for k, v in self.peers.items() if k != name})

    def with_user(self, u: User) -> Network:
        return replace(self, users={**self.users, u.name: u})

    def without_user(self, name: str) -> Network:
        if name not in self.users:
            raise ConfigError(f"no user named {name!r}")
        return replace(self, users={k: v for k, v in self.users.items() if k != name})

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "modalities": {k: v.to_json() for k, v in sorted(self.modalities.items())},
            "peers": {k: v.to_json() for k, v in sorted(self.peers.items())},
            "users": {k: v.to_json() for k, v in sorted(self.users.items())},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Network:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{FILE_NAME} must hold a JSON object")
        if raw.get("version", VERSION) != VERSION:
            raise ConfigError(f"{FILE_NAME}: unsupported version {raw.get('version')!r}")
        unknown = set(raw) - {"version", "modalities", "peers", "users"}
        if unknown:
            raise ConfigError(f"{FILE_NAME}: unknown section(s) {', '.join(sorted(unknown))}")
        mods = {n: Modality.from_json(n, v) for n, v in (raw.get("modalities") or {}).items()}
        peers = {n: Peer(n, v.get("url", ""), v.get("username"), v.get("password"))
                 for n, v in (raw.get("peers") or {}).items()}
        users = {n: User(n, v.get("password", ""), v.get("role", "viewer"))
                 for n, v in (raw.get("users") or {}).items()}
        return cls(mods, peers, users)


def network_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def load(path: Path) -> Network:
    """The network in ``path``; an absent file is an empty network, a broken one an error."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return Network()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return Network.from_json(raw)


def save(path: Path, network: Network) -> None:
    """Atomically, mode 0600 from the first byte (the file holds passwords)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(network.to_json(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = Path(path).with_name(Path(path).name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def update(path: Path, change: Callable[[Network], Network]) -> Network:
    """Read, change and write under a lock: the CLI and the running node may both write."""
    with _locked(path):
        network = change(load(path))
        save(path, network)
        return network


def merge_into(config: dict[str, Any], network: Network) -> dict[str, Any]:
    """The configuration with the network added; what the configuration already names wins
    for modalities and peers (the roster's own entries), users only add."""
    out = dict(config)
    mods = {n: m.to_orthanc() for n, m in network.modalities.items()}
    existing = out.get("DicomModalities") or {}
    out["DicomModalities"] = {**mods, **existing}
    peers = {n: p.to_orthanc() for n, p in network.peers.items()}
    out["OrthancPeers"] = {**peers, **(out.get("OrthancPeers") or {})}
    users = dict(out.get("RegisteredUsers") or {})
    section = dict(out.get("Teachfile") or {})
    roles = dict(section.get("Roles") or {})
    for name, user in network.users.items():
        if name in users:
            continue  # the node's own admin
        users[name] = user.password
        roles[name] = user.role
    out["RegisteredUsers"] = users
    if roles:
        section["Roles"] = roles
    out["Teachfile"] = section
    return out
