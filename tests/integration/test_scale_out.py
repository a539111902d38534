"""Scale-out, natively: two teaching-file nodes over one PostgreSQL index and one storage
directory, as the Orthanc team runs several Orthancs on the same database (and as the Docker
``scale`` profile does).

PostgreSQL and ``orthanc-postgresql`` come from Debian (``scripts/setup --postgres``). Each test
module starts its own throw-away PostgreSQL cluster on a free loopback port; nothing touches a
system cluster.
"""

from __future__ import annotations

import copy
import io
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from harness import LOOPBACK, Node, free_port, send_pynetdicom
from teachfile.cli import launcher as node_mod
from teachfile.node.keys import fingerprint

PG_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so")
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
N_INSTANCES = 12  # two series of six, alternately sent to each node
PATIENT_NAME = "PHIQSCALEA^PHIQSCALEB"
PATIENT_ID = "PHIQSCALEC"

pytestmark = pytest.mark.integration


def _pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    database: str
    user: str
    password: str

    def orthanc_section(self) -> dict[str, Any]:
        # Lock false: several Orthancs share this index (the Orthanc book's scale-out recipe).
        return {"EnableIndex": True, "EnableStorage": False, "Host": self.host,
                "Port": self.port, "Database": self.database, "Username": self.user,
                "Password": self.password, "Lock": False, "IndexConnectionsCount": 2}


def _as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` account then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as 'postgres'")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL cluster in a temporary directory, on a free loopback port."""
    bindir = _pg_bindir()
    if bindir is None or not PG_PLUGIN.exists():
        pytest.skip("PostgreSQL or orthanc-postgresql is not installed: run "
                    "`scripts/setup --postgres` to run the scale-out tests")
    # Not under pytest's tmp dirs: they are private to this user, and the server may run as
    # 'postgres', which must own its data directory.
    base = Path(tempfile.mkdtemp(prefix="teachfile-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    password = secrets.token_urlsafe(12)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        for p in (sock, pwfile):
            shutil.chown(p, "postgres")
    port = free_port()
    log = base / "postgres.log"

    def run(cmd: list[str]) -> None:
        proc = subprocess.run(_as_pg_user(cmd), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed:\n{proc.stdout}\n{proc.stderr}")

    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "teachfile", "-E", "UTF8",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", f"-h {LOOPBACK} -p {port} -k {sock} -c fsync=off", "start"])
        try:
            run([str(bindir / "createdb"), "-h", str(sock), "-p", str(port), "-U", "teachfile",
                 "orthanc"])
            yield Postgres(LOOPBACK, port, "orthanc", "teachfile", password)
        finally:
            run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _drop_index(pg: Postgres) -> None:
    """Start each test from an empty index: drop and re-create the database."""
    bindir = _pg_bindir()
    assert bindir is not None
    env = {**os.environ, "PGPASSWORD": pg.password}
    for tool in ("dropdb", "createdb"):
        subprocess.run([str(bindir / tool), "-h", pg.host, "-p", str(pg.port), "-U", pg.user,
                        pg.database], check=True, capture_output=True, env=env, timeout=60)


@dataclass
class Cluster:
    a: Node
    b: Node
    storage: Path


def _start_pair(node_factory: Callable[..., Node], pg: Postgres, storage: Path,
                key_a: str, key_b: str) -> Cluster:
    extra = {
        "Plugins": [*node_mod.plugin_paths(), str(PG_PLUGIN)],
        "PostgreSQL": pg.orthanc_section(),
        "StorageDirectory": str(storage),
        "SaveJobs": False,
    }
    # One after the other, as an operator would: the first one creates the index schema.
    a = node_factory(aet="SCALEA", extra_config=extra, env={"TEACHFILE_KEY": key_a})
    b = node_factory(aet="SCALEB", extra_config=extra, env={"TEACHFILE_KEY": key_b})
    return Cluster(a, b, storage)


@pytest.fixture
def fresh_index(postgres: Postgres, tmp_path: Path) -> tuple[Postgres, Path]:
    _drop_index(postgres)
    storage = tmp_path / "shared-storage"
    storage.mkdir()
    return postgres, storage


def _study() -> list[pydicom.Dataset]:
    """One patient, one study, two series: distinct SOP Instance UIDs, identifying values."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study_uid = pydicom.uid.generate_uid()
    series = [pydicom.uid.generate_uid() for _ in range(2)]
    out = []
    for i in range(N_INSTANCES):
        ds = copy.deepcopy(base)
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series[i % 2]
        ds.SeriesNumber = 1 + i % 2
        ds.InstanceNumber = 1 + i // 2
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def _send_concurrently(cluster: Cluster, datasets: list[pydicom.Dataset]) -> dict[str, list[int]]:
    """Even-numbered instances to node A, odd ones to node B, both associations at once."""
    halves = {"a": (cluster.a, datasets[0::2]), "b": (cluster.b, datasets[1::2])}
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def send(name: str) -> None:
        node, part = halves[name]
        try:
            start.wait(timeout=60)
            results[name] = send_pynetdicom(node, part, calling_aet=f"MODALITY{name.upper()}")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return results


def _resources(node: Node) -> dict[str, list[str]]:
    return {level: sorted(node.get(f"/{level}").json())
            for level in ("patients", "studies", "series", "instances")}


def _stored(node: Node) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(node.instance_bytes(i))) for i in node.instances()]


def test_two_nodes_one_index_one_key_make_one_consistent_study(
        node_factory: Callable[..., Node], fresh_index: tuple[Postgres, Path]) -> None:
    pg, storage = fresh_index
    key = secrets.token_hex(32)
    cluster = _start_pair(node_factory, pg, storage, key, key)
    assert cluster.a.status()["key_fingerprint"] == cluster.b.status()["key_fingerprint"]

    originals = _study()
    results = _send_concurrently(cluster, originals)
    assert results["a"] == [0] * len(originals[0::2])
    assert results["b"] == [0] * len(originals[1::2])

    # Both nodes see the same index: one patient, one study, two series, nothing lost.
    seen_a, seen_b = _resources(cluster.a), _resources(cluster.b)
    assert seen_a == seen_b
    assert len(seen_a["patients"]) == 1
    assert len(seen_a["studies"]) == 1
    assert len(seen_a["series"]) == 2
    assert len(seen_a["instances"]) == N_INSTANCES
    # Each node did half of the work (the plugin ran on both).
    stored_a = cluster.a.status()["counters"]["stored"]
    stored_b = cluster.b.status()["counters"]["stored"]
    assert (stored_a, stored_b) == (len(originals[0::2]), len(originals[1::2]))

    # Every file is readable through either node (shared storage), de-identified, in J2K,
    # with the same pseudonyms whichever node made it; no original UID survives.
    from_a = {str(ds.SOPInstanceUID): ds for ds in _stored(cluster.a)}
    from_b = {str(ds.SOPInstanceUID): ds for ds in _stored(cluster.b)}
    assert from_a.keys() == from_b.keys()
    assert len(from_a) == N_INSTANCES
    original_uids = {str(ds.SOPInstanceUID) for ds in originals}
    assert not original_uids & from_a.keys()
    stored = list(from_a.values())
    assert {str(ds.PatientName) for ds in stored} != {PATIENT_NAME}
    assert len({str(ds.PatientName) for ds in stored}) == 1
    assert len({str(ds.PatientID) for ds in stored}) == 1
    assert {str(ds.PatientID) for ds in stored} != {PATIENT_ID}
    assert len({str(ds.StudyInstanceUID) for ds in stored}) == 1
    assert str(stored[0].StudyInstanceUID) != str(originals[0].StudyInstanceUID)
    assert len({str(ds.SeriesInstanceUID) for ds in stored}) == 2
    for ds in stored:
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.file_meta.TransferSyntaxUID) in J2K
        assert PATIENT_NAME.split("^")[0] not in str(ds.PatientName)

    # The same instances sent again, each to the OTHER node: the same pseudonymous UIDs come
    # out, so nothing is duplicated.
    swapped = originals[1::2] + originals[0::2]
    again = _send_concurrently(cluster, swapped)
    assert set(again["a"]) == {0} and set(again["b"]) == {0}
    assert _resources(cluster.a) == seen_a
    assert _resources(cluster.b) == seen_a

    # When the key check is wired, both nodes report the shared key as good.
    for n in (cluster.a, cluster.b):
        check = n.status().get("key_check")
        if check is not None:
            assert check["state"] in ("first", "match"), check
            assert check["may_receive"] is True

    # The portal: a conference list and a case record saved through one replica are what the
    # other one shows (the lists live in the shared storage, the library follows the shared
    # index's change log).
    study = seen_a["studies"][0]
    b_library = cluster.b.get("/teachfile/portal/library").json()  # B's index, warmed first
    assert b_library["total"] == 1
    saved = cluster.a.put(f"/teachfile/portal/cases/{study}",
                          json={"diagnosis": "Scale-out diagnosis", "keywords": ["shared"]})
    assert saved.status_code == 200, saved.text
    conf = cluster.a.get("/teachfile/portal/conferences").json()
    lists = [{"name": "Monday", "cases": [study]}]
    assert cluster.a.put("/teachfile/portal/conferences",
                         json={"version": conf["version"], "lists": lists}).status_code == 200
    assert cluster.b.get("/teachfile/portal/conferences").json()["lists"] == lists
    found = cluster.b.get("/teachfile/portal/library", params={"q": "scale-out"}).json()
    assert [c["study"] for c in found["cases"]] == [study]


def test_nodes_with_different_keys_are_caught(
        node_factory: Callable[..., Node], fresh_index: tuple[Postgres, Path]) -> None:
    """Mixed keys split studies; the second node must say so and refuse to receive."""
    pg, storage = fresh_index
    cluster = _start_pair(node_factory, pg, storage, secrets.token_hex(32),
                          secrets.token_hex(32))
    status_a, status_b = cluster.a.status(), cluster.b.status()
    assert status_a["key_fingerprint"] != status_b["key_fingerprint"]
    originals = _study()

    if not status_b.get("key_check"):
        # Show the hazard the check exists for, then report the missing wiring.
        results = _send_concurrently(cluster, originals)
        assert set(results["a"]) == {0} and set(results["b"]) == {0}
        assert len(_resources(cluster.a)["studies"]) == 2, "mixed keys should split the study"
        pytest.xfail("the key check (teachfile.node.keycheck) is not wired into the entry script "
                     "yet: /teachfile/status has no 'key_check', so a node with another key "
                     "silently splits studies (shown above: 1 study became 2)")

    # The first node defined the cluster's key; the second one is told it differs.
    assert status_a["key_check"]["state"] in ("first", "match")
    check_b = status_b["key_check"]
    assert check_b["state"] == "mismatch", check_b
    assert check_b["may_receive"] is False
    assert check_b["cluster_fingerprint"] == status_a["key_fingerprint"]
    assert check_b["local_fingerprint"] == status_b["key_fingerprint"]

    results = _send_concurrently(cluster, originals)
    assert set(results["a"]) == {0}
    assert results["b"] and all(s != 0 for s in results["b"]), results["b"]
    resources = _resources(cluster.a)
    assert len(resources["studies"]) == 1
    assert len(resources["instances"]) == len(originals[0::2])
    counters_b = cluster.b.status()["counters"]
    assert counters_b["stored"] == 0
    assert counters_b["refused"] == len(originals[1::2])
    assert counters_b["refused_by_reason"] == {"key-mismatch": len(originals[1::2])}
    assert counters_b["alarms_by_reason"].get("key-mismatch", 0) >= 1


def _docker_config_on_this_machine(pg: Postgres, storage: Path, secrets_dir: Path
                                   ) -> dict[str, Any]:
    """``orthanc-config/docker/orthanc.json`` as the container sees it after its entry point
    merged the secrets, with container paths and addresses mapped onto this machine."""
    import json
    import sys

    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "docker"))
    try:
        import secrets_to_config
    finally:
        sys.path.remove(str(repo / "docker"))
    docker = json.loads((repo / "orthanc-config" / "docker" / "orthanc.json").read_text())
    fragment = secrets_to_config.fragment({
        "TEACHFILE_ADMIN_PASSWORD_FILE": str(secrets_dir / "admin"),
        "TEACHFILE_POSTGRES_PASSWORD_FILE": str(secrets_dir / "pg"),
        "TEACHFILE_KEY_FILE": str(secrets_dir / "key"),
    })
    config = secrets_to_config.merge(docker, fragment)
    mapped = {
        "/opt/teachfile/plugin/teachfile_entry.py": str(repo / "plugin" / "teachfile_entry.py"),
        "/opt/teachfile/orthanc-config": str(repo / "orthanc-config"),
        "/var/lib/orthanc/db": str(storage),
        "/var/lib/orthanc/teachfile": str(storage.parent / "teachfile"),
    }
    for key in ("PythonScript", "StorageDirectory", "IndexDirectory"):
        config[key] = mapped[config[key]]
    for key in ("ConfigDirectory", "DataDirectory"):
        config["Teachfile"][key] = mapped[config["Teachfile"][key]]
    # The native plugin where the image builds it, then the image's plugin directory (what
    # the configuration enables); here, the venv's build and Debian's plugins.
    assert config["Plugins"] == ["/opt/teachfile/lib/teachfile-restcall.so",
                                 "/usr/share/orthanc/plugins"]
    config["Plugins"] = [*node_mod.plugin_paths(), str(PG_PLUGIN)]
    # The compose network's "postgres" is this test's cluster; its password is the secret.
    assert config["PostgreSQL"]["Host"] == "postgres"
    config["PostgreSQL"].update(Host=pg.host, Port=pg.port, Database=pg.database,
                                Username=pg.user)
    # Published on loopback by compose; a native process has no such mapping: no remote access.
    config["RemoteAccessAllowed"] = False
    for key in ("DicomPort", "HttpPort", "DicomAet", "Name"):
        config.pop(key)
    return config


def test_docker_configuration_runs_natively_over_postgresql(
        node_factory: Callable[..., Node], fresh_index: tuple[Postgres, Path],
        tmp_path: Path) -> None:
    """What the live Docker test checks, without Docker: the mounted configuration, with the
    secrets merged as the entry point merges them, runs the plugin over PostgreSQL and stores
    de-identified JPEG 2000."""
    pg, storage = fresh_index
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    admin = secrets.token_urlsafe(12)
    key = secrets.token_hex(32)
    (secrets_dir / "admin").write_text(admin + "\n")
    (secrets_dir / "pg").write_text(pg.password + "\n")
    (secrets_dir / "key").write_text(key + "\n")
    config = _docker_config_on_this_machine(pg, storage, secrets_dir)
    assert config["RegisteredUsers"] == {"admin": admin}
    assert config["PostgreSQL"]["Password"] == pg.password

    node = node_factory(aet="TEACHFILE", extra_config=config, password=admin,
                        env={"TEACHFILE_KEY_FILE": str(secrets_dir / "key")})
    status = node.status()
    assert status["profile"]["name"] == config["Teachfile"]["Profile"]
    assert status["key_fingerprint"] == fingerprint(bytes.fromhex(key))
    # Bookworm's path resolves to libOrthancPostgreSQLIndex.so.4.0; orthanc-postgresql 5.0's
    # is the plain .so.
    assert re.search(r"/libOrthancPostgreSQLIndex\.so(\.[0-9.]+)?$",
                     node.get("/system").json()["DatabaseBackendPlugin"])

    originals = _study()[:4]
    assert send_pynetdicom(node, originals, calling_aet="MODALITY") == [0] * 4
    stored = _stored(node)
    assert len(stored) == 4
    for ds in stored:
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientID) != PATIENT_ID
        assert str(ds.file_meta.TransferSyntaxUID) in J2K
    # The DICOM files are in the storage directory the volume would hold.
    assert len([p for p in storage.rglob("*") if p.is_file()
                and not p.name.startswith("teachfile-")]) == 4


def test_a_case_record_is_shared_by_replicas_and_survives_a_resend_to_the_other(
        node_factory: Callable[..., Node], fresh_index: tuple[Postgres, Path]) -> None:
    """Label a 1-instance study on node A, re-send its source to node B: Orthanc deletes the
    study (its last instance is replaced) and re-creates it; both replicas still serve the
    record and the stored instance carries the case title."""
    pg, storage = fresh_index
    key = secrets.token_hex(32)
    cluster = _start_pair(node_factory, pg, storage, key, key)
    source = _study()[:1]
    source[0].StudyDescription = "CT THORAX"
    assert send_pynetdicom(cluster.a, source, calling_aet="MODALITYA") == [0]
    (study,) = cluster.a.get("/studies").json()
    record = {"title": "Pulmonary embolism, saddle", "keywords": ["PE", "CTPA"],
              "diagnosis": "Saddle pulmonary embolus", "notes": "RV strain."}
    r = cluster.a.put(f"/teachfile/cases/{study}", json=record)
    assert r.status_code == 200, r.text
    uid = r.json()["study_instance_uid"]

    assert send_pynetdicom(cluster.b, source, calling_aet="MODALITYB") == [0]
    for n in (cluster.a, cluster.b):
        assert n.get("/studies").json() == [study]
        for ref in (study, uid):
            case = n.get(f"/teachfile/cases/{ref}").json()
            assert {k: case[k] for k in record} == record, (n.name, case)
            assert case["labelled"] and case["instances"] == 1
        (stored,) = _stored(n)
        assert stored.StudyDescription == record["title"]
    # A change on B is what A serves next.
    assert cluster.b.put(f"/teachfile/cases/{uid}", json={"keywords": ["PE"]}).status_code == 200
    assert cluster.a.get(f"/teachfile/cases/{study}").json()["keywords"] == ["PE"]
    found = cluster.a.get("/teachfile/search", params={"q": "rv strain", "timeout": 2}).json()
    assert [x["local_study"] for x in found["results"]] == [study]
