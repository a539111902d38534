"""Launching a native teaching-file node on Debian's Orthanc packages.

One function, :func:`prepare`, turns settings (from the environment or from the test harness)
into a data directory with secrets and a generated ``orthanc.json``; ``make run`` and the test
fixtures both go through it, so what the tests start is what a user runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..node import network as network_mod
from ..node.ingest import ingest_config
from ..node.keys import load_or_create_password
from ..node.limits import answering_config
from ..node.restcall import LIBRARY_NAME as RESTCALL_LIBRARY

PLUGIN_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = PLUGIN_DIR.parent
ENTRY_SCRIPT = PLUGIN_DIR / "teachfile_entry.py"
CONFIG_DIR = REPO_DIR / "orthanc-config"
ORTHANC_PLUGINS = Path("/usr/share/orthanc/plugins")
#: The plugins a node loads, by file name; others in the directory (worklists, serve-folders)
#: are left out on purpose.
PLUGIN_FILES = ("libOrthancPython.so", "libOrthancGdcm.so", "libOrthancDicomWeb.so")
#: The Web Viewer decodes JPEG 2000 on the server, so every series opens in Orthanc Explorer's
#: viewer whatever the browser can decode. Loaded unless TEACHFILE_WEBVIEWER=0. (It was opt-in
#: while Orthanc died now and then beside it: GDCM overflowing 100 KiB HTTP thread stacks, see
#: thread_stack_shim.)
WEBVIEWER_FILE = "libOrthancWebViewer.so"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"${name} must be a port number, not {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"${name} must be between 1 and 65535")
    return value


@dataclass(frozen=True)
class NodeSettings:
    """What distinguishes one node from another on the same machine."""

    aet: str = "TEACHFILE"
    dicom_port: int = 4242
    http_port: int = 8042
    data_dir: Path = REPO_DIR / "var"
    profile: str = "teaching"
    #: Merged last into the generated configuration (tests, advanced users).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: $TEACHFILE_PUBLIC: remote clients may reach HTTP, over HTTPS only.
    public: bool = False
    #: $TEACHFILE_DICOM_TLS: the DICOM port speaks TLS only.
    dicom_tls: bool = False
    #: $TEACHFILE_TLS_CERT / $TEACHFILE_TLS_KEY (PEM); None: generated under data/tls/.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: $TEACHFILE_TLS_HOSTS: names and addresses colleagues use for this node (certificate).
    tls_hosts: tuple[str, ...] = ()
    #: $TEACHFILE_HTTPS: "front" (the plugin terminates TLS, default) or "orthanc" (SslEnabled,
    #: for Orthanc builds whose own TLS works; Debian bookworm's 1.10.1 crashes with it).
    https_mode: str = "front"
    #: Orthanc's own HTTP port behind the HTTPS front (loopback only); None: picked at start.
    http_internal_port: int | None = None

    @property
    def tls(self) -> bool:
        return self.public or self.dicom_tls

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeSettings:
        env = os.environ if env is None else env
        aet = env.get("TEACHFILE_AET", "TEACHFILE")
        if not (1 <= len(aet) <= 16) or not all(c.isascii() and (c.isalnum() or c in "-_")
                                                 for c in aet) or aet.upper() != aet:
            raise ConfigError("$TEACHFILE_AET must be 1-16 characters of A-Z 0-9 - _")
        return cls(
            aet=aet,
            dicom_port=_env_int(env, "TEACHFILE_DICOM_PORT", 4242),
            http_port=_env_int(env, "TEACHFILE_HTTP_PORT", 8042),
            data_dir=Path(env.get("TEACHFILE_DATA") or REPO_DIR / "var").resolve(),
            profile=env.get("TEACHFILE_PROFILE", "teaching"),
            **sharing_from_env(env),
        )


# -- lanes: which Orthanc runs the node ------------------------------------------------------
#: ``system``: the machine's Orthanc (Debian bookworm's 1.10.1 here). ``latest``: the Orthanc the
#: official image ships (1.13 + Python plugin 7.1 + Python 3.14), from the Debian unstable root
#: that ``scripts/setup-lane`` builds. Chosen with $TEACHFILE_ORTHANC.
LANES = ("system", "latest")
LANE_ROOT = REPO_DIR / ".lanes" / "latest" / "root"
#: The root's venv, as a path inside the root.
LANE_VENV = "/opt/teachfile/venv"


def current_lane(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    lane = env.get("TEACHFILE_ORTHANC") or "system"
    if lane not in LANES:
        raise ConfigError(f"$TEACHFILE_ORTHANC must be one of {', '.join(LANES)}, not {lane!r}")
    return lane


def lane_root(lane: str | None = None) -> Path | None:
    """The directory Orthanc's files are found under (None: this machine's own /)."""
    if (lane or current_lane()) == "system":
        return None
    if not (LANE_ROOT / "usr" / "sbin" / "Orthanc").exists():
        raise ConfigError(f"the latest Orthanc lane is not built in {LANE_ROOT}; "
                          "run scripts/setup-lane")
    return LANE_ROOT


def on_lane(path: str | Path, lane: str | None = None) -> Path:
    """Where a path of Orthanc's file system (/usr/share/orthanc/...) is seen from here."""
    root = lane_root(lane)
    return Path(path) if root is None else root / str(path).lstrip("/")


def lane_packages(lane: str | None = None) -> dict[str, str]:
    """Installed versions of the packages a lane runs, from that lane's dpkg database."""
    root = lane_root(lane)
    admindir = ["--admindir", str(root / "var" / "lib" / "dpkg")] if root else []
    names = ("orthanc", "orthanc-python", "orthanc-dicomweb", "orthanc-gdcm",
             "orthanc-postgresql", "dcmtk")
    import subprocess

    proc = subprocess.run(["dpkg-query", *admindir, "-W", "-f", "${Package} ${Version}\n",
                           *names], capture_output=True, text=True, check=False)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def lane_command(argv: list[str], paths: Iterable[str | Path] = (),
                 lane: str | None = None) -> list[str]:
    """``argv`` (a program of the lane's file system) as a command to run from here.

    The latest lane runs it chrooted in the root, in a private mount namespace that binds /proc,
    /dev, the checkout, the temporary directory and ``paths`` at their own paths: paths in
    configurations and logs are the same inside and outside, and nothing stays mounted on the
    host when the process ends. Every step execs, so the returned command's process IS the
    program (signals reach it; its exit status is the program's).
    """
    root = lane_root(lane)
    if root is None:
        return list(argv)
    if os.geteuid() != 0:
        raise ConfigError("the latest Orthanc lane runs in a chroot, which needs root")
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    binds: list[str] = []
    wanted = [REPO_DIR, Path(tempfile.gettempdir()), *(Path(p) for p in paths)]
    for p in sorted({str(Path(p).resolve()) for p in wanted}, key=len):
        if not any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds):
            Path(p).mkdir(parents=True, exist_ok=True)
            binds.append(p)
    script = (
        'root=$1; cwd=$2; shift 2; '
        'mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; '
        'while [ "$1" != -- ]; do mkdir -p "$root$1"; mount --bind "$1" "$root$1"; shift; done; '
        'shift; exec chroot "$root" /usr/bin/env --chdir="$cwd" "$@"'
    )
    return [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-e", "-c",
            script, "sh", str(root), "/", *binds, "--", *argv]


def _version_tuple(debian_version: str) -> tuple[int, ...]:
    upstream = debian_version.split(":")[-1].split("+")[0].split("-")[0].split("~")[0]
    return tuple(int(x) for x in upstream.split(".") if x.isdigit())


def python_plugin_options(lane: str | None = None) -> dict[str, Any]:
    """The ``Python`` section for the lane's plugin: ``AllowThreads`` (plugin >= 4.3) releases
    the GIL around SDK calls, so an upload waiting in ``RestApiPost`` lets other callbacks'
    Python run. Plugin 4.0 has no such option; the section is left out for it."""
    if _version_tuple(lane_packages(lane).get("orthanc-python", "0")) >= (4, 3):
        return {"AllowThreads": True}
    return {}


def _env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"${name} must be 1 or 0, not {raw!r}")


def sharing_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings that share a node (TEACHFILE_PUBLIC, _DICOM_TLS, _TLS_CERT/_KEY/_HOSTS)."""
    cert, key = env.get("TEACHFILE_TLS_CERT"), env.get("TEACHFILE_TLS_KEY")
    hosts = tuple(h.strip() for h in env.get("TEACHFILE_TLS_HOSTS", "").split(",") if h.strip())
    return {
        "public": _env_flag(env, "TEACHFILE_PUBLIC"),
        "dicom_tls": _env_flag(env, "TEACHFILE_DICOM_TLS"),
        "tls_cert": Path(cert).resolve() if cert else None,
        "tls_key": Path(key).resolve() if key else None,
        "tls_hosts": hosts,
        "https_mode": _https_mode(env),
    }


def _https_mode(env: Mapping[str, str]) -> str:
    mode = env.get("TEACHFILE_HTTPS", "front") or "front"
    if mode not in ("front", "orthanc"):
        raise ConfigError("$TEACHFILE_HTTPS must be 'front' or 'orthanc'")
    return mode


def sharing_config(settings: NodeSettings, tls: Any | None) -> dict[str, Any]:
    """HTTP exposure and TLS: what ``TEACHFILE_PUBLIC`` and ``TEACHFILE_DICOM_TLS`` change."""
    out: dict[str, Any] = {}
    front = None
    if settings.public and settings.https_mode == "orthanc":
        assert tls is not None
        # Remote clients, and only over HTTPS: with SslEnabled the port speaks TLS only.
        out.update(RemoteAccessAllowed=True, SslEnabled=True, SslCertificate=str(tls.https_pem),
                   SslMinimumProtocolVersion=4)
    elif settings.public:
        assert tls is not None and settings.http_internal_port is not None
        # The plugin listens on the public port with TLS (teachfile.node.tlsfront) and relays
        # to Orthanc, which serves loopback only on an internal port.
        out.update(RemoteAccessAllowed=False, HttpBindAddresses=["127.0.0.1"],
                   HttpPort=settings.http_internal_port)
        front = {"Listen": "0.0.0.0", "Port": settings.http_port,
                 "Certificate": str(tls.https_pem)}
    else:
        # Orthanc >= 1.13 binds the listed addresses only; 1.10 ignores the option and still
        # listens everywhere, but RemoteAccessAllowed false answers 403 to any non-loopback
        # client before authentication.
        out.update(RemoteAccessAllowed=False, HttpBindAddresses=["127.0.0.1"])
    if settings.dicom_tls:
        assert tls is not None
        out.update(DicomTlsEnabled=True, DicomTlsCertificate=str(tls.cert),
                   DicomTlsPrivateKey=str(tls.key),
                   DicomTlsTrustedCertificates=str(tls.trusted),
                   DicomTlsRemoteCertificateRequired=True)
    out["Teachfile"] = {"Sharing": {
        "Public": settings.public, "Https": settings.public, "DicomTls": settings.dicom_tls,
        "TlsFingerprint": tls.fingerprint if tls is not None else None,
        "Front": front,
    }}
    return out


def plugin_paths(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    viewer = _env_flag(env, "TEACHFILE_WEBVIEWER", default=True)
    files = PLUGIN_FILES + ((WEBVIEWER_FILE,) if viewer else ())
    missing = [p for p in files if not on_lane(ORTHANC_PLUGINS / p).exists()]
    if missing:
        raise ConfigError(
            f"Orthanc plugins missing from {on_lane(ORTHANC_PLUGINS)}: {', '.join(missing)}; "
            "run scripts/setup" + ("-lane" if current_lane() == "latest" else "")
        )
    paths = [str(ORTHANC_PLUGINS / p) for p in files]
    # First: Orthanc initialises plugins in this order, and the Python script looks for it.
    return [str(restcall_plugin())] + paths


def restcall_plugin(lane: str | None = None) -> Path:
    """The native plugin beside the Python one (``native/restcall.c``), on every lane:
    - it owns ``/instances``, so Orthanc Explorer's refused file fails with 400/422 (the Python
      plugin can only raise 500) and a body above ``MaxBodyMegabytes`` gets 413 before Orthanc
      allocates it (the request filter can only answer 403);
    - through it the Python plugin calls Orthanc's REST API without the GIL, which plugins
      older than 4.3 keep (concurrent uploads and C-STOREs deadlocked Orthanc 1.10.1)."""
    return native_file(RESTCALL_LIBRARY, "without it, concurrent uploads and C-STOREs can "
                                         "deadlock Orthanc 1.10, and refused uploads answer "
                                         "500 in Orthanc Explorer")


def native_file(name: str, why: str) -> Path:
    """A file ``scripts/setup`` built from ``native/`` into the venv; missing, Orthanc does not
    start, and the message says why it matters and what to run."""
    path = Path(sys.prefix) / "lib" / name
    if not path.is_file():
        raise ConfigError(f"{path} is missing ({why}); run scripts/setup")
    return path


def build_config(settings: NodeSettings, password: str,
                 network: network_mod.Network | None = None,
                 tls: Any | None = None,
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Orthanc configuration of a node; plain data, so tests can inspect it. ``env`` is
    the environment the settings came from (the plugin list reads $TEACHFILE_WEBVIEWER)."""
    data = settings.data_dir
    config: dict[str, Any] = {
        "Name": settings.aet,
        "DicomAet": settings.aet,
        "DicomPort": settings.dicom_port,
        "HttpPort": settings.http_port,
        # Orthanc 1.10 has no bind address: refusing remote clients keeps HTTP on localhost.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"admin": password},
        "StorageDirectory": str(data / "storage"),
        "IndexDirectory": str(data / "index"),
        "Plugins": plugin_paths(env),
        "PythonScript": str(ENTRY_SCRIPT),
        "PythonVerbose": False,
        **({"Python": opts} if (opts := python_plugin_options()) else {}),
        # Jobs are not resumed from a previous run; transient by design on a teaching node.
        "SaveJobs": False,
        # Pseudonyms are deterministic: a re-sent or re-labelled case (/modify keeping its UIDs)
        # must replace the stored instance rather than fail as "already stored".
        "OverwriteInstances": True,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        # Silent and half-sent clients must not hold the DICOM and HTTP threads (issue 15).
        **answering_config(),
        # Orthanc stores WebDAV uploads later, from a folder, after answering 201: a refused
        # file could never be reported to whoever put it. Uploads go by C-STORE or HTTP POST.
        "WebDavUploadAllowed": False,
        # Transcoding happens in the plugin; GDCM stays loaded to decode J2K for clients that
        # cannot take it.
        "Gdcm": {"Enable": True},
        # The Web Viewer keeps its cache in an SQLite file, by default under the storage
        # directory, which replicas share (scale-out): each node keeps its own. Its own bundled
        # GDCM decoder is off: J2K is decoded by the GDCM plugin like every other decode (with
        # both, a transcoding WADO-RS request crashed Orthanc 1.10 about once in four).
        "WebViewer": {"CachePath": str(data / "webviewer-cache"), "EnableGdcm": False},
        "Teachfile": {
            "Profile": settings.profile,
            "ConfigDirectory": str(CONFIG_DIR),
            "DataDirectory": str(data),
        },
    }
    config = _merge(config, sharing_config(settings, tls))
    if network is not None:
        config = network_mod.merge_into(config, network)
    config = _merge(config, settings.extra)
    # Lossless JPEG 2000 after the callback, when several associations send at once
    # (node/ingest.py); for the profile the plugin will really load.
    section = config["Teachfile"]
    return {**ingest_config(str(section.get("Profile", settings.profile)),
                            Path(section.get("ConfigDirectory", CONFIG_DIR))), **config}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Prepared:
    config_path: Path
    password: str
    password_generated: bool
    config: dict[str, Any]
    tls: Any | None = None


def prepare(settings: NodeSettings, env: Mapping[str, str] | None = None) -> Prepared:
    """Create the data directory, the secrets and ``orthanc.json``; idempotent."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    password, generated = load_or_create_password(data / "admin-password", env)
    network = network_mod.load(network_mod.network_path(data))
    tls = None
    if settings.public and settings.https_mode == "front" and not settings.http_internal_port:
        import dataclasses
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            settings = dataclasses.replace(settings, http_internal_port=s.getsockname()[1])
    if settings.tls:
        from ..node.tls import default_hosts, ensure_node_tls

        tls = ensure_node_tls(data, settings.aet, default_hosts(settings.tls_hosts),
                              settings.tls_cert, settings.tls_key)
    config = build_config(settings, password, network, tls, env)
    path = data / "orthanc.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return Prepared(path, password, generated, config, tls)


def python_path() -> str:
    """PYTHONPATH for Orthanc's embedded interpreter: the package and this venv's packages
    (on the latest lane, the root's venv, built for the root's Python)."""
    parts = [str(PLUGIN_DIR), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    root = lane_root()
    if root is not None:
        found = sorted((root / LANE_VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
        if not found:
            raise ConfigError(f"no venv in {root}{LANE_VENV}; run scripts/setup-lane")
        parts = [str(PLUGIN_DIR), "/" + str(found[-1].relative_to(root))]
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


def orthanc_executable() -> str:
    """The lane's Orthanc, as a path of the lane's file system."""
    if current_lane() == "latest":
        lane_root()  # says how to build it when missing
        return "/usr/sbin/Orthanc"
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(exe).exists():
        raise ConfigError("Orthanc is not installed; run scripts/setup")
    return exe


def orthanc_command(prepared: Prepared, verbose: bool = False) -> list[str]:
    cmd = [orthanc_executable(), str(prepared.config_path)]
    if verbose:
        cmd.insert(1, "--verbose")
    config = prepared.config
    paths = [prepared.config_path.parent, config.get("StorageDirectory"),
             config.get("IndexDirectory"), config.get("Teachfile", {}).get("DataDirectory")]
    return lane_command(cmd, [p for p in paths if p])


def thread_stack_shim() -> Path:
    """The preload that gives Orthanc's HTTP threads 8 MiB stacks (``native/threadstack.c``).

    Debian's civetweb gives them 100 KiB, and a GDCM transcoding needs more than that in one
    frame: without the shim, Orthanc 1.10 died (SIGSEGV) within 40 WADO-RS retrievals of a JPEG
    2000 instance as Explicit VR Little Endian, in 10 of 10 processes; with it, 0 of 10.
    """
    return native_file("teachfile-threadstack.so",
                       "it keeps Orthanc from crashing when GDCM transcodes")


def orthanc_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Orthanc process the project starts, nodes and baselines."""
    env = dict(os.environ if base is None else base)
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p]
    shim = str(thread_stack_shim())
    env["LD_PRELOAD"] = ":".join([shim, *[p for p in preload if p != shim]])
    env["PYTHONPATH"] = python_path()
    # Orthanc's embedded Python must not write bytecode into the source tree as root.
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    # DCMTK reads TCP_NODELAY for the sockets Orthanc accepts. Without it, Nagle's algorithm
    # and the sender's delayed ACK hold back the second half of every C-STORE response for
    # ~40 ms: measured on Debian's Orthanc 1.10.1, one storescu association took 48 ms per
    # 512x512 CT slice on plain Orthanc and 15 ms with TCP_NODELAY=1 (scripts/bench-ingest).
    env.setdefault("TCP_NODELAY", "1")
    return env


def banner(settings: NodeSettings, prepared: Prepared) -> str:
    lines = [
        "Teaching-file node",
        (f"  HTTPS  https://{_public_host(settings)}:{settings.http_port}/  (status: "
         "/teachfile/status; open to other computers)" if settings.public else
         f"  HTTP   http://localhost:{settings.http_port}/  (status: /teachfile/status; "
         "this computer only)"),
        f"  DICOM  AET {settings.aet}, port {settings.dicom_port}"
        + (" (TLS only)" if settings.dicom_tls else ""),
        *([f"  TLS    certificate SHA-256 {prepared.tls.fingerprint}"]
          if prepared.tls is not None else []),
        f"  data   {settings.data_dir}",
        "  login  user admin, password "
        + (
            f"{prepared.password}  (generated now; also in "
            f"{settings.data_dir / 'admin-password'}, shown only this once)"
            if prepared.password_generated
            else f"from {'$TEACHFILE_ADMIN_PASSWORD' if os.environ.get('TEACHFILE_ADMIN_PASSWORD') else settings.data_dir / 'admin-password'}"  # noqa: E501
        ),
        "  stop   Ctrl-C",
    ]
    if current_lane() != "system":
        lines.insert(1, f"  Orthanc lane {current_lane()} (chrooted in {LANE_ROOT})")
    return "\n".join(lines)


def _public_host(settings: NodeSettings) -> str:
    import socket

    return settings.tls_hosts[0] if settings.tls_hosts else socket.getfqdn()


def check_ports(settings: NodeSettings) -> None:
    """Stop before the banner when a port is taken, naming the port and its holder."""
    from .ports import taken_ports

    taken = taken_ports({"HTTP": settings.http_port, "DICOM": settings.dicom_port})
    if taken:
        raise ConfigError("; ".join(taken) + ". Stop that process, or choose other ports with "
                          "TEACHFILE_HTTP_PORT / TEACHFILE_DICOM_PORT")


def run(args: argparse.Namespace) -> int:
    settings = NodeSettings.from_env()
    check_ports(settings)
    prepared = prepare(settings)
    print(banner(settings, prepared), flush=True)
    cmd = orthanc_command(prepared, verbose=args.verbose)
    # exec: Orthanc becomes the foreground process, so Ctrl-C reaches it directly and it shuts
    # down cleanly (it handles SIGINT/SIGTERM itself).
    os.execve(cmd[0], cmd, orthanc_env())
    return 0  # pragma: no cover


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start a teaching-file node in the foreground",
                       description="Start a teaching-file node in the foreground. Settings come "
                       "from TEACHFILE_AET, TEACHFILE_DICOM_PORT, TEACHFILE_HTTP_PORT, "
                       "TEACHFILE_DATA, TEACHFILE_PROFILE, TEACHFILE_ADMIN_PASSWORD, "
                       "TEACHFILE_PUBLIC, TEACHFILE_DICOM_TLS, TEACHFILE_TLS_CERT, "
                       "TEACHFILE_TLS_KEY and TEACHFILE_TLS_HOSTS.")
    p.add_argument("--verbose", action="store_true", help="Orthanc's verbose log")
    p.set_defaults(func=run)


if __name__ == "__main__":  # pragma: no cover
    from .main import main

    sys.exit(main(["run", *sys.argv[1:]]))
