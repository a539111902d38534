"""Sharing a node: a network configuration that survives restarts, HTTPS for remote clients,
DICOM TLS, and a colleague invited with ``teachfile invite`` who queries and retrieves.

Real clients over real sockets: curl, DCMTK (echoscu/findscu/movescu with and without +tls),
requests, and a "remote" client in a network namespace this module creates (veth pair).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from harness import LOOPBACK, RUNNING, Node, free_port, start_node, to_bytes
from teachfile.cli import launcher as node_mod
from teachfile.cli.main import main as cli
from teachfile.node import tls as tls_mod

PASSWORD = "test-admin-password"


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _dcmtk(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"DCMTK's {tool} is not installed (scripts/setup installs dcmtk)")
    return exe


# -- a network namespace with a veth pair: a second machine for the remote client ----------


@dataclasses.dataclass
class Netns:
    name: str
    host_ip: str     # this machine, as the namespace sees it
    remote_ip: str   # the "remote" client

    def run(self, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, timeout=timeout)


#: This machine's address on the veth pair (put in the node certificate whether or not the
#: namespace can be made, so that the HTTPS and DICOM TLS tests never depend on it).
_OCTET = 16 + os.getpid() % 200
HOST_IP, REMOTE_IP = f"10.231.{_OCTET}.1", f"10.231.{_OCTET}.2"


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed: no network namespace for a remote client")
    tag = f"{os.getpid() % 100000}"
    name, veth_host, veth_ns = f"tfshare{tag}", f"tfh{tag}", f"tfn{tag}"
    host_ip, remote_ip = HOST_IP, REMOTE_IP
    setup = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_ns],
        ["ip", "link", "set", veth_ns, "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", veth_host],
        ["ip", "link", "set", veth_host, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{remote_ip}/30", "dev", veth_ns],
        ["ip", "netns", "exec", name, "ip", "link", "set", veth_ns, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    for cmd in setup:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["ip", "link", "del", veth_host], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            pytest.skip(f"cannot create a network namespace here ({' '.join(cmd[:3])}: "
                        f"{r.stderr.strip()}): no remote client")
    try:
        yield Netns(name, host_ip, remote_ip)
    finally:
        subprocess.run(["ip", "link", "del", veth_host], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- nodes with sharing settings -----------------------------------------------------------


class TlsNode(Node):
    """A public node: HTTPS on its port, checked against the node's own CA."""

    ca: str = ""

    @property
    def url(self) -> str:
        return f"https://localhost:{self.http_port}"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("auth", self.auth)
        kw.setdefault("timeout", 60)
        kw.setdefault("verify", self.ca)
        return requests.request(method, self.url + path, **kw)


def start_shared(data_dir: Path, *, public: bool = False, dicom_tls: bool = False,
                 hosts: tuple[str, ...] = (), aet: str = "SHARED",
                 ports: tuple[int, int] | None = None) -> Node:
    """Start a node as ``make run`` does with TEACHFILE_PUBLIC / TEACHFILE_DICOM_TLS."""
    dicom_port, http_port = ports or (free_port(), free_port())
    settings = node_mod.NodeSettings(aet=aet, dicom_port=dicom_port, http_port=http_port,
                                     data_dir=data_dir, public=public, dicom_tls=dicom_tls,
                                     tls_hosts=hosts)
    environ = {**os.environ, "TEACHFILE_TESTING": "1", "TEACHFILE_ADMIN_PASSWORD": PASSWORD}
    prepared = node_mod.prepare(settings, environ)
    cls = TlsNode if public else Node
    n = cls(aet, aet, dicom_port, http_port, data_dir, PASSWORD, prepared.config,
            log_path=data_dir / "orthanc.log")
    if public:
        assert prepared.tls is not None and prepared.tls.ca_cert is not None
        n.ca = str(prepared.tls.ca_cert)  # type: ignore[attr-defined]
    with open(n.log_path, "ab") as log:
        n.process = subprocess.Popen(node_mod.orthanc_command(prepared),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     env=node_mod.orthanc_env(environ), cwd=data_dir)
    RUNNING.append(n)
    try:
        n.wait_until_ready()
    except Exception:
        n.stop()
        raise
    return n


# -- 1. modalities, peers and users survive restarts ---------------------------------------


def test_network_survives_two_restarts(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    base = ["--data", str(data)]
    assert cli(["modalities", "add", "horos", "--host", "127.0.0.1", "--port", "11112",
                *base]) == 0
    r = subprocess.run([str(Path(sys.executable).with_name("teachfile")), "users", "add",
                        "alice", "--role", "contributor", "--password-stdin", *base],
                       input="alice-password-1\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "alice-password-1" not in r.stdout + r.stderr  # never echoed
    assert cli(["peers", "add", "other", "http://127.0.0.1:9/", *base]) == 0
    assert (data / "network.json").stat().st_mode & 0o777 == 0o600

    node = start_node(data, aet="SHARED")
    try:
        # Orthanc's own PUT /modalities, as admin: in effect at once, and written back.
        body = {"AET": "WEASIS", "Host": "127.0.0.1", "Port": 11113, "AllowStore": False}
        r = node.put("/modalities/weasis", json=body)
        assert r.status_code == 200, r.text
        assert "weasis" in node.get("/modalities").json()
        # A viewer or contributor may not change the network.
        r = node.put("/modalities/evil", json=body, auth=("alice", "alice-password-1"))
        assert r.status_code == 403
        r = node.delete("/modalities/horos", auth=("alice", "alice-password-1"))
        assert r.status_code == 403
        assert node.put("/modalities/bad", json={"AET": "bad aet", "Host": "x",
                                                 "Port": 1}).status_code == 400
        # A DELETE through Orthanc's API lasts as well.
        assert node.put("/modalities/temp", json={"AET": "TEMP", "Host": "127.0.0.1",
                                                  "Port": 104}).status_code == 200
        assert node.delete("/modalities/temp").status_code == 200
    finally:
        node.stop()

    for _restart in range(2):
        node = start_node(data, aet="SHARED")
        try:
            mods = node.get("/modalities?expand").json()
            assert set(mods) == {"horos", "weasis"}, mods
            assert mods["weasis"]["AET"] == "WEASIS"
            assert mods["weasis"]["AllowStore"] is False
            assert mods["horos"]["Port"] == 11112
            assert "other" in node.get("/peers").json()
            alice = ("alice", "alice-password-1")
            assert node.get("/teachfile/status", auth=alice).status_code == 200
            # her role came back too: a contributor may upload, not administer
            assert node.post("/instances", data=to_bytes(_ct()), auth=alice,
                             headers={"Content-Type": "application/dicom"}).status_code == 200
            assert node.delete("/modalities/horos", auth=alice).status_code == 403
        finally:
            node.stop()


# -- 2. a public node: HTTPS and DICOM TLS, reached from another machine ----------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data = tmp_path_factory.mktemp("shared")
    n = start_shared(data, public=True, dicom_tls=True, hosts=(HOST_IP,))
    yield n
    n.stop()


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                           "--max-time", "10", *args], capture_output=True, text=True)


def test_https_with_and_without_the_ca(shared: TlsNode) -> None:
    url = f"https://localhost:{shared.http_port}/teachfile/status"
    ok = _curl("--cacert", shared.ca, "-u", f"admin:{PASSWORD}", url)
    assert ok.stdout == "200", ok.stderr
    untrusted = _curl("-u", f"admin:{PASSWORD}", url)
    assert untrusted.returncode == 60, untrusted  # certificate problem: not trusted
    plain = _curl("-u", f"admin:{PASSWORD}", f"http://127.0.0.1:{shared.http_port}/system")
    assert plain.returncode != 0 and plain.stdout in ("000", "")
    status = shared.status()
    fp = tls_mod.fingerprint((shared.data_dir / "tls" / "node.crt").read_bytes())
    assert status["sharing"] == {"public": True, "https": True, "dicom_tls": True,
                                 "tls_fingerprint_sha256": fp}
    key = shared.data_dir / "tls" / "node.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (shared.data_dir / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600


def test_remote_client_gets_https_only(shared: TlsNode, netns: Netns, tmp_path: Path) -> None:
    url = f"https://{netns.host_ip}:{shared.http_port}/teachfile/status"
    r = netns.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                  "--cacert", shared.ca, "-u", f"admin:{PASSWORD}", url)
    assert r.stdout == "200", r.stderr
    r = netns.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                  "-u", f"admin:{PASSWORD}", f"http://{netns.host_ip}:{shared.http_port}/system")
    assert r.returncode != 0 and r.stdout != "200", r


def test_local_node_refuses_remote_clients(netns: Netns, tmp_path: Path) -> None:
    n = start_shared(tmp_path / "local", aet="LOCALONLY")
    try:
        assert n.get("/system").status_code == 200  # loopback is served
        r = netns.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                      "10", "-u", f"admin:{PASSWORD}",
                      f"http://{netns.host_ip}:{n.http_port}/system")
        # Orthanc 1.10 listens everywhere but refuses a remote client even with the right
        # password (RemoteAccessAllowed false; measured: 401); >= 1.13 binds 127.0.0.1 only.
        assert r.stdout in ("401", "403", "000"), r
    finally:
        n.stop()


def _client_cert(shared: Node, tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    tls = shared.data_dir / "tls"
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    tls_mod.issue(tls / "ca.key", tls / "ca.crt", key, cert, name)
    return key, cert, tls / "ca.crt"


def test_dicom_tls_accepts_trusted_and_refuses_the_rest(shared: Node, tmp_path: Path) -> None:
    echoscu = _dcmtk("echoscu")
    key, cert, ca = _client_cert(shared, tmp_path, "client")
    target = [LOOPBACK, str(shared.dicom_port)]
    ok = subprocess.run([echoscu, "+tls", str(key), str(cert), "+cf", str(ca), "-aec",
                         shared.aet, *target], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    plain = subprocess.run([echoscu, "-aec", shared.aet, *target], capture_output=True,
                           text=True, timeout=30)
    assert plain.returncode != 0
    # A certificate from another CA is refused by the node.
    other = tmp_path / "other"
    other.mkdir()
    tls_mod.make_ca(other / "ca.key", other / "ca.crt", "stranger")
    tls_mod.issue(other / "ca.key", other / "ca.crt", other / "c.key", other / "c.crt", "x")
    bad = subprocess.run([echoscu, "+tls", str(other / "c.key"), str(other / "c.crt"), "+cf",
                          str(ca), "-aec", shared.aet, *target], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0


# -- 3. a colleague invited with teachfile invite: C-FIND and C-MOVE from its own AET -----


def test_invited_colleague_finds_and_retrieves(shared: TlsNode, tmp_path: Path) -> None:
    findscu = _dcmtk("findscu")
    assert shared.post("/instances", data=to_bytes(_ct()),
                       headers={"Content-Type": "application/dicom"}).status_code == 200
    move_port = free_port()
    out = tmp_path / "invite"
    env = {"TEACHFILE_DATA": str(shared.data_dir), "TEACHFILE_AET": shared.aet,
           "TEACHFILE_DICOM_PORT": str(shared.dicom_port),
           "TEACHFILE_HTTP_PORT": str(shared.http_port), "TEACHFILE_PUBLIC": "1",
           "TEACHFILE_DICOM_TLS": "1", "TEACHFILE_ADMIN_PASSWORD": PASSWORD}
    r = subprocess.run([str(Path(sys.executable).with_name("teachfile")), "invite", "carol",
                        "--role", "viewer", "--aet", "CAROLVIEW", "--host", LOOPBACK,
                        "--port", str(move_port), "--node-host", "localhost", "--out", str(out)],
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "in effect now" in r.stdout  # the modality reached the running node
    sheet = (out / "carol.html").read_text()
    assert (out / "carol.html").stat().st_mode & 0o777 == 0o600
    status = shared.status()
    for token in ("CAROLVIEW", shared.aet, str(shared.dicom_port),
                  status["sharing"]["tls_fingerprint_sha256"], "Horos", "Weasis", "RadiAnt",
                  f"https://localhost:{shared.http_port}/teachfile/",
                  f"https://localhost:{shared.http_port}/teachfile/ui/"):
        assert token in sheet, token
    assert "PRIVATE KEY" not in sheet
    assert (out / "carol.key").stat().st_mode & 0o777 == 0o600
    tls = ["+tls", str(out / "carol.key"), str(out / "carol.crt"), "+cf",
           str(out / "node-ca.crt")]
    target = [LOOPBACK, str(shared.dicom_port)]
    found = subprocess.run([findscu, *tls, "-S", "-aet", "CAROLVIEW", "-aec", shared.aet,
                            "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                            *target], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    uids = [line for line in found.stderr.splitlines() + found.stdout.splitlines()
            if "StudyInstanceUID" in line and "2.25." in line]
    assert uids, found.stderr
    study_uid = uids[0].split("[", 1)[1].split("]", 1)[0]
    # C-MOVE from CAROLVIEW to CAROLVIEW: DCMTK 3.6's movescu has no TLS, so storescp +tls
    # receives and pynetdicom (TLS, carol's certificate) asks for the move.
    od = tmp_path / "moved"
    od.mkdir()
    storescp = subprocess.Popen([_dcmtk("storescp"), "+tls", str(out / "carol.key"),
                                 str(out / "carol.crt"), "+cf", str(out / "node-ca.crt"),
                                 "-aet", "CAROLVIEW", "-od", str(od), str(move_port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        assert _move_tls(shared, out, "CAROLVIEW", study_uid) == 0x0000
        deadline = time.monotonic() + 20
        while not list(od.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(od.iterdir())
        # A stranger AET is no known modality: the node refuses its move.
        assert _move_tls(shared, out, "STRANGER", study_uid) != 0x0000
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)


def _move_tls(node: Node, files: Path, aet: str, study_uid: str) -> int:
    import ssl

    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files / "node-ca.crt"))
    ctx.load_cert_chain(str(files / "carol.crt"), str(files / "carol.key"))
    ctx.check_hostname = False
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(MOVE)
    assoc = ae.associate(LOOPBACK, node.dicom_port, ae_title=node.aet, tls_args=(ctx, None))
    if not assoc.is_established:
        return -1
    ds = pydicom.Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    status = -1
    try:
        for st, _ in assoc.send_c_move(ds, aet, MOVE):
            if st is not None and "Status" in st:
                status = int(st.Status)
    finally:
        assoc.release()
    return status


def test_invited_colleague_logs_in_after_a_restart(shared: TlsNode) -> None:
    """Users need a restart (Orthanc reads RegisteredUsers at start-up); after one, the
    password on the sheet works over HTTPS with the viewer role."""
    from teachfile.node import network

    net = network.load(shared.data_dir / "network.json")
    if "carol" not in net.users:
        pytest.skip("needs test_invited_colleague_finds_and_retrieves first")
    ports = (shared.dicom_port, shared.http_port)
    shared.stop()
    n = start_shared(shared.data_dir, public=True, dicom_tls=True,
                     hosts=(HOST_IP,), ports=ports)
    try:
        carol = ("carol", net.users["carol"].password)
        assert n.get("/teachfile/status", auth=carol).status_code == 200
        assert n.put("/modalities/x", json={"AET": "X", "Host": "h", "Port": 1},
                     auth=carol).status_code == 403
        assert "carol" in n.get("/modalities").json()
    finally:
        n.stop()


def test_every_command_of_a_plain_invite_sheet_works(tmp_path: Path) -> None:
    """A local node without TLS: the sheet's echoscu, findscu and movescu, run as printed from
    the invited AET, find and retrieve; its curl works once the node has restarted."""
    import html
    import re

    _dcmtk("movescu")
    data = tmp_path / "node"
    data.mkdir()
    ports = (free_port(), free_port())
    node = start_shared(data, aet="PLAIN", ports=ports)
    move_port = free_port()
    try:
        assert node.post("/instances", data=to_bytes(_ct()),
                         headers={"Content-Type": "application/dicom"}).status_code == 200
        study_uid = node.get("/studies?expand").json()[0]["MainDicomTags"]["StudyInstanceUID"]
        env = {**os.environ, "TEACHFILE_DATA": str(data), "TEACHFILE_AET": "PLAIN",
               "TEACHFILE_DICOM_PORT": str(ports[0]), "TEACHFILE_HTTP_PORT": str(ports[1]),
               "TEACHFILE_ADMIN_PASSWORD": PASSWORD}
        out = tmp_path / "sheet"
        r = subprocess.run([str(Path(sys.executable).with_name("teachfile")), "invite", "dave",
                            "--role", "contributor", "--aet", "DAVEVIEW", "--host", LOOPBACK,
                            "--port", str(move_port), "--node-host", LOOPBACK, "--out",
                            str(out)], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "local only" in r.stdout  # told that colleagues cannot reach the web port yet
        page = (out / "dave.html").read_text()
        blocks = [html.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", page, re.S)]
        dicom = [line for b in blocks for line in b.splitlines()
                 if line.split(" ", 1)[0] in ("echoscu", "findscu", "movescu")]
        assert [c.split(" ", 1)[0] for c in dicom] == ["echoscu", "findscu", "movescu"]
        od = tmp_path / "moved"
        od.mkdir()
        for cmd in dicom:
            cmd = cmd.replace("STUDY_UID", study_uid).replace("-od .", f"-od {od}")
            r = subprocess.run(["bash", "-c", cmd + " -v"], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, (cmd, r.stderr)
            assert "Failed" not in r.stderr and "Rejected" not in r.stderr, (cmd, r.stderr)
        assert list(od.iterdir())  # movescu received the study as DAVEVIEW
    finally:
        node.stop()
    node = start_shared(data, aet="PLAIN", ports=ports)
    try:
        curl = next(b for b in blocks if b.startswith("curl"))
        password = network_password(data, "dave")
        r = subprocess.run(["bash", "-c", curl.replace("-u dave", f"-u dave:{password}")
                            + " -f -o /dev/null -w '%{http_code}'"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout == "200", (curl, r.stderr)
    finally:
        node.stop()


def network_password(data: Path, user: str) -> str:
    from teachfile.node import network

    return network.load(data / "network.json").users[user].password
