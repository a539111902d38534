"""Rendering a validated :class:`~teachfile.roster.model.Roster` into every configuration file.

The Orthanc configurations are built here as Python dicts (so tests and ``apply`` use the very
same data) and written by templates with ``tojson``; nothing in a template assembles JSON by
hand. Output is deterministic: sorted keys, no timestamps, participants in roster order, so
re-rendering an unchanged roster changes no byte and a diff shows only real changes.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ..errors import ConfigError
from ..node.ingest import ingest_config
from ..node.limits import answering_config
from .model import Participant, Roster, is_ipv4
from .pki import CONTAINER_DIR
from .source import PERMISSIONS

#: Where the default templates live in a checkout and in the Docker image (/opt/teachfile).
DEFAULT_TEMPLATES = Path(__file__).resolve().parents[3] / "orthanc-config" / "templates"
#: The profiles this checkout ships (and the image copies).
_SHIPPED_CONFIG = DEFAULT_TEMPLATES.parent

_ALLOW_KEYS = {"echo": "AllowEcho", "find": "AllowFind", "move": "AllowMove", "get": "AllowGet",
               "store": "AllowStore"}


def _autoescape(name: str | None) -> bool:
    return bool(name) and (name.endswith(".html.j2") or name.endswith(".html"))  # type: ignore[union-attr]


def _csv_row(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def make_environment(templates: Path | None = None) -> jinja2.Environment:
    """The one Jinja2 environment: ``templates`` overrides the defaults file by file."""
    dirs = [str(templates)] if templates is not None else []
    dirs.append(str(DEFAULT_TEMPLATES))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs),
        undefined=jinja2.StrictUndefined,
        autoescape=_autoescape,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shquote"] = shlex.quote
    env.filters["csvrow"] = _csv_row
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": True}
    return env


# --------------------------------------------------------------------------- data


def modality(p: Participant, permissions: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An object-form ``DicomModalities`` entry; every Allow* is explicit (Orthanc defaults to
    true, which is not what a workshop server should assume)."""
    allowed = p.permissions if permissions is None else permissions
    entry: dict[str, Any] = {"AET": p.aet, "Host": p.host, "Port": p.port,
                             "Manufacturer": "Generic"}
    for perm in PERMISSIONS:
        entry[_ALLOW_KEYS[perm]] = perm in allowed
    return entry


def _tls(roster: Roster, stem: str, https: bool) -> dict[str, Any]:
    """DICOM TLS (and HTTPS) for one configuration, with the files of :mod:`.pki` as mounted
    in the container; nothing when the roster does not ask for TLS."""
    if not roster.tls:
        return {}
    d = CONTAINER_DIR
    out: dict[str, Any] = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": f"{d}/{stem}.crt",
        "DicomTlsPrivateKey": f"{d}/{stem}.key",
        "DicomTlsTrustedCertificates": f"{d}/ca.crt",
        "DicomTlsRemoteCertificateRequired": True,
        # Orthanc's own HTTPS client (peers) checks the workshop CA.
        "HttpsCACertificates": f"{d}/ca.crt",
        "HttpsVerifyPeers": True,
    }
    if https:
        out.update(SslEnabled=True, SslCertificate=f"{d}/https.pem", SslMinimumProtocolVersion=4)
    return out


def server_modalities(roster: Roster) -> dict[str, dict[str, Any]]:
    return {p.name: {**modality(p), **({"UseDicomTls": True} if roster.tls else {})}
            for p in roster.participants}


def _security() -> dict[str, Any]:
    """Unknown callers may only C-ECHO (to debug connectivity); everything else needs a
    declared modality, from its declared address."""
    return {
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomCheckCalledAet": True,
        "UnknownSopClassAccepted": False,
        "DeidentifyLogs": True,
        # Participants must be able to read why a request failed (issue 15).
        "HttpDescribeErrors": True,
        # Silent and half-sent clients must not hold the DICOM and HTTP threads.
        **answering_config(),
        # WebDAV uploads are stored after their 201: a refusal could not reach the sender.
        "WebDavUploadAllowed": False,
    }


def _plugin(roster: Roster, roles: dict[str, str]) -> dict[str, Any]:
    pl = roster.plugin
    return {
        # The native plugin first (Orthanc loads a list in order and the Python plugin looks
        # for it while it loads): it owns POST /instances, so Explorer's refused upload fails
        # with 400/422 and a body above MaxBodyMegabytes gets 413 (README, "A node that keeps
        # answering").
        "Plugins": [p for p in (pl.native_plugin, pl.plugins) if p],
        "PythonScript": pl.python_script,
        "PythonVerbose": False,
        # Python plugin >= 4.3 (the official image) then waits in SDK calls without the GIL;
        # otherwise concurrent uploads and C-STOREs can deadlock (README, "A node that keeps
        # answering").
        "Python": {"AllowThreads": True},
        # As the node launcher does: jobs are not resumed after a restart, GDCM decodes J2K for
        # clients that cannot take it, DICOMweb is on.
        "SaveJobs": False,
        "Gdcm": {"Enable": True},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        # Every plugin in the directory is loaded: Debian's orthanc-webviewer natively; in the
        # official image, Stone and OHIF (enabled in the compose file) read DICOMweb.
        "OHIF": {"DataSource": "dicom-web"},
        "StorageDirectory": pl.storage_directory,
        "IndexDirectory": pl.storage_directory,
        "Teachfile": {"Profile": pl.profile, "ConfigDirectory": pl.config_directory,
                      "DataDirectory": pl.data_directory, "Roles": roles},
        # Lossless JPEG 2000 after the callback under load (node/ingest.py), for the profile
        # as this checkout ships it (the image carries the same orthanc-config).
        **ingest_config(pl.profile, _SHIPPED_CONFIG),
    }


def server_config(roster: Roster) -> dict[str, Any]:
    """The central server's complete Orthanc configuration."""
    s = roster.server
    users = {u.name: u.password for u in s.users}
    roles = {u.name: u.role for u in s.users}
    for p in roster.participants:
        if p.role is not None:
            users[p.name] = p.password
            roles[p.name] = p.role
    config = {
        "Name": s.name,
        "DicomAet": s.aet,
        "DicomPort": s.dicom_port,
        "HttpPort": s.http_port,
        "RegisteredUsers": users,
        "DicomModalities": server_modalities(roster),
        "DicomModalitiesInDatabase": s.modalities_in_database,
        "OrthancPeers": {},
        **_security(),
        **_plugin(roster, roles),
        **_tls(roster, "server", https=False),
        **_https_front(roster),
    }
    sharing = config.pop("TeachfileSharing", None)
    if sharing is not None:
        config["Teachfile"]["Sharing"] = sharing
    return config


#: Orthanc's own HTTP port inside the server's container when the plugin serves HTTPS.
INTERNAL_HTTP_PORT = 18042


def _https_front(roster: Roster) -> dict[str, Any]:
    """HTTPS on the server's web port, terminated by the plugin (``teachfile.node.tlsfront``)
    as a public ``make run`` node does: Orthanc's own ``SslEnabled`` crashes Debian's 1.10.1,
    and this way the same configuration serves HTTPS on 1.10 and 1.13. Orthanc itself answers
    loopback only, on an internal port."""
    if not roster.tls:
        return {}
    s = roster.server
    internal = INTERNAL_HTTP_PORT if s.http_port != INTERNAL_HTTP_PORT else INTERNAL_HTTP_PORT + 1
    return {
        "HttpPort": internal,
        "RemoteAccessAllowed": False,
        "HttpBindAddresses": ["127.0.0.1"],
        "TeachfileSharing": {
            "Public": True, "Https": True, "DicomTls": True, "TlsFingerprint": None,
            "Front": {"Listen": "0.0.0.0", "Port": s.http_port,
                      "Certificate": f"{CONTAINER_DIR}/https.pem"}},
    }


def server_url(roster: Roster) -> str:
    scheme = "https" if roster.tls else "http"
    return f"{scheme}://{roster.server.host}:{roster.server.http_port}/"


def node_config(roster: Roster, p: Participant) -> dict[str, Any]:
    """A participant's own Orthanc: the server is a fully trusted modality and peer; in peer
    mode the other participants are modalities with the permissions the roster gives them."""
    s = roster.server
    server_modality = {"AET": s.aet, "Host": s.host, "Port": s.dicom_port,
                       "Manufacturer": "Generic", **{k: True for k in _ALLOW_KEYS.values()}}
    if roster.tls:
        server_modality["UseDicomTls"] = True
    modalities = {s.name: server_modality}
    if roster.peer_mode:
        modalities.update({o.name: {**modality(o), **({"UseDicomTls": True} if roster.tls
                                                        else {})}
                           for o in roster.participants if o is not p})
    peer: dict[str, Any] = {"Url": server_url(roster)}
    if p.role is not None:
        peer.update({"Username": p.name, "Password": p.password})
    return {
        "Name": p.name,
        "DicomAet": p.aet,
        "DicomPort": p.port,
        "HttpPort": p.http_port,
        "RegisteredUsers": {p.name: p.password},
        "DicomModalities": modalities,
        "DicomModalitiesInDatabase": False,
        "OrthancPeers": {s.name: peer},
        **_security(),
        **_plugin(roster, {p.name: "admin"}),
        **_tls(roster, "node", https=False),
    }


def _commands(roster: Roster, p: Participant) -> dict[str, Any]:
    """The handout's facts, pre-quoted for shells, so the template only lays them out."""
    from ..node.roles import allowed

    s = roster.server
    role = p.role
    return {
        "server_url": server_url(roster).rstrip("/"),
        "user": shlex.quote(f"{p.name}:{p.password}"),
        "aet": shlex.quote(p.aet),
        "server_aet": shlex.quote(s.aet),
        "server_host": shlex.quote(s.host),
        # DCMTK's TLS flags and curl's CA, with the files handed out beside the handout.
        "tls": "+tls node.key node.crt +cf ca.crt " if roster.tls else "",
        "curl": "curl --cacert ca.crt" if roster.tls else "curl",
        # Only what the participant's own server role may do is printed (the rest is 403).
        "http_echo": role is not None and allowed(role, "POST", f"/modalities/{p.name}/echo"),
        "http_find": role is not None and allowed(role, "POST", "/tools/find"),
        "http_store": role is not None and allowed(role, "POST", f"/modalities/{p.name}/store"),
        "http_upload": role is not None and allowed(role, "POST", "/instances"),
    }


# --------------------------------------------------------------------------- rendering


def render(roster: Roster, templates: Path | None = None) -> dict[str, str]:
    """Every output file, as ``{relative path: text}``; checks that each one parses."""
    env = make_environment(templates)
    hosts = [roster.server.host] + [p.host for p in roster.participants]
    common = {"roster": roster, "server": roster.server, "participants": roster.participants,
              "is_ipv4": is_ipv4, "permissions": PERMISSIONS,
              # Docker can pin addresses only when each container has its own.
              "static_ips": roster.subnet is not None and len(set(hosts)) == len(hosts),
              "tls_dir": CONTAINER_DIR}
    out: dict[str, str] = {}
    try:
        out["server/orthanc.json"] = env.get_template("server.json.j2").render(
            common, config=server_config(roster))
        node_t = env.get_template("node.json.j2")
        handout_t = env.get_template("handout.html.j2")
        for p in roster.participants:
            out[f"nodes/{p.name}/orthanc.json"] = node_t.render(
                common, participant=p, config=node_config(roster, p))
            out[f"handouts/{p.name}.html"] = handout_t.render(
                common, participant=p, cmd=_commands(roster, p))
        out["handouts/index.html"] = env.get_template("index.html.j2").render(common)
        out["compose.yaml"] = env.get_template("compose.yaml.j2").render(common)
        out["assignments.csv"] = env.get_template("assignments.csv.j2").render(common)
    except jinja2.TemplateError as exc:
        where = f"{exc.filename}:{exc.lineno}: " if isinstance(exc, jinja2.TemplateSyntaxError) \
            else ""
        raise ConfigError(f"template error: {where}{exc}") from None
    _check(out)
    return out


def _check(out: dict[str, str]) -> None:
    """A template override must not be able to produce a file Orthanc or Docker would reject."""
    for name, text in out.items():
        try:
            if name.endswith(".json"):
                json.loads(text)
            elif name.endswith(".yaml"):
                yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"rendered {name} does not parse: {exc}") from None


def write(outputs: dict[str, str], outdir: Path) -> list[Path]:
    """Write the outputs; drop stale per-participant files this tool wrote for a roster entry
    that no longer exists (and nothing else)."""
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(outdir.glob("nodes/*/orthanc.json")) + sorted(
            outdir.glob("handouts/*.html")):
        rel = stale.relative_to(outdir).as_posix()
        if rel not in outputs:
            stale.unlink()
            if stale.parent.name != "handouts" and not any(stale.parent.iterdir()):
                stale.parent.rmdir()
    written = []
    for rel in sorted(outputs):
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = outputs[rel].encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written
