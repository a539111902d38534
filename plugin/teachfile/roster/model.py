"""The roster: one YAML file describing a workshop network, validated into typed models.

Validation happens here, on the YAML node tree (which keeps line and column marks), so that
every error can point at the offending spot and ALL errors are reported in one run: an
instructor fixing a 20-node roster should not discover mistakes one at a time. Templates only
ever see the dataclasses below, never raw YAML.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from base64 import b32encode
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node, SequenceNode

from ..errors import ConfigError
from .source import Diagnostic, Reader, RosterError, where

DEFAULT_PERMISSIONS: tuple[str, ...] = ("echo", "find", "move", "store")
PASSWORD_CONTEXT = b"teachfile-roster-password\0"

_AET_RE = re.compile(r"^[A-Z0-9_-]{1,16}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_PLACEHOLDER_RE = re.compile(r"\{n(?:\+(\d{1,6}))?(?::0?(\d))?d?\}")


@dataclass(frozen=True)
class User:
    name: str
    password: str
    role: str


@dataclass(frozen=True)
class Server:
    name: str
    aet: str
    host: str
    dicom_port: int
    http_port: int
    users: tuple[User, ...]
    modalities_in_database: bool = False


@dataclass(frozen=True)
class Participant:
    name: str
    aet: str
    host: str
    port: int
    http_port: int
    permissions: tuple[str, ...]
    password: str
    role: str | None = None
    #: (line, col) of the entry or of the generate block, for cross-entry error messages.
    where: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


@dataclass(frozen=True)
class Plugin:
    profile: str = "teaching"
    plugins: str = "/usr/share/orthanc/plugins"
    #: native/restcall.c as the image builds it, listed before ``plugins`` ("" leaves it out).
    native_plugin: str = "/opt/teachfile/lib/teachfile-restcall.so"
    python_script: str = "/opt/teachfile/plugin/teachfile_entry.py"
    config_directory: str = "/opt/teachfile/orthanc-config"
    data_directory: str = "/var/lib/orthanc/teachfile"
    storage_directory: str = "/var/lib/orthanc/db"


@dataclass(frozen=True)
class Roster:
    title: str
    server: Server
    participants: tuple[Participant, ...]
    peer_mode: bool
    plugin: Plugin
    docker_image: str
    docker_config_path: str
    #: The compose network's subnet, when every address is IPv4 and fits one (else ``None``).
    subnet: str | None
    #: ``tls: true``: a workshop CA, a certificate per node and for the server, DICOM TLS
    #: everywhere and HTTPS on the server (see :mod:`teachfile.roster.pki`).
    tls: bool = False


# --------------------------------------------------------------------------- value checks


def aet_problem(aet: str) -> str | None:
    """Why ``aet`` is not a portable AE title, or ``None``."""
    if _AET_RE.match(aet):
        return None
    if not 1 <= len(aet) <= 16:
        return f"AET {aet!r} must be 1 to 16 characters long (it has {len(aet)})"
    if _AET_RE.match(aet.upper()):
        return f"AET {aet!r} must be upper case (did you mean {aet.upper()!r}?)"
    return f"AET {aet!r} may only contain A-Z, 0-9, '-' and '_'"


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IPv4 address nor a hostname, or ``None``."""
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not a valid IPv4 address"
        return None
    if len(host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        return f"{host!r} is neither a valid IPv4 address nor a valid hostname"
    if labels[-1].isdigit():
        return f"{host!r} is not a valid hostname (its last label is numeric)"
    return None


def is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def derive_password(secret: str, user: str) -> str:
    """A password that only the roster's secret can reproduce: keeps rendering deterministic
    without writing a password per participant. Lower-case base32, so it pastes into shells."""
    digest = hmac.new(secret.encode(), PASSWORD_CONTEXT + user.encode(), hashlib.sha256).digest()
    return b32encode(digest).decode("ascii").lower()[:20]


def expand_pattern(pattern: str, n: int) -> str:
    """``{n}``, ``{n:02}`` and ``{n+100}`` placeholders; nothing else (no format injection)."""

    def sub(m: re.Match[str]) -> str:
        value = n + int(m.group(1) or 0)
        return str(value).zfill(int(m.group(2) or 0))

    return _PLACEHOLDER_RE.sub(sub, pattern)


def pattern_problem(pattern: str) -> str | None:
    rest = _PLACEHOLDER_RE.sub("", pattern)
    if "{" in rest or "}" in rest:
        return f"pattern {pattern!r} has a placeholder other than {{n}}, {{n:02}} or {{n+K}}"
    if rest == pattern:
        return f"pattern {pattern!r} has no {{n}} placeholder, so every generated value is equal"
    return None


# --------------------------------------------------------------------------- YAML reading

_TOP_KEYS = ("version", "title", "secret", "secret_env", "server", "participants", "peer_mode",
             "plugin", "docker", "network", "tls")
_SERVER_KEYS = ("name", "aet", "host", "dicom_port", "http_port", "users",
                "modalities_in_database")
_USER_KEYS = ("name", "password", "role")
_PARTICIPANTS_KEYS = ("defaults", "generate", "nodes")
_DEFAULTS_KEYS = ("port", "http_port", "permissions", "role")
_GENERATE_KEYS = ("count", "start", "name", "aet", "host", "host_start", "port", "http_port",
                  "permissions", "role")
_NODE_KEYS = ("name", "aet", "host", "port", "http_port", "permissions", "role", "password")
_PLUGIN_KEYS = ("profile", "plugins", "native_plugin", "python_script", "config_directory",
                "data_directory", "storage_directory")
_DOCKER_KEYS = ("image", "config_path")
_NETWORK_KEYS = ("subnet",)


@dataclass(frozen=True)
class _Settings:
    """What participants inherit from ``participants.defaults`` unless they say otherwise."""

    port: int = 11112
    http_port: int = 8042
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS
    role: str | None = None


# --------------------------------------------------------------------------- loading


def load_roster(path: Path | str, environ: Mapping[str, str] | None = None) -> Roster:
    """Read and validate a roster file; raise :class:`RosterError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read roster {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise RosterError([Diagnostic(str(path), line, 1, "the roster is not UTF-8 text")]) \
            from None
    return parse_roster(text, str(path), environ)


def parse_roster(text: str, path: str = "roster.yaml",
                 environ: Mapping[str, str] | None = None) -> Roster:
    env = os.environ if environ is None else environ
    reader = Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RosterError([Diagnostic(path, line, col, f"YAML syntax: {exc.problem}")]) from None
    if root is None:
        raise RosterError([Diagnostic(path, 1, 1, "the roster is empty")])
    roster = _build(reader, root, env)
    if reader.diagnostics or roster is None:
        raise RosterError(reader.diagnostics)
    return roster


def _build(r: Reader, root: Node, env: Mapping[str, str]) -> Roster | None:
    top = r.mapping(root, _TOP_KEYS, "the roster")
    if top is None:
        return None
    if "version" in top:
        r.integer(top["version"], "version", 1, 1)
    title = r.string(top["title"], "title") if "title" in top else "Teaching-file workshop"
    secret = _secret(r, top, env)
    peer_mode = bool(r.boolean(top["peer_mode"], "peer_mode")) if "peer_mode" in top else False
    tls = bool(r.boolean(top["tls"], "tls")) if "tls" in top else False
    plugin = _plugin(r, top.get("plugin"))
    image, config_path = "orthanc-teachfile:0.1.0", "/etc/orthanc/orthanc.json"
    if "docker" in top:
        docker = r.mapping(top["docker"], _DOCKER_KEYS, "docker") or {}
        if "image" in docker:
            image = r.string(docker["image"], "docker.image") or image
        if "config_path" in docker:
            config_path = r.string(docker["config_path"], "docker.config_path") or config_path

    if "server" not in top:
        r.error(root, "missing required key 'server'")
        return None
    server = _server(r, top["server"], secret)
    participants = _participants(r, top.get("participants"), root, secret)
    _cross_check(r, server, participants, top["server"])
    if server is None:
        return None
    subnet = _subnet(r, top.get("network"), server, participants)
    if "participants" in top and not participants and not r.diagnostics:
        r.error(top["participants"], "the roster defines no participant")
    return Roster(title or "", server, tuple(participants), peer_mode, plugin, image,
                  config_path, subnet, tls)


def _secret(r: Reader, top: dict[str, Node], env: Mapping[str, str]) -> str | None:
    """The roster's secret; ``None`` if none is declared, ``""`` if the declared one is bad."""
    if "secret" in top and "secret_env" in top:
        r.error(top["secret_env"], "give either 'secret' or 'secret_env', not both")
        return ""
    if "secret" in top:
        secret = r.string(top["secret"], "secret")
        if secret is not None and len(secret) < 16:
            r.error(top["secret"], "secret must be at least 16 characters long")
            return ""
        return secret or ""
    if "secret_env" in top:
        name = r.string(top["secret_env"], "secret_env")
        if name is None:
            return ""
        if len(env.get(name, "")) < 16:
            r.error(top["secret_env"], f"environment variable {name} must be set to a secret"
                    " of at least 16 characters")
            return ""
        return env[name]
    return None


def _password(r: Reader, fields: dict[str, Node], at: Node, secret: str | None,
              user: str | None, what: str) -> str:
    if "password" in fields:
        return r.string(fields["password"], f"{what} password") or ""
    if user is None:
        return ""
    if secret is None:
        r.error(at, f"{what} has no password and the roster has no 'secret' to derive one from")
    # An empty secret was declared but is invalid: that error is already reported.
    return derive_password(secret, user) if secret else ""


def _plugin(r: Reader, node: Node | None) -> Plugin:
    if node is None:
        return Plugin()
    fields = r.mapping(node, _PLUGIN_KEYS, "plugin") or {}
    values = {key: r.string(value, f"plugin.{key}") for key, value in fields.items()}
    return Plugin(**{k: v for k, v in values.items() if v is not None})


def _server(r: Reader, node: Node, secret: str | None) -> Server | None:
    fields = r.mapping(node, _SERVER_KEYS, "server")
    if fields is None:
        return None
    for key in ("aet", "host"):
        if key not in fields:
            r.error(node, f"server: missing required key {key!r}")
    name = r.string(fields["name"], "server name") if "name" in fields else "teachfile"
    name = r.checked(fields.get("name", node), name, _name_problem(name))
    aet = host = None
    if "aet" in fields:
        aet = r.string(fields["aet"], "server aet")
        aet = r.checked(fields["aet"], aet, aet and aet_problem(aet))
    if "host" in fields:
        host = r.string(fields["host"], "server host")
        host = r.checked(fields["host"], host, host and host_problem(host))
    dicom_port = r.port(fields["dicom_port"], "server dicom_port") if "dicom_port" in fields \
        else 4242
    http_port = r.port(fields["http_port"], "server http_port") if "http_port" in fields else 8042
    if dicom_port is not None and dicom_port == http_port:
        r.error(fields.get("http_port", fields.get("dicom_port", node)),
                "server http_port must differ from dicom_port")
    in_db = False
    if "modalities_in_database" in fields:
        in_db = bool(r.boolean(fields["modalities_in_database"], "modalities_in_database"))
    users: list[User] = []
    if "users" not in fields:
        r.error(node, "server: missing required key 'users' (at least one admin)")
    elif not isinstance(fields["users"], SequenceNode) or not fields["users"].value:
        r.error(fields["users"], "server users must be a non-empty list")
    else:
        for item in fields["users"].value:
            user = _user(r, item, secret)
            if user is not None:
                users.append(user)
        if users and not any(u.role == "admin" for u in users):
            r.error(fields["users"], "server users need at least one with role 'admin'")
    if name is None or aet is None or host is None or dicom_port is None or http_port is None:
        return None
    return Server(name, aet, host, dicom_port, http_port, tuple(users), in_db)


def _user(r: Reader, node: Node, secret: str | None) -> User | None:
    fields = r.mapping(node, _USER_KEYS, "server user")
    if fields is None:
        return None
    if "name" not in fields or "role" not in fields:
        r.error(node, "server user: 'name' and 'role' are required")
        return None
    name = r.string(fields["name"], "user name")
    if name is not None and not _USER_RE.match(name):
        r.error(fields["name"], f"user name {name!r} may only contain letters, digits, '.', '-'"
                " and '_' (at most 64)")
        name = None
    role = r.role(fields["role"], "user role")
    password = _password(r, fields, node, secret, name, f"user {name!r}")
    if name is None or role is None or not password:
        return None
    return User(name, password, role)


def _name_problem(name: str | None) -> str | None:
    if name is None or _NAME_RE.match(name):
        return None
    return (f"name {name!r} must be lower case letters, digits, '-' or '_' (at most 63),"
            " as it names files, directories and containers")


def _participants(r: Reader, node: Node | None, root: Node,
                  secret: str | None) -> list[Participant]:
    if node is None:
        r.error(root, "missing required key 'participants'")
        return []
    fields = r.mapping(node, _PARTICIPANTS_KEYS, "participants")
    if fields is None:
        return []
    defaults = _Settings()
    if "defaults" in fields:
        given = r.mapping(fields["defaults"], _DEFAULTS_KEYS, "participants.defaults") or {}
        defaults = replace(defaults, **_common(r, given, "defaults"))
    out: list[Participant] = []
    if "generate" in fields:
        out.extend(_generate(r, fields["generate"], defaults, secret))
    if "nodes" in fields:
        items = fields["nodes"]
        if not isinstance(items, SequenceNode):
            r.error(items, "participants.nodes must be a list")
        else:
            for item in items.value:
                p = _explicit(r, item, defaults, secret)
                if p is not None:
                    out.append(p)
    return out


def _common(r: Reader, fields: dict[str, Node], what: str) -> dict[str, Any]:
    """The settings shared by defaults, the generated range and explicit nodes."""
    out: dict[str, Any] = {}
    for key in ("port", "http_port"):
        if key in fields and (value := r.port(fields[key], f"{what} {key}")) is not None:
            out[key] = value
    if "permissions" in fields:
        perms = r.permissions(fields["permissions"], f"{what} permissions")
        if perms is not None:
            out["permissions"] = perms
    if "role" in fields:
        out["role"] = r.role(fields["role"], f"{what} role")
    return out


def _generate(r: Reader, node: Node, defaults: _Settings,
              secret: str | None) -> list[Participant]:
    fields = r.mapping(node, _GENERATE_KEYS, "participants.generate")
    if fields is None:
        return []
    ok = True
    for key in ("count", "aet"):
        if key not in fields:
            r.error(node, f"participants.generate: missing required key {key!r}")
            ok = False
    if ("host" in fields) == ("host_start" in fields):
        r.error(node, "participants.generate needs exactly one of 'host' (a pattern)"
                " and 'host_start' (a first IPv4 address)")
        ok = False
    settings = replace(defaults, **_common(r, fields, "generate"))
    count = r.integer(fields["count"], "count", 1, 1000) if "count" in fields else None
    start = r.integer(fields["start"], "start", 0, 100000) if "start" in fields else 1
    patterns: dict[str, str] = {}
    for key in ("name", "aet", "host"):
        if key in fields:
            pattern = r.string(fields[key], f"generate {key} pattern")
            pattern = r.checked(fields[key], pattern, pattern and pattern_problem(pattern))
            if pattern is None:
                ok = False
            else:
                patterns[key] = pattern
    first: ipaddress.IPv4Address | None = None
    if "host_start" in fields:
        text = r.string(fields["host_start"], "host_start")
        if text is not None and not is_ipv4(text):
            r.error(fields["host_start"], f"host_start {text!r} is not a valid IPv4 address")
            ok = False
        elif text is not None:
            first = ipaddress.IPv4Address(text)
    if secret is None:
        r.error(node, "generated participants need the roster's 'secret' (or 'secret_env')"
                " to derive their passwords")
        ok = False
    if not ok or count is None or start is None or not secret:
        return []
    pos = where(node)
    out: list[Participant] = []
    for i in range(count):
        n = start + i
        aet = expand_pattern(patterns["aet"], n)
        name = (expand_pattern(patterns["name"], n) if "name" in patterns
                else aet.lower().replace("_", "-"))
        if first is not None:
            if int(first) + i > int(ipaddress.IPv4Address("255.255.255.254")):
                r.error(fields["host_start"], f"host_start + {count} runs past 255.255.255.254")
                return out
            host = str(first + i)
        else:
            host = expand_pattern(patterns["host"], n)
        problems = [(fields["aet"], aet_problem(aet)),
                    (fields.get("name", fields["aet"]), _name_problem(name)),
                    (fields.get("host", node), host_problem(host))]
        bad = False
        for at, problem in problems:
            if problem:
                r.error(at, f"generated participant {n}: {problem}")
                bad = True
        if bad:
            continue
        out.append(Participant(name, aet, host, settings.port, settings.http_port,
                               settings.permissions, derive_password(secret, name),
                               settings.role, pos))
    return out


def _explicit(r: Reader, node: Node, defaults: _Settings,
              secret: str | None) -> Participant | None:
    fields = r.mapping(node, _NODE_KEYS, "participant")
    if fields is None:
        return None
    missing = [k for k in ("name", "aet", "host") if k not in fields]
    if missing:
        r.error(node, f"participant: missing required key(s) {', '.join(map(repr, missing))}")
    settings = replace(defaults, **_common(r, fields, "participant"))
    name = r.string(fields["name"], "participant name") if "name" in fields else None
    name = r.checked(fields.get("name", node), name, _name_problem(name))
    aet = r.string(fields["aet"], "participant aet") if "aet" in fields else None
    aet = r.checked(fields.get("aet", node), aet, aet and aet_problem(aet))
    host = r.string(fields["host"], "participant host") if "host" in fields else None
    host = r.checked(fields.get("host", node), host, host and host_problem(host))
    password = _password(r, fields, node, secret, name, f"participant {name!r}")
    if name is None or aet is None or host is None or not password:
        return None
    return Participant(name, aet, host, settings.port, settings.http_port, settings.permissions,
                       password, settings.role, where(node))


def _cross_check(r: Reader, server: Server | None, participants: list[Participant],
                 server_node: Node) -> None:
    """Uniqueness across the whole network: names, AETs, user names and host:port pairs."""
    spos = where(server_node)
    names: dict[str, str] = {}
    aets: dict[str, str] = {}
    endpoints: dict[tuple[str, int], str] = {}
    users: dict[str, str] = {}
    if server is not None:
        names[server.name] = "the server"
        aets[server.aet] = "the server"
        endpoints[(server.host, server.dicom_port)] = "the server's DICOM port"
        endpoints[(server.host, server.http_port)] = "the server's HTTP port"
    for u in server.users if server is not None else ():
        if u.name in users:
            r.error(spos, f"server user {u.name!r} is listed twice")
        users[u.name] = "a server user"
    for p in participants:
        label = f"participant {p.name!r} (line {p.where[0]})"
        if p.name in names:
            r.error(p.where, f"name {p.name!r} is already used by {names[p.name]}")
        names.setdefault(p.name, label)
        if p.aet in aets:
            r.error(p.where, f"AET {p.aet!r} of participant {p.name!r} is already used by"
                    f" {aets[p.aet]}")
        aets.setdefault(p.aet, label)
        if p.port == p.http_port:
            r.error(p.where, f"participant {p.name!r}: port and http_port are both {p.port}")
        for port in sorted({p.port, p.http_port}):
            key = (p.host, port)
            if key in endpoints:
                r.error(p.where, f"{p.host}:{port} of participant {p.name!r} is already used by"
                        f" {endpoints[key]}")
            endpoints.setdefault(key, label)
        if p.role is not None:
            if p.name in users:
                r.error(p.where, f"participant {p.name!r} would get a server account, but"
                        f" {users[p.name]} already has that name")
            users.setdefault(p.name, label)


def _subnet(r: Reader, node: Node | None, server: Server,
            participants: list[Participant]) -> str | None:
    hosts = [server.host] + [p.host for p in participants]
    addresses = [ipaddress.IPv4Address(h) for h in hosts if is_ipv4(h)]
    if node is None:
        if not addresses or len(addresses) != len(hosts):
            return None
        net = ipaddress.IPv4Network(f"{addresses[0]}/24", strict=False)
        return str(net) if all(a in net for a in addresses) else None
    fields = r.mapping(node, _NETWORK_KEYS, "network") or {}
    if "subnet" not in fields:
        return None
    text = r.string(fields["subnet"], "network subnet")
    try:
        net = ipaddress.IPv4Network(text or "", strict=True)
    except ValueError:
        r.error(fields["subnet"], f"subnet {text!r} is not an IPv4 network such as 172.31.15.0/24")
        return None
    for a in addresses:
        if a not in net:
            r.error(fields["subnet"], f"address {a} is outside the subnet {net}")
        elif a in (net.network_address, net.broadcast_address):
            r.error(fields["subnet"], f"address {a} is the network or broadcast address of"
                    f" the subnet {net}")
    return str(net)
