"""The 20-participant workshop of the example roster, rebuilt on this machine's loopback range.

The test roster is the example roster with only its addresses and ports changed: the server on
127.0.0.1, participants WORKSHOP01..WORKSHOP20 on 127.0.0.11..127.0.0.30 (all of 127.0.0.0/8 is
local on Linux, nothing to set up), all on one shared port as in the example. The server runs
the rendered ``server/orthanc.json`` with the real plugin, adapted only for paths; every
participant has a DICOM listener (pynetdicom, bound to its own address) instead of an Orthanc.

The server checks that a caller comes from its roster address (``DicomCheckModalityHost``), so
each participant must call FROM its address. DCMTK 3.6.7 cannot choose a source address: for
findscu/movescu/echoscu a tiny LD_PRELOAD shim (compiled here with the system C compiler) binds
the client socket to ``$TEACHFILE_SOURCE_ADDRESS`` before ``connect``. The same checks also run
with pynetdicom's ``bind_address``, which needs no compiler.

``scripts/bench-roster`` reuses the helpers of this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom
import pytest
import requests
import yaml
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from teachfile.cli import launcher as node_mod
from teachfile.cli.main import main
from teachfile.roster import Participant, Roster, load_roster

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "orthanc-config" / "roster.example.yaml"
SERVER_HOST = "127.0.0.1"
INTRUDER = "INTRUDER"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc is not installed"),
]

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* Bind every outgoing IPv4 socket to $TEACHFILE_SOURCE_ADDRESS (port 0) before connecting. */
int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect) real_connect = dlsym(RTLD_NEXT, "connect");
    const char *source = getenv("TEACHFILE_SOURCE_ADDRESS");
    if (source && addr && addr->sa_family == AF_INET) {
        struct sockaddr_in local;
        memset(&local, 0, sizeof local);
        local.sin_family = AF_INET;
        if (inet_pton(AF_INET, source, &local.sin_addr) == 1)
            bind(fd, (struct sockaddr *)&local, sizeof local);
    }
    return real_connect(fd, addr, len);
}

/* pynetdicom binds its client socket to ("", 0) itself before connecting: give such a bind
   the source address instead (a listening bind names a port and is left alone). */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
    const char *source = getenv("TEACHFILE_SOURCE_ADDRESS");
    if (source && addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if (in->sin_port == 0 && in->sin_addr.s_addr == htonl(INADDR_ANY)) {
            struct sockaddr_in local = *in;
            if (inet_pton(AF_INET, source, &local.sin_addr) == 1)
                return real_bind(fd, (struct sockaddr *)&local, sizeof local);
        }
    }
    return real_bind(fd, addr, len);
}
"""


# --------------------------------------------------------------------------- the roster


def workshop_roster_text(port: int, dicom_port: int, http_port: int, count: int = 20) -> str:
    """The example roster moved onto loopback; everything else (AETs, names, permissions,
    roles, users, secret, plugin) stays as the example says."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["server"].update(host=SERVER_HOST, dicom_port=dicom_port, http_port=http_port)
    data["participants"]["defaults"]["port"] = port
    generate = data["participants"]["generate"]
    generate["count"] = count
    if count <= 20:
        generate["host"] = "127.0.0.{n+10}"
        data["network"] = {"subnet": "127.0.0.0/24"}
    else:  # a bigger roster (the benchmark): one address per participant from 127.0.1.1 on
        del generate["host"]
        generate["host_start"] = "127.0.1.1"
        generate["aet"] = "WORKSHOP{n:04}"
        generate["name"] = "workshop{n:04}"
        data["network"] = {"subnet": "127.0.0.0/8"}
    return yaml.safe_dump(data, sort_keys=False)


def free_port(host: str = SERVER_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def workshop_ports(hosts: list[str]) -> tuple[int, int, int]:
    """The participants' shared port and the server's DICOM and HTTP ports, all distinct (the
    server's DICOM port is bound on every address, so it must not be the participants' one)."""
    while True:
        ports = (shared_port(hosts), free_port(), free_port())
        if len(set(ports)) == 3:
            return ports


def shared_port(hosts: list[str], attempts: int = 50) -> int:
    """A port that is free on every one of ``hosts`` (the example gives all one port)."""
    for _ in range(attempts):
        port = free_port(hosts[0])
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port is free on every participant address")


# --------------------------------------------------------------------------- the server


class WorkshopServer:
    """One Orthanc on a rendered configuration with the real plugin, adapted only for paths
    (and, for a participant's node sharing this machine, ports)."""

    def __init__(self, config_file: Path, workdir: Path, user: str = "admin",
                 ports: tuple[int, int] | None = None) -> None:
        config = json.loads(config_file.read_text())
        config["PythonScript"] = str(node_mod.ENTRY_SCRIPT)
        config["Plugins"] = [str(node_mod.restcall_plugin()), *config["Plugins"][1:]]
        config["StorageDirectory"] = config["IndexDirectory"] = str(workdir / "db")
        config["Teachfile"].update(ConfigDirectory=str(node_mod.CONFIG_DIR),
                                   DataDirectory=str(workdir / "teachfile"))
        if ports is not None:
            config["DicomPort"], config["HttpPort"] = ports
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.url = f"http://{SERVER_HOST}:{config['HttpPort']}"
        self.aet: str = config["DicomAet"]
        self.dicom_port: int = config["DicomPort"]
        self.auth = (user, config["RegisteredUsers"][user])
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = workdir / "orthanc.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        with self.log_path.open("ab") as log:
            cmd = node_mod.lane_command([node_mod.orthanc_executable(), str(self.config_path)],
                                        [self.config_path.parent])
            self.process = subprocess.Popen(cmd,
                                            cwd=self.config_path.parent, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env=node_mod.orthanc_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n"
                                   + self.log_tail())
            try:
                if requests.get(self.url + "/teachfile/status", auth=self.auth, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("Orthanc did not answer in time:\n" + self.log_tail())

    def get(self, path: str) -> Any:
        response = requests.get(self.url + path, auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --------------------------------------------------------------------------- listeners


@dataclass
class Listeners:
    """One pynetdicom storage/verification SCP per participant, on its roster address/port;
    records which instances each one received and who sent them."""

    participants: tuple[Participant, ...]
    #: False: C-ECHO only (what ``verify`` needs; starts much faster for 1,000 listeners).
    storage: bool = True
    received: dict[str, list[str]] = field(default_factory=dict)
    senders: dict[str, set[str]] = field(default_factory=dict)
    _servers: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, only: list[str] | None = None) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        for p in self.participants:
            if (only is not None and p.name not in only) or p.name in self._servers:
                continue
            ae = AE(ae_title=p.aet)
            for cx in StoragePresentationContexts if self.storage else ():
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
            ae.add_supported_context(Verification)
            self.received.setdefault(p.name, [])
            self.senders.setdefault(p.name, set())
            self._servers[p.name] = ae.start_server(
                (p.host, p.port), block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._on_store, [p.name])])

    def _on_store(self, event: Any, name: str) -> int:
        with self._lock:
            self.received[name].append(str(event.request.AffectedSOPInstanceUID))
            self.senders[name].add(str(event.assoc.requestor.ae_title).strip())
        return 0x0000

    def clear(self) -> None:
        with self._lock:
            for name in self.received:
                self.received[name] = []
                self.senders[name] = set()

    def stop(self, only: list[str] | None = None) -> None:
        for name in list(self._servers):
            if only is None or name in only:
                server = self._servers.pop(name)
                server.shutdown()
                server.server_close()


# --------------------------------------------------------------------------- clients


class Client(Protocol):
    """A participant's DICOM tools, calling the server from ``source`` as ``aet``."""

    def echo(self, aet: str, source: str) -> bool: ...

    def find(self, aet: str, source: str) -> list[str] | None: ...

    def move(self, aet: str, source: str, destination: str, study_uid: str) -> bool: ...


def build_shim(workdir: Path) -> Path | None:
    """The LD_PRELOAD source-address shim, or ``None`` without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    source = workdir / "bindshim.c"
    source.write_text(SHIM_SOURCE)
    library = workdir / "bindshim.so"
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source),
                           "-ldl"], capture_output=True, text=True, timeout=120)
    return library if proc.returncode == 0 else None


#: DCMTK prints an odd-length UID with its padding byte (NUL for UIDs, as sent): "[1.2.34\0]".
_UID_RE = re.compile(r"\(0020,000d\) UI \[([0-9.]+)[\0 ]?\]")


@dataclass(frozen=True)
class DcmtkClient:
    shim: Path
    server_aet: str
    server_port: int

    def _run(self, tool: str, aet: str, source: str,
             args: list[str]) -> subprocess.CompletedProcess[str]:
        cmd = [tool, "-aet", aet, "-aec", self.server_aet, *args, SERVER_HOST,
               str(self.server_port)]
        env = {**os.environ, "LD_PRELOAD": str(self.shim), "TEACHFILE_SOURCE_ADDRESS": source}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)

    def echo(self, aet: str, source: str) -> bool:
        return self._run("echoscu", aet, source, []).returncode == 0

    def find(self, aet: str, source: str) -> list[str] | None:
        # findscu exits 0 even when the server refuses the query: read its log instead.
        proc = self._run("findscu", aet, source, ["-v", "-S", "-k", "QueryRetrieveLevel=STUDY",
                                                  "-k", "StudyInstanceUID"])
        out = proc.stdout + proc.stderr
        if "Received Final Find Response (Success)" not in out:
            return None
        return sorted(_UID_RE.findall(out))

    def move(self, aet: str, source: str, destination: str, study_uid: str) -> bool:
        proc = self._run("movescu", aet, source, [
            "-v", "-S", "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study_uid}"])
        out = proc.stdout + proc.stderr
        return proc.returncode == 0 and "Received Final Move Response (Success)" in out


@dataclass(frozen=True)
class PynetdicomClient:
    server_aet: str
    server_port: int

    def _associate(self, aet: str, source: str, context: str) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(context)
        return ae.associate(SERVER_HOST, self.server_port, ae_title=self.server_aet,
                            bind_address=(source, 0))

    def echo(self, aet: str, source: str) -> bool:
        from pynetdicom.sop_class import Verification

        assoc = self._associate(aet, source, Verification)
        if not assoc.is_established:
            return False
        try:
            status = assoc.send_c_echo()
            return getattr(status, "Status", None) == 0
        finally:
            assoc.release()

    def find(self, aet: str, source: str) -> list[str] | None:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        assoc = self._associate(aet, source, FIND)
        if not assoc.is_established:
            return None
        uids, final = [], None
        try:
            for status, identifier in assoc.send_c_find(query, FIND):
                final = getattr(status, "Status", None)
                if final in (0xFF00, 0xFF01) and identifier is not None:
                    uids.append(str(identifier.StudyInstanceUID))
        finally:
            if assoc.is_established:
                assoc.release()
        return sorted(uids) if final == 0 else None

    def move(self, aet: str, source: str, destination: str, study_uid: str) -> bool:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        assoc = self._associate(aet, source, MOVE)
        if not assoc.is_established:
            return False
        final = None
        try:
            for status, _ in assoc.send_c_move(query, destination, MOVE):
                final = getattr(status, "Status", None)
        finally:
            if assoc.is_established:
                assoc.release()
        return final == 0


def store_as(server: WorkshopServer, aet: str, source: str,
             datasets: list[Dataset]) -> list[int] | None:
    """C-STORE calling as ``aet`` from ``source``: each DIMSE status (-1: none, e.g. the
    server aborted), or ``None`` if the association was rejected."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate(SERVER_HOST, server.dicom_port, ae_title=server.aet,
                         bind_address=(source, 0))
    if not assoc.is_established:
        return None
    try:
        return [int(getattr(assoc.send_c_store(ds), "Status", -1)) for ds in datasets]
    finally:
        if assoc.is_established:
            assoc.release()


def sample_datasets() -> list[Dataset]:
    return [pydicom.dcmread(get_testdata_file(f)) for f in ("CT_small.dcm", "MR_small.dcm")]


# --------------------------------------------------------------------------- fixtures


@dataclass
class Workshop:
    roster: Roster
    roster_path: Path
    rendered: Path
    server: WorkshopServer
    listeners: Listeners
    #: Study Instance UID -> the SOP Instance UIDs the server holds for it.
    studies: dict[str, list[str]]

    def cli_auth(self) -> list[str]:
        return ["--url", self.server.url, "--user", "admin", "--password", self.server.auth[1]]


@pytest.fixture(scope="module")
def workshop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workshop]:
    if not node_mod.ENTRY_SCRIPT.is_file():
        pytest.skip("no plugin entry script")
    root = tmp_path_factory.mktemp("workshop")
    hosts = [f"127.0.0.{n + 10}" for n in range(1, 21)]
    roster_path = root / "roster.yaml"
    roster_path.write_text(workshop_roster_text(*workshop_ports(hosts)))
    rendered = root / "out"
    assert main(["roster", "render", str(roster_path), "-o", str(rendered)]) == 0
    roster = load_roster(roster_path)
    server = WorkshopServer(rendered / "server" / "orthanc.json", root / "server")
    listeners = Listeners(roster.participants)
    try:
        server.start()
        listeners.start()
        first = roster.participants[0]  # it has the store permission, as all in the example
        assert store_as(server, first.aet, first.host, sample_datasets()) == [0, 0], \
            server.log_tail()
        studies = {}
        for study in server.get("/studies?expand"):
            instances = server.get(f"/studies/{study['ID']}/instances?expand")
            studies[study["MainDicomTags"]["StudyInstanceUID"]] = sorted(
                i["MainDicomTags"]["SOPInstanceUID"] for i in instances)
        assert len(studies) == 2
        yield Workshop(roster, roster_path, rendered, server, listeners, studies)
    finally:
        listeners.stop()
        server.stop()
        print(f"----- workshop server log -----\n{server.log_tail()}")


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    return build_shim(tmp_path_factory.mktemp("shim"))


@pytest.fixture(params=["dcmtk", "pynetdicom"])
def client(request: pytest.FixtureRequest, workshop: Workshop, shim: Path | None) -> Client:
    if request.param == "pynetdicom":
        return PynetdicomClient(workshop.server.aet, workshop.server.dicom_port)
    if shim is None:
        pytest.skip("no C compiler for the DCMTK source-address shim")
    if shutil.which("findscu") is None or shutil.which("movescu") is None:
        pytest.skip("DCMTK is not installed")
    return DcmtkClient(shim, workshop.server.aet, workshop.server.dicom_port)


# --------------------------------------------------------------------------- tests


def test_the_test_roster_mirrors_the_example(workshop: Workshop) -> None:
    example = load_roster(EXAMPLE, environ={})
    ours = workshop.roster
    assert [p.aet for p in ours.participants] == [p.aet for p in example.participants]
    assert [p.name for p in ours.participants] == [p.name for p in example.participants]
    assert [(p.permissions, p.role, p.password) for p in ours.participants] == [
        (p.permissions, p.role, p.password) for p in example.participants]
    assert {p.port for p in ours.participants} == {ours.participants[0].port}
    assert [p.host for p in ours.participants] == [f"127.0.0.{n}" for n in range(11, 31)]
    modalities = workshop.server.get("/modalities?expand")
    assert sorted(modalities) == [p.name for p in ours.participants]
    assert modalities["workshop20"]["Host"] == "127.0.0.30"


def test_every_participant_echoes_finds_and_moves_to_itself(workshop: Workshop,
                                                            client: Client) -> None:
    """For each of the 20: C-ECHO, C-FIND and C-MOVE to itself from its own address; the
    server sends to the roster's address/port, where the participant's listener gets it all."""
    workshop.listeners.clear()
    expected_studies = sorted(workshop.studies)
    for p in workshop.roster.participants:
        assert client.echo(p.aet, p.host), p.name
        assert client.find(p.aet, p.host) == expected_studies, (p.name, workshop.server.log_tail())
        for study_uid in expected_studies:
            assert client.move(p.aet, p.host, p.aet, study_uid), (p.name,
                                                                  workshop.server.log_tail())
    for p in workshop.roster.participants:
        assert sorted(workshop.listeners.received[p.name]) == sorted(
            uid for uids in workshop.studies.values() for uid in uids), p.name
        assert workshop.listeners.senders[p.name] == {workshop.server.aet}


def test_callers_outside_the_roster_are_refused(workshop: Workshop, client: Client) -> None:
    workshop.listeners.clear()
    first, second = workshop.roster.participants[:2]
    study_uid = sorted(workshop.studies)[0]
    # An AET the roster does not know: C-FIND and C-MOVE refused, whatever its address.
    for source in (SERVER_HOST, first.host):
        assert client.find(INTRUDER, source) is None
        assert client.move(INTRUDER, source, first.aet, study_uid) is False
    # A roster AET calling from another participant's address (DicomCheckModalityHost).
    assert client.find(second.aet, first.host) is None
    assert client.move(second.aet, first.host, second.aet, study_uid) is False
    # Nor C-STORE, from a stranger or from a roster AET at another participant's address.
    for aet, source in ((INTRUDER, first.host), (second.aet, first.host)):
        statuses = store_as(workshop.server, aet, source, sample_datasets()[:1])
        assert statuses is None or statuses[0] != 0, (aet, source)
    assert len(workshop.server.get("/instances")) == sum(map(len, workshop.studies.values()))
    # A known caller cannot send studies to an AET outside the roster.
    assert client.move(first.aet, first.host, INTRUDER, study_uid) is False
    # C-ECHO stays open to everyone, on purpose (DicomAlwaysAllowEcho: connectivity checks).
    assert client.echo(INTRUDER, SERVER_HOST)
    assert all(received == [] for received in workshop.listeners.received.values())


def test_verify_and_apply_on_the_running_workshop(workshop: Workshop,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(workshop.roster_path), *workshop.cli_auth()]
    capsys.readouterr()
    assert main(["roster", "verify", *args, "--timeout", "10"]) == 0
    table = capsys.readouterr().out
    assert "20 reachable, 0 not reachable" in table
    assert sum(line.endswith("  reachable") for line in table.splitlines()) == 20

    assert main(["roster", "apply", *args, "--dry-run"]) == 0
    assert "would change: 0 added, 0 changed, 0 removed" in capsys.readouterr().out

    workshop.listeners.stop(only=["workshop20"])
    try:
        # A stopped listener refuses at once, so a long timeout costs nothing here; a short one
        # failed live listeners on a loaded CI machine (all 20 answer from this one process).
        assert main(["roster", "verify", *args, "--timeout", "10"]) == 1
        table = capsys.readouterr().out
        assert "19 reachable, 1 not reachable" in table
        row = next(line for line in table.splitlines() if line.startswith("workshop20 "))
        assert row.split()[-1] == "unreachable" and "127.0.0.30:" in row
    finally:
        workshop.listeners.start(only=["workshop20"])


def test_a_rendered_node_config_runs_the_plugin(workshop: Workshop, tmp_path: Path) -> None:
    """A participant's own Orthanc from ``nodes/<name>/orthanc.json`` (ports remapped, paths
    adapted) starts with the plugin and reaches the workshop server."""
    p = workshop.roster.participants[0]
    node = WorkshopServer(workshop.rendered / "nodes" / p.name / "orthanc.json",
                          tmp_path / "node", user=p.name, ports=(free_port(), free_port()))
    assert node.aet == p.aet
    try:
        node.start()
        assert node.get("/teachfile/status")["profile"]["name"] == "teaching"
        assert node.get("/modalities") == ["teachfile"]
        server = node.get("/modalities?expand")["teachfile"]
        assert (server["AET"], server["Host"], server["Port"]) == (
            workshop.server.aet, SERVER_HOST, workshop.server.dicom_port)
        echo = requests.post(node.url + "/modalities/teachfile/echo", json={}, auth=node.auth,
                             timeout=30)
        assert echo.status_code == 200, node.log_tail()
    finally:
        node.stop()


# --------------------------------------------------------------------------- the handout


def handout_commands(page: str) -> list[str]:
    """Every command block (``<pre>``) of a rendered handout, as the participant copies it."""
    import html

    return [html.unescape(b) for b in re.findall(r"<pre>(.*?)</pre>", page, re.S)]


def test_every_handout_command_works_for_its_participant(workshop: Workshop, shim: Path | None,
                                                          tmp_path: Path) -> None:
    """Each block of workshop01's handout, run as printed (placeholders filled in) from
    workshop01's own address: nothing a handout prints answers 403 or is refused."""
    if shim is None:
        pytest.skip("no C compiler for the source-address shim")
    if shutil.which("movescu") is None:
        pytest.skip("DCMTK is not installed")
    p = workshop.roster.participants[0]
    page = (workshop.rendered / "handouts" / f"{p.name}.html").read_text()
    blocks = handout_commands(page)
    assert blocks and not any("/modalities/" in b and "/store" in b for b in blocks
                              if p.role not in ("admin",))
    study_uid = sorted(workshop.studies)[0]
    orthanc_id = workshop.server.get("/studies")[0]
    image = tmp_path / "image.dcm"
    image.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.dcm").write_bytes(image.read_bytes())
    env = {**os.environ, "LD_PRELOAD": str(shim), "TEACHFILE_SOURCE_ADDRESS": p.host}
    python = str(Path(os.sys.executable))
    ran = 0
    for block in blocks:
        script = (block.replace("STUDY_UID", study_uid).replace("ORTHANC_STUDY_ID", orthanc_id)
                  .replace("python3 - <<", f"{python} - <<"))
        if script.startswith("storescp"):
            continue  # a listener (TLS workshops only); covered by the TLS test
        moving = script.startswith("movescu")
        if script.startswith("curl"):  # how the test reads the answer's status
            script += " -w '\\nHTTP_STATUS=%{http_code}\\n'"
        if moving:  # movescu listens on the shared port itself (on every address)
            workshop.listeners.stop()
        try:
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=120)
        finally:
            if moving:
                workshop.listeners.start()
        out = r.stdout + r.stderr
        assert r.returncode == 0, (script, out)
        for bad in ("Rejected", "Peer aborted", "association refused", "Error", "Failed"):
            assert bad not in out, (script, out)
        if script.startswith("curl"):
            assert "HTTP_STATUS=200" in out, (script, out)
        for status in re.findall(r"status: (0x[0-9a-f]{4})", out):
            assert status in ("0x0000", "0xff00", "0xff01"), (script, out)
        if script.startswith("findscu"):
            assert "Received Final Find Response (Success)" in out, out
        if "send_c_find" in script:
            assert "C-FIND status: 0x0000" in out and study_uid in out, out
        if "send_c_move" in script:
            assert "C-MOVE status: 0x0000" in out, out
        if moving:
            assert "Received Final Move Response (Success)" in out, out
        ran += 1
    assert ran >= 9  # echo x3, find x3, move x2, store x3 for a viewer with every permission
