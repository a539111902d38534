"""The rendered configurations against a real Orthanc 1.10 (plain, no plugin), on loopback only.

The example roster's 172.31.15.x addresses are only loaded into Orthanc's modality table, never
contacted. Everything that talks DICOM uses a roster of 127.0.0.1 nodes on free ports.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from teachfile.cli import launcher
from teachfile.cli.main import main
from teachfile.roster import load_roster
from teachfile.roster.render import render, write

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists(),
                       reason="Orthanc is not installed"),
]

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
EXAMPLE = Path(__file__).resolve().parents[2] / "orthanc-config" / "roster.example.yaml"
SECRET = "integration-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """One plain Orthanc process on a rendered configuration, adapted only for ports/paths."""

    def __init__(self, config: dict[str, Any], workdir: Path, user: str, password: str,
                 http_port: int | None = None, dicom_port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        if env is None:  # plain Orthanc
            config = {k: v for k, v in config.items() if k not in ("Plugins", "PythonScript")}
        config["StorageDirectory"] = config["IndexDirectory"] = str(workdir / "db")
        config["HttpPort"] = http_port or config["HttpPort"]
        config["DicomPort"] = dicom_port or config["DicomPort"]
        self.url = f"http://127.0.0.1:{config['HttpPort']}"
        self.auth = (user, password)
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = workdir / "orthanc.log"
        self._log = self.log_path.open("ab")
        # On the lane the suite runs on ($TEACHFILE_ORTHANC), as the harness's nodes are.
        cmd = launcher.lane_command([launcher.orthanc_executable(), str(self.config_path)],
                                    [workdir])
        self.process = subprocess.Popen(cmd, cwd=workdir, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/system", auth=self.auth, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer /system in time:\n{self.log()}")

    def get(self, path: str) -> Any:
        response = requests.get(self.url + path, auth=self.auth, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, auth=self.auth, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def orthancs(tmp_path: Path) -> Iterator[list[Orthanc]]:
    """Processes started by a test; stopped afterwards, their logs printed (pytest shows them
    only when the test fails)."""
    started: list[Orthanc] = []
    yield started
    for o in started:
        o.stop()
        print(f"----- {o.config_path.parent.name} log -----\n{o.log()}")


def start(orthancs: list[Orthanc], *args: Any, **kwargs: Any) -> Orthanc:
    o = Orthanc(*args, **kwargs)
    orthancs.append(o)
    o.wait_ready()
    return o


def test_example_server_config_is_accepted(tmp_path: Path, orthancs: list[Orthanc]) -> None:
    roster = load_roster(EXAMPLE, environ={})
    write(render(roster), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "server" / "orthanc.json").read_text())
    admin = config["RegisteredUsers"]["admin"]
    server = start(orthancs, config, tmp_path / "server", "admin", admin, free_port(), free_port())
    modalities = server.get("/modalities?expand")
    assert sorted(modalities) == [f"workshop{n:02}" for n in range(1, 21)]
    assert modalities["workshop07"]["AET"] == "WORKSHOP07"
    assert modalities["workshop07"]["Host"] == "172.31.15.107"
    assert modalities["workshop07"]["Port"] == 11112
    assert modalities["workshop07"]["AllowGet"] is False
    assert modalities["workshop07"]["AllowStore"] is True
    # A participant's credentials work too, and so does one node's rendered configuration.
    p = roster.participants[0]
    assert requests.get(server.url + "/system", auth=(p.name, p.password), timeout=5).ok
    node_config = json.loads((tmp_path / "out" / "nodes" / p.name / "orthanc.json").read_text())
    node = start(orthancs, node_config, tmp_path / p.name, p.name, p.password, free_port(),
                 free_port())
    assert node.get("/modalities") == ["teachfile"]
    assert node.get("/peers") == ["teachfile"]


def test_example_server_config_runs_the_plugin(tmp_path: Path, orthancs: list[Orthanc]) -> None:
    """The rendered server configuration, plugin included, adapted only for ports and paths."""
    node = pytest.importorskip("teachfile.cli.launcher")
    if not all(hasattr(node, n) for n in ("orthanc_env", "ENTRY_SCRIPT", "CONFIG_DIR")):
        pytest.skip("teachfile.cli.launcher does not expose the launcher's paths")
    if not Path(node.ENTRY_SCRIPT).is_file():
        pytest.skip("no plugin entry script")
    config = json.loads(render(load_roster(EXAMPLE, environ={}))["server/orthanc.json"])
    config["PythonScript"] = str(node.ENTRY_SCRIPT)
    config["Plugins"] = [str(node.restcall_plugin()), *config["Plugins"][1:]]
    config["Teachfile"].update(ConfigDirectory=str(node.CONFIG_DIR),
                               DataDirectory=str(tmp_path / "server" / "teachfile"))
    admin = config["RegisteredUsers"]["admin"]
    server = start(orthancs, config, tmp_path / "server", "admin", admin, free_port(),
                   free_port(), env=node.orthanc_env())
    assert "python" in server.get("/plugins")
    status = server.get("/teachfile/status")
    assert status["profile"]["name"] == "teaching"
    assert len(server.get("/modalities")) == 20


def loopback_roster(path: Path, ports: dict[str, int], nodes: list[tuple[str, str]],
                    in_database: bool = False) -> None:
    """``nodes``: (name, permissions) on 127.0.0.1 with ports from ``ports``."""
    lines = [f"secret: {SECRET}", "server:", "  aet: TEACHFILE", "  host: 127.0.0.1",
             f"  modalities_in_database: {str(in_database).lower()}",
             f"  dicom_port: {ports['server-dicom']}", f"  http_port: {ports['server-http']}",
             "  users:", "    - {name: admin, role: admin}", "participants:", "  nodes:"]
    for name, perms in nodes:
        lines.append(f"    - {{name: {name}, aet: {name.upper().replace('-', '_')},"
                     f" host: 127.0.0.1, port: {ports[name + '-dicom']},"
                     f" http_port: {ports[name + '-http']}, permissions: [{perms}],"
                     " role: viewer}")
    path.write_text("\n".join(lines) + "\n")


def test_apply_and_verify_against_real_nodes(tmp_path: Path, orthancs: list[Orthanc],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    names = ("node-a", "node-b", "node-c", "node-d")
    ports = {f"{n}-{kind}": free_port() for n in ("server", *names) for kind in ("dicom", "http")}
    roster_path = tmp_path / "roster.yaml"
    loopback_roster(roster_path, ports, [("node-a", "echo, find, move, store"),
                                         ("node-b", "echo"), ("node-c", "echo, find")])
    out = tmp_path / "out"
    assert main(["roster", "render", str(roster_path), "-o", str(out)]) == 0
    roster = load_roster(roster_path)
    server_config = json.loads((out / "server" / "orthanc.json").read_text())
    admin = server_config["RegisteredUsers"]["admin"]
    server = start(orthancs, server_config, tmp_path / "server", "admin", admin)
    for p in roster.participants[:2]:  # node-c stays down: its port is closed
        config = json.loads((out / "nodes" / p.name / "orthanc.json").read_text())
        start(orthancs, config, tmp_path / p.name, p.name, p.password)
    node_a, node_b = orthancs[1], orthancs[2]
    assert sorted(server.get("/modalities")) == ["node-a", "node-b", "node-c"]

    # The rendered permissions hold: node-a may C-FIND the server, node-b (echo only) may not.
    assert node_a.post("/modalities/teachfile/echo", {}).status_code == 200
    assert node_a.post("/modalities/teachfile/query",
                       {"Level": "Study", "Query": {}}).status_code == 200
    assert node_b.post("/modalities/teachfile/echo", {}).status_code == 200
    assert node_b.post("/modalities/teachfile/query",
                       {"Level": "Study", "Query": {}}).status_code != 200

    auth = ["--url", server.url, "--user", "admin", "--password", admin]
    capsys.readouterr()
    assert main(["roster", "verify", str(roster_path), *auth, "--timeout", "3"]) == 1
    table = capsys.readouterr().out
    status = {line.split()[0]: line.split()[-1] for line in table.splitlines()[1:4]}
    assert status == {"node-a": "reachable", "node-b": "reachable", "node-c": "unreachable"}
    assert "2 reachable, 1 not reachable" in table

    # New roster: node-b moves to another port, node-c leaves, node-d joins.
    ports["node-b-dicom"] = free_port()
    loopback_roster(roster_path, ports, [("node-a", "echo, find, move, store"),
                                         ("node-b", "echo"), ("node-d", "echo, get")])
    before = server.get("/modalities?expand")
    assert main(["roster", "apply", str(roster_path), *auth, "--dry-run"]) == 0
    diff = capsys.readouterr().out
    assert f"~ node-b: Port {before['node-b']['Port']} -> {ports['node-b-dicom']}" in diff
    assert "+ node-d: NODE_D@127.0.0.1:" in diff and "[echo get]" in diff
    assert "- node-c" in diff
    assert "would change: 1 added, 1 changed, 1 removed" in diff
    assert server.get("/modalities?expand") == before

    assert main(["roster", "apply", str(roster_path), *auth]) == 0
    assert "changed: 1 added, 1 changed, 1 removed" in capsys.readouterr().out
    after = server.get("/modalities?expand")
    assert sorted(after) == ["node-a", "node-b", "node-d"]
    assert after["node-b"]["Port"] == ports["node-b-dicom"]
    assert after["node-d"]["AllowGet"] is True and after["node-d"]["AllowFind"] is False
    assert main(["roster", "apply", str(roster_path), *auth]) == 0
    assert "changed: 0 added, 0 changed, 0 removed" in capsys.readouterr().out

    # node-a is still reachable after the changes; node-b is not where the roster now says.
    assert main(["roster", "verify", str(roster_path), *auth, "--timeout", "3"]) == 1
    table = capsys.readouterr().out
    status = {line.split()[0]: line.split()[-1] for line in table.splitlines()[1:4]}
    assert status == {"node-a": "reachable", "node-b": "unreachable", "node-d": "unreachable"}


@pytest.mark.parametrize("in_database", [False, True])
def test_what_survives_a_restart(tmp_path: Path, orthancs: list[Orthanc], in_database: bool,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """REST changes persist only with DicomModalitiesInDatabase, which also makes Orthanc
    ignore the file's modalities (so apply must run once after the first start)."""
    ports = {f"{n}-{kind}": free_port() for n in ("server", "node-a", "node-b")
             for kind in ("dicom", "http")}
    roster_path = tmp_path / "roster.yaml"
    loopback_roster(roster_path, ports, [("node-a", "echo"), ("node-b", "echo")], in_database)
    out = tmp_path / "out"
    assert main(["roster", "render", str(roster_path), "-o", str(out)]) == 0
    config = json.loads((out / "server" / "orthanc.json").read_text())
    admin = config["RegisteredUsers"]["admin"]
    auth = ["--url", f"http://127.0.0.1:{ports['server-http']}", "--user", "admin",
            "--password", admin]

    server = start(orthancs, config, tmp_path / "server", "admin", admin)
    assert server.get("/modalities") == ([] if in_database else ["node-a", "node-b"])
    loopback_roster(roster_path, ports, [("node-a", "echo")], in_database)
    assert main(["roster", "apply", str(roster_path), *auth]) == 0
    assert server.get("/modalities") == ["node-a"]

    server.stop()
    server = start(orthancs, config, tmp_path / "server", "admin", admin)
    assert server.get("/modalities") == (["node-a"] if in_database else ["node-a", "node-b"])
