"""Real Orthanc processes for tests, and ways to send them DICOM.

Nodes are started exactly as ``make run`` starts one (``teachfile.cli.launcher.prepare``), on free
loopback ports and temporary data directories. Nothing here is mocked: senders are pynetdicom,
DCMTK's storescu/echoscu and HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import requests

from teachfile.cli import launcher as node_mod

LOOPBACK = "127.0.0.1"
#: Every node started and not yet stopped, so a failing test can show the logs of nodes that a
#: module-scoped fixture started too.
RUNNING: list[Node] = []
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class Node:
    """A running Orthanc process with the teachfile plugin."""

    name: str
    aet: str
    dicom_port: int
    http_port: int
    data_dir: Path
    password: str
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def auth(self) -> tuple[str, str]:
        return ("admin", self.password)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("auth", self.auth)
        kw.setdefault("timeout", 60)
        try:
            return requests.request(method, self.url + path, **kw)
        except requests.ConnectionError:
            # Seen once in a full CI run: a GET dropped without an answer while the node
            # stayed up. A GET is safe to repeat; anything else is reported as it happened.
            if method.upper() != "GET" or self.process is None or self.process.poll() is not None:
                raise
            time.sleep(0.5)
            return requests.request(method, self.url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def status(self) -> dict[str, Any]:
        r = self.get("/teachfile/status")
        r.raise_for_status()
        return r.json()

    def instances(self) -> list[str]:
        return self.get("/instances").json()

    def instance_bytes(self, instance_id: str) -> bytes:
        r = self.get(f"/instances/{instance_id}/file")
        r.raise_for_status()
        return r.content

    def stored_datasets(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(io.BytesIO(self.instance_bytes(i))) for i in self.instances()]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n"
                                   + self.log_text()[-4000:])
            try:
                r = self.get("/teachfile/status", timeout=2)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer in time:\n" + self.log_text()[-4000:])

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        # Orthanc's HTTP and DICOM servers notice the stop between two waits for a connection
        # (civetweb's master polls for up to 2 s): a connection that closes at once wakes them.
        # Measured: a node's stop took 3.6 s (median of 80), 1.9 s of it in the HTTP server.
        ports = [p for p in (self.config.get("HttpPort"), self.config.get("DicomPort"))
                 if isinstance(p, int)]
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            for port in ports:
                with contextlib.suppress(OSError):
                    socket.create_connection((LOOPBACK, port), timeout=0.2).close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_node(
    data_dir: Path,
    *,
    aet: str = "TEACHFILE",
    name: str | None = None,
    extra_config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    password: str = "test-admin-password",
    dicom_port: int | None = None,
    http_port: int | None = None,
    wait: bool = True,
) -> Node:
    """Prepare and start one node; the caller stops it (the fixtures do).

    Free ports are picked by binding port 0, which another process can take before Orthanc
    does: when the ports were not given and Orthanc says a port is in use, try new ones.
    """
    attempts = 1 if (dicom_port or http_port or not wait) else 3
    for attempt in range(attempts):
        try:
            return _start_node(data_dir, aet=aet, name=name, extra_config=extra_config, env=env,
                               password=password, dicom_port=dicom_port, http_port=http_port,
                               wait=wait)
        except RuntimeError as exc:
            if attempt == attempts - 1 or "already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _start_node(
    data_dir: Path,
    *,
    aet: str,
    name: str | None,
    extra_config: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
    password: str,
    dicom_port: int | None,
    http_port: int | None,
    wait: bool,
) -> Node:
    settings = node_mod.NodeSettings(
        aet=aet,
        dicom_port=dicom_port or free_port(),
        http_port=http_port or free_port(),
        data_dir=data_dir,
        extra=dict(extra_config or {}),
    )
    # Test nodes leave the Web Viewer out unless asked (env, or $TEACHFILE_WEBVIEWER for a whole
    # run): it adds 0.8 s to every stop. test_webviewer and the retrieval nodes of
    # test_transcode_node (where Orthanc used to die beside it) load it.
    environ = {**os.environ, "TEACHFILE_TESTING": "1",
               "TEACHFILE_WEBVIEWER": os.environ.get("TEACHFILE_WEBVIEWER", "0"), **(env or {}),
               "TEACHFILE_ADMIN_PASSWORD": password}
    prepared = node_mod.prepare(settings, environ)
    log_path = data_dir / "orthanc.log"
    n = Node(name or aet, aet, settings.dicom_port, settings.http_port, data_dir,
             prepared.password, prepared.config, log_path=log_path)
    with open(log_path, "ab") as log:
        n.process = subprocess.Popen(
            node_mod.orthanc_command(prepared, verbose=False),
            stdout=log, stderr=subprocess.STDOUT, env=node_mod.orthanc_env(environ),
            cwd=data_dir,
        )
    RUNNING.append(n)
    if wait:
        try:
            n.wait_until_ready()
            check_lane(n.status())
        except Exception:
            n.stop()
            raise
    return n


# -- lanes -----------------------------------------------------------------------------------


def _upstream(version: str) -> str:
    """Debian's ``1.13.0+dfsg-1+b1`` -> ``1.13.0``; ``7.1-1`` -> ``7.1``."""
    return re.sub(r"^\d+:", "", version).split("+")[0].split("-")[0].split("~")[0]


@functools.cache
def lane_expectations() -> dict[str, str]:
    """The versions the lane ($TEACHFILE_ORTHANC) must run, from that lane's own packages."""
    packages = node_mod.lane_packages()
    python = ".".join(map(str, sys.version_info[:2]))
    root = node_mod.lane_root()
    if root is not None:
        found = sorted((root / node_mod.LANE_VENV.lstrip("/") / "lib").glob("python3*"))
        python = found[-1].name.removeprefix("python") if found else "?"
    return {"lane": node_mod.current_lane(),
            "orthanc_version": _upstream(packages.get("orthanc", "?")),
            "python_plugin_version": _upstream(packages.get("orthanc-python", "?")),
            "python_version": python}


def orthanc_version() -> tuple[int, ...]:
    """The lane's Orthanc version, for tests whose sender-visible outcome differs by version."""
    return tuple(int(x) for x in re.findall(r"\d+", lane_expectations()["orthanc_version"])[:3])


def check_lane(status: Mapping[str, Any]) -> None:
    """Fail when a node runs other versions than its lane's: a lane that silently ran the
    system's Orthanc (or another Python) would prove nothing about the versions it names."""
    want = lane_expectations()
    got = {"orthanc_version": status.get("orthanc_version"),
           "python_plugin_version": status.get("python_plugin_version"),
           "python_version": ".".join(str(status.get("python_version")).split(".")[:2])}
    wrong = {k: (v, want[k]) for k, v in got.items() if v != want[k]}
    if wrong:
        raise RuntimeError(f"the {want['lane']} lane ran other versions than its own "
                           f"(found, wanted): {wrong}")
    # Every node runs as `teachfile run` runs it: with the thread-stack preload.
    if status.get("thread_stack_preload") is not True:
        raise RuntimeError("the node runs without native/threadstack.c preloaded: "
                           f"thread_stack_preload={status.get('thread_stack_preload')!r}")
    # ... and with REST calls that wait without the GIL (native/restcall.c on plugin 4.0).
    if status.get("rest_calls_without_gil") is not True:
        raise RuntimeError("the node's REST calls keep the GIL (concurrent uploads and C-STOREs "
                           f"can deadlock): rest_calls_without_gil="
                           f"{status.get('rest_calls_without_gil')!r}")
    # ... and with the native /instances (Explorer's refusals as 4xx, 413 before the body).
    if status.get("native_uploads") is not True:
        raise RuntimeError("POST /instances is not the native plugin's: "
                           f"native_uploads={status.get('native_uploads')!r}")


def refused_as_burned_in(ds: pydicom.Dataset) -> bool:
    """Whether the default pixel policy (``orthanc-config/pixel-rules.yaml``) refuses ``ds``."""
    from teachfile.reception.pixels import assess, load_pixel_policy

    policy = load_pixel_policy(node_mod.CONFIG_DIR / "pixel-rules.yaml")
    plan = assess(ds, policy)
    if plan.action != "refuse":
        return False
    return not ocr_gate_admits(ds, policy, plan)


def ocr_gate_admits(ds: pydicom.Dataset, policy: Any, plan: Any) -> bool:
    """What the node's OCR gate decides for an instance the rules refuse (see
    ``Reception._ocr_gate``): admitted when tesseract reads no text in any frame."""
    from teachfile.reception.ocr import gate_words, ocr_available

    if not (policy.ocr_gate.applies(plan) and ocr_available()):
        return False
    try:
        if int(ds.get("NumberOfFrames", 1) or 1) > policy.ocr_gate.max_frames:
            return False
        return not gate_words(ds)
    except Exception:  # noqa: BLE001 - the node refuses then too
        return False


# -- senders ---------------------------------------------------------------------------------


def to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def send_pynetdicom(node: Node, datasets: Iterable[pydicom.Dataset],
                    calling_aet: str = "PYNETDICOM") -> list[int]:
    """C-STORE each dataset on one association; returns the DIMSE status of each (-1: none)."""
    from pynetdicom import AE, StoragePresentationContexts

    datasets = list(datasets)
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    seen: set[tuple[str, str]] = set()
    for ds in datasets:
        key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if key not in seen:
            seen.add(key)
            ae.add_requested_context(key[0], [key[1]])
    if not seen:
        for ctx in StoragePresentationContexts[:10]:
            ae.add_requested_context(ctx.abstract_syntax)
    assoc = ae.associate(LOOPBACK, node.dicom_port, ae_title=node.aet)
    if not assoc.is_established:
        raise RuntimeError("association rejected or aborted")
    statuses = []
    try:
        for ds in datasets:
            st = assoc.send_c_store(ds)
            statuses.append(int(st.Status) if st and "Status" in st else -1)
    finally:
        assoc.release()
    return statuses


def echo_pynetdicom(node: Node, calling_aet: str = "PYNETDICOM") -> int:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, node.dicom_port, ae_title=node.aet)
    if not assoc.is_established:
        raise RuntimeError("association rejected or aborted")
    try:
        st = assoc.send_c_echo()
        return int(st.Status) if st else -1
    finally:
        assoc.release()


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"DCMTK's {tool} is not installed; run scripts/setup")
    return path


_STATUS_RE = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def storescu(node: Node, files: Iterable[Path], calling_aet: str = "STORESCU",
             extra_args: Iterable[str] = ()) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Send files with DCMTK's storescu; returns the process and each C-STORE's DIMSE status."""
    cmd = [dcmtk("storescu"), "-d", "-aet", calling_aet, "-aec", node.aet, *extra_args,
           LOOPBACK, str(node.dicom_port), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    statuses = [int(m, 16) for m in _STATUS_RE.findall(proc.stdout + proc.stderr)]
    return proc, statuses


def echoscu(node: Node, calling_aet: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    cmd = [dcmtk("echoscu"), "-aet", calling_aet, "-aec", node.aet, LOOPBACK,
           str(node.dicom_port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def upload_rest(node: Node, data: bytes) -> requests.Response:
    return node.post("/instances", data=data,
                     headers={"Content-Type": "application/dicom"})


def stow_rs(node: Node, parts: Iterable[bytes]) -> requests.Response:
    boundary = "teachfile-test-boundary"
    body = b""
    for p in parts:
        body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return node.post("/dicom-web/studies", data=body,
                     headers={"Content-Type": ctype, "Accept": "application/dicom+json"})


def _nullable(schema: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema, recursively."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items() if k != "nullable"}
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


def check_documented(doc: dict[str, Any], template: str, method: str,
                     resp: requests.Response) -> None:
    """The answer as the OpenAPI document describes it: a documented status, a documented
    content type and, for JSON, a body that validates against the schema."""
    import copy

    import jsonschema

    spec = doc["paths"][template][method]["responses"].get(str(resp.status_code))
    assert spec is not None, \
        f"{method.upper()} {template} answered {resp.status_code}, undocumented"
    if "$ref" in spec:
        spec = doc["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    content = spec.get("content")
    assert content is not None, (template, resp.status_code)
    ctype = resp.headers.get("Content-Type", "").split(";")[0]
    if ctype in ("", "text/plain") and resp.status_code != 200:
        # A plugin's error body goes out without a type (plugin 4.0) or as text/plain (7.1),
        # whatever the plugin says; the body is still the documented JSON.
        ctype = "application/json"
    assert ctype in content, (template, ctype, list(content))
    if ctype == "application/json":
        root = _nullable({**copy.deepcopy(content[ctype]["schema"]),
                          "components": doc["components"]})
        jsonschema.validate(resp.json(), root)


#: What a test node takes from a configuration the roster rendered; ports, users and storage
#: stay the harness's.
NETWORK_KEYS = ("DicomModalities", "DicomAlwaysAllowEcho", "DicomAlwaysAllowStore",
                "DicomAlwaysAllowFind", "DicomAlwaysAllowGet", "DicomAlwaysAllowMove",
                "DicomCheckModalityHost", "DicomCheckCalledAet", "UnknownSopClassAccepted")


def network_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The network part of a rendered configuration (see :data:`NETWORK_KEYS`)."""
    return {k: config[k] for k in NETWORK_KEYS if k in config}


def render_peer_roster(tmp: Path, secret: str, nodes: Mapping[str, str],
                       role: str | None = None) -> dict[str, dict[str, Any]]:
    """A workshop roster with ``peer_mode: true``, a server and the participant ``nodes``
    (name -> AET) on 127.0.0.1 with free ports, rendered by ``teachfile roster render``: the
    configurations by node name, the server's under ``"server"``."""
    import json

    from teachfile.cli.main import main

    ports = {n: (free_port(), free_port()) for n in ("server", *nodes)}
    lines = [f"secret: {secret}", "peer_mode: true", "server:", "  aet: TEACHFILE",
             "  host: 127.0.0.1", f"  dicom_port: {ports['server'][0]}",
             f"  http_port: {ports['server'][1]}", "  users:", "    - {name: admin, role: admin}",
             "participants:", "  nodes:"]
    for name, aet in nodes.items():
        lines.append(f"    - {{name: {name}, aet: {aet}, host: 127.0.0.1, "
                     f"port: {ports[name][0]}, http_port: {ports[name][1]}, "
                     "permissions: [echo, find, move, store]"
                     + (f", role: {role}}}" if role else "}"))
    roster = tmp / "roster.yaml"
    roster.write_text("\n".join(lines) + "\n")
    assert main(["roster", "render", str(roster), "-o", str(tmp / "rendered")]) == 0
    configs = {"server": tmp / "rendered/server/orthanc.json"}
    configs.update({n: tmp / f"rendered/nodes/{n}/orthanc.json" for n in nodes})
    return {n: json.loads(p.read_text()) for n, p in configs.items()}


def start_rendered(node_factory: Any, config: Mapping[str, Any], **kwargs: Any) -> Node:
    """A test node with a rendered configuration's AET, ports and network (``kwargs`` go to
    the factory; ``extra_config`` is merged over the network part)."""
    extra = {**network_of(config), **kwargs.pop("extra_config", {})}
    return node_factory(aet=config["DicomAet"], dicom_port=config["DicomPort"],
                        http_port=config["HttpPort"], extra_config=extra, **kwargs)
