"""The Docker deployment, checked without a Docker engine (runs everywhere).

What a live ``docker compose up`` would find out late is checked here early: the compose file
parses, every image is pinned, every file it mounts or the Dockerfile copies exists, the secrets
it names are the ones ``docker/init-secrets.sh`` creates, the configuration it mounts is valid for
the plugin and agrees with what ``teachfile roster render`` generates for a server, and the
helper scripts the image runs (secrets -> configuration, healthcheck) work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from harness import Node
from teachfile.node.keys import load_or_create_key
from teachfile.node.service import Settings
from teachfile.roster.model import load_roster
from teachfile.roster.render import render, server_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
CONFIG = REPO / "orthanc-config" / "docker" / "orthanc.json"
EXAMPLE_ROSTER = REPO / "orthanc-config" / "roster.example.yaml"
ORTHANC_SERVICES = ("orthanc", "orthanc-2")
CONFIG_TARGET = "/etc/orthanc/orthanc.json"
SECRETS_DIR = "${TEACHFILE_SECRETS_DIR:-./docker/secrets}"

#: Where the Docker configuration differs from the generator's server on purpose, and why.
INTENDED_DIFFERENCES = {
    "RegisteredUsers": "the admin password comes from a Docker secret, not from a file",
    "DicomModalities": "a department declares its own modalities; a workshop lists participants",
    "DicomAlwaysAllowStore": "department modalities send without being declared: the plugin "
                             "de-identifies whatever arrives; a workshop server only trusts "
                             "its participants",
    "PostgreSQL": "the department setup keeps its index in PostgreSQL",
}
INTENDED_TEACHFILE_DIFFERENCES = {"Roles": "workshop users and their roles"}


# --------------------------------------------------------------------------- helpers


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _copies() -> dict[str, str]:
    """Container path -> repository path, from the Dockerfile's COPY instructions."""
    mapping: dict[str, str] = {}
    for word, args in _dockerfile_instructions():
        if word != "COPY":
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        *sources, dest = parts
        for src in sources:
            target = (str(PurePosixPath(dest) / PurePosixPath(src).name)
                      if dest.endswith("/") else dest)
            mapping[target] = src
    return mapping


def _repo_path_for(container_path: str) -> Path | None:
    """The file of this checkout that ends up at ``container_path`` in the image."""
    for target, src in sorted(_copies().items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return REPO / src / os.path.relpath(container_path, target) \
                if container_path != target else REPO / src
    return None


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    if "@sha256:" in image:
        return True
    return bool(name) and "/" not in tag and tag not in ("", "latest") and "$" not in image


def _host_port(mapping: str) -> str:
    """The host side of ``[ip:]host:container``, with ``${VAR:-default}`` resolved to its
    default (what an unconfigured ``docker compose up`` publishes)."""
    resolved = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", mapping)
    return resolved.rsplit(":", 2)[-2]


def _config() -> dict[str, Any]:
    return json.loads(CONFIG.read_text())


def _example_server_config() -> dict[str, Any]:
    roster = load_roster(EXAMPLE_ROSTER, {})
    return server_config(roster)


def _run_init_secrets(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "docker" / "init-secrets.sh")],
                          env={**os.environ, "TEACHFILE_SECRETS_DIR": str(directory)},
                          capture_output=True, text=True, timeout=60, check=True)


def _secrets_to_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TEACHFILE_", "ORTHANC_JSON"))}
    return subprocess.run([sys.executable, str(REPO / "docker" / "secrets_to_config.py")],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- compose.yaml


def test_compose_parses_with_the_expected_services() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"orthanc", "orthanc-2", "postgres"}
    assert "profiles" not in services["orthanc"]
    assert "profiles" not in services["postgres"]
    assert services["orthanc-2"]["profiles"] == ["scale"]
    for name in ORTHANC_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "Dockerfile"
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["healthcheck"]["test"][:2] == ["CMD", "python3"]
    assert set(compose["volumes"]) == {"orthanc-storage", "postgres-data"}


def test_every_image_tag_is_pinned() -> None:
    images = [svc["image"] for svc in _compose()["services"].values() if "image" in svc]
    bases = [args.split()[0] for word, args in _dockerfile_instructions() if word == "FROM"]
    assert bases and all(b.startswith("orthancteam/orthanc:") for b in bases)
    for image in images + bases:
        assert _pinned(image), f"{image} is not pinned to a tag or digest"


def test_replicas_share_index_storage_key_and_configuration() -> None:
    services = _compose()["services"]
    one, two = services["orthanc"], services["orthanc-2"]
    for key in ("image", "environment", "secrets", "volumes", "build", "depends_on"):
        assert one[key] == two[key], key
    assert one["environment"]["TEACHFILE_KEY_FILE"] == "/run/secrets/teachfile_key"
    assert "orthanc-storage:/var/lib/orthanc" in one["volumes"]
    published = [_host_port(p) for s in (one, two) for p in s["ports"]]
    assert len(published) == len(set(published)), "replicas publish the same host port"
    assert sorted(p.rsplit(":", 1)[1] for p in one["ports"]) == ["4242", "8042"]
    # HTTP (and the admin login) is published on loopback only.
    assert all(p.startswith("127.0.0.1:") for s in (one, two) for p in s["ports"]
               if p.endswith(":8042"))


def test_every_mounted_and_copied_file_exists() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).is_file(), f"{name} mounts missing {source}"
    for target, src in _copies().items():
        assert (REPO / src).exists(), f"COPY {src} {target}: missing in the checkout"
    # What the image runs is what it copies.
    entry = [json.loads(a) for w, a in _dockerfile_instructions() if w == "ENTRYPOINT"]
    assert entry and _repo_path_for(entry[0][0]) == REPO / "docker" / "entrypoint.sh"
    for svc in ORTHANC_SERVICES:
        script = compose["services"][svc]["healthcheck"]["test"][2]
        assert _repo_path_for(script) == REPO / "docker" / "healthcheck.py"
    assert _repo_path_for(_config()["PythonScript"]) == REPO / "plugin" / "teachfile_entry.py"
    cmd = [json.loads(a) for w, a in _dockerfile_instructions() if w == "CMD"]
    assert cmd == [["/tmp/orthanc.json"]], "ENTRYPOINT resets the base image's CMD"


def test_secrets_are_the_ones_init_secrets_creates(tmp_path: Path) -> None:
    declared = _compose()["secrets"]
    for spec in declared.values():
        # The directory init-secrets.sh writes to, overridable the same way.
        assert spec["file"].startswith(SECRETS_DIR + "/")
    ignore = (REPO / "docker" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore, "secrets must never be committed"

    directory = tmp_path / "secrets"
    first = _run_init_secrets(directory)
    created = {p.name for p in directory.iterdir()}
    assert created == {Path(spec["file"]).name for spec in declared.values()}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "teachfile_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "teachfile_admin_password").stat().st_mode) == 0o600
    # The key is one the plugin accepts, read the way the container reads it.
    key = load_or_create_key(tmp_path / "unused", {"TEACHFILE_KEY_FILE":
                                                   str(directory / "teachfile_key")})
    assert len(key) == 32
    for name in ("teachfile_admin_password", "postgres_password"):
        assert len((directory / name).read_text().strip()) >= 20
    # Secret values are never printed; running again changes nothing.
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    for value in before.values():
        assert value.decode().strip() not in first.stdout
    _run_init_secrets(directory)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


# --------------------------------------------------------------------------- orthanc.json


def test_mounted_config_is_valid_for_the_plugin() -> None:
    config = _config()
    compose = _compose()
    for svc in ORTHANC_SERVICES:
        assert (f"./{CONFIG.relative_to(REPO)}:{CONFIG_TARGET}:ro"
                in compose["services"][svc]["volumes"])
    settings = Settings.from_orthanc_config(config)
    config_dir = _repo_path_for(str(settings.config_dir))
    assert config_dir == REPO / "orthanc-config"
    assert (config_dir / "profiles" / f"{settings.profile}.yaml").is_file()
    assert str(settings.data_dir).startswith("/var/lib/orthanc/")  # on the storage volume
    # Nothing secret in a committed file; the secrets fragment supplies them.
    assert config["RegisteredUsers"] == {}
    assert "Password" not in config["PostgreSQL"]
    pg_env = compose["services"]["postgres"]["environment"]
    pg = config["PostgreSQL"]
    assert pg["Host"] == "postgres" and pg["Port"] == 5432
    assert (pg["Database"], pg["Username"]) == (pg_env["POSTGRES_DB"], pg_env["POSTGRES_USER"])
    assert pg["EnableIndex"] is True and pg["EnableStorage"] is False
    assert pg["Lock"] is False, "several Orthancs share the index only without the lock"
    assert config["SaveJobs"] is False
    assert config["StorageDirectory"].startswith("/var/lib/orthanc/")
    assert config["AuthenticationEnabled"] is True


def test_mounted_config_matches_what_the_generator_renders() -> None:
    docker, generated = _config(), _example_server_config()
    only_docker = set(docker) - set(generated) - set(INTENDED_DIFFERENCES)
    only_generated = set(generated) - set(docker) - set(INTENDED_DIFFERENCES)
    assert not only_docker and not only_generated, (only_docker, only_generated)
    for key in sorted(set(docker) & set(generated) - set(INTENDED_DIFFERENCES) - {"Teachfile"}):
        assert docker[key] == generated[key], f"{key}: {docker[key]!r} != {generated[key]!r}"
    mine = {k: v for k, v in docker["Teachfile"].items()
            if k not in INTENDED_TEACHFILE_DIFFERENCES}
    theirs = {k: v for k, v in generated["Teachfile"].items()
              if k not in INTENDED_TEACHFILE_DIFFERENCES}
    assert mine == theirs
    # The workshop compose file the generator writes mounts the configuration and the data
    # where this one does.
    roster = load_roster(EXAMPLE_ROSTER, {})
    assert roster.docker_config_path == CONFIG_TARGET
    workshop = yaml.safe_load(render(roster)["compose.yaml"])
    server = workshop["services"][roster.server.name]
    assert any(v.endswith(f":{CONFIG_TARGET}:ro") for v in server["volumes"])
    assert any(v.endswith(":/var/lib/orthanc") for v in server["volumes"])


# --------------------------------------------------------------------------- helper scripts


def test_secrets_become_the_configuration_fragment(tmp_path: Path) -> None:
    (tmp_path / "admin").write_text("s3cret-admin\n")
    (tmp_path / "pg").write_text("s3cret-pg\n")
    (tmp_path / "key").write_text("ab" * 32 + "\n")
    env = {"TEACHFILE_ADMIN_PASSWORD_FILE": str(tmp_path / "admin"),
           "TEACHFILE_POSTGRES_PASSWORD_FILE": str(tmp_path / "pg"),
           "TEACHFILE_KEY_FILE": str(tmp_path / "key"),
           "ORTHANC_JSON": json.dumps({"RegisteredUsers": {"viewer": "v"}, "DicomAet": "X"})}
    proc = _secrets_to_config(env)
    assert proc.returncode == 0, proc.stderr
    fragment = json.loads(proc.stdout)
    assert fragment == {"RegisteredUsers": {"viewer": "v", "admin": "s3cret-admin"},
                        "DicomAet": "X", "PostgreSQL": {"Password": "s3cret-pg"}}
    # Merged over the mounted file the way the image merges ORTHANC_JSON: complete and usable.
    sys.path.insert(0, str(REPO / "docker"))
    try:
        import secrets_to_config
    finally:
        sys.path.remove(str(REPO / "docker"))
    final = secrets_to_config.merge(_config(), fragment)
    assert final["RegisteredUsers"]["admin"] == "s3cret-admin"
    assert final["PostgreSQL"]["Password"] == "s3cret-pg"
    assert final["PostgreSQL"]["Host"] == "postgres"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "admin password"),
        ({"admin": ""}, "is empty"),
        ({"admin": "pw", "key": "not-hex"}, "not hexadecimal"),
        ({"admin": "pw", "key": "abcd"}, "shorter than 128 bits"),
        ({"admin": "pw", "key": "ab" * 32, "orthanc_json": "{oops"}, "ORTHANC_JSON"),
    ],
)
def test_unusable_secrets_stop_the_container_clearly(tmp_path: Path, files: dict[str, str],
                                                     expected: str) -> None:
    env = {"TEACHFILE_ADMIN_PASSWORD_FILE": str(tmp_path / "admin")}
    for name in ("admin", "key"):
        if name in files:
            (tmp_path / name).write_text(files[name])
    if "key" in files:
        env["TEACHFILE_KEY_FILE"] = str(tmp_path / "key")
    if "orthanc_json" in files:
        env["ORTHANC_JSON"] = files["orthanc_json"]
    proc = _secrets_to_config(env)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert proc.stdout == ""
    if files.get("admin"):
        assert files["admin"] not in proc.stderr


def test_shell_scripts_parse() -> None:
    for script in ("entrypoint.sh", "init-secrets.sh"):
        subprocess.run(["bash", "-n", str(REPO / "docker" / script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", *map(str, (REPO / "docker").glob("*.sh"))], check=True)


def test_the_cli_wrapper_runs_the_package_cli(tmp_path: Path) -> None:
    proc = subprocess.run(["sh", str(REPO / "docker" / "teachfile"), "--help"],
                          env={**os.environ, "PYTHONPATH": str(REPO / "plugin"),
                               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "roster" in proc.stdout


def test_healthcheck_against_a_real_node(node: Node, tmp_path: Path) -> None:
    """The container's healthcheck, pointed at a native node's configuration."""
    script = REPO / "docker" / "healthcheck.py"
    config = tmp_path / "orthanc.json"

    def run(cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        config.write_text(json.dumps(cfg))
        return subprocess.run([sys.executable, str(script), "--config", str(config)],
                              capture_output=True, text=True, timeout=60)

    good = run({"HttpPort": node.http_port, "RegisteredUsers": {"admin": node.password}})
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = run({"HttpPort": node.http_port, "RegisteredUsers": {"admin": "wrong"}})
    assert wrong.returncode == 1 and "401" in wrong.stdout
    assert "wrong" not in wrong.stdout
    node.stop()
    gone = run({"HttpPort": node.http_port, "RegisteredUsers": {"admin": node.password}})
    assert gone.returncode == 1 and "did not answer" in gone.stdout
    assert node.password not in gone.stdout


def test_docker_compose_config_validates_when_the_plugin_is_installed(tmp_path: Path) -> None:
    """``docker compose config`` needs no engine, only the Compose plugin."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=60).returncode != 0:
        pytest.skip("the Docker Compose plugin is not installed (`docker compose version` "
                    "fails); compose.yaml was checked with PyYAML above")
    proc = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--profile", "scale",
                           "config", "--services"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {"orthanc", "orthanc-2", "postgres"}


def test_docs_describe_the_docker_path() -> None:
    text = (REPO / "README.md").read_text()
    for needle in ("docker/init-secrets.sh", "docker compose up", "--profile scale",
                   "teachfile_admin_password", "orthanc-storage", "postgres-data",
                   "could not be run here"):
        assert needle in text, needle
    assert re.search(r"orthancteam/orthanc:\d+\.\d+\.\d+", text)


def test_the_image_builds_the_native_plugin_its_configurations_list_first() -> None:
    """The native /instances (Explorer's refusals as 400/422, 413 before a large body) exists
    in the image only if the Dockerfile builds it where orthanc.json and rendered rosters
    list it, first (Orthanc loads a Plugins list in order)."""
    from teachfile.roster.model import Plugin

    path = Plugin().native_plugin
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"cc [^&]*-o " + re.escape(path) + r" \\\s*/opt/teachfile/native/restcall\.c",
                     dockerfile), "the Dockerfile does not build native/restcall.c"
    assert "orthanc-dev" in dockerfile
    config = json.loads((REPO / "orthanc-config" / "docker" / "orthanc.json").read_text())
    assert config["Plugins"][0] == path
