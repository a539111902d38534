"""``teachfile export``, ``backup`` and ``restore``: cases off a node and back, over REST.

Files are named by Orthanc instance id (a hash, no PHI), never by patient or study names. A
backup is a directory: ``instances/<id>.dcm`` and ``manifest.json`` with the SHA-256 of every
file and each study's case record; ``backup`` adds only what the manifest lacks, ``restore``
verifies every checksum before it uploads anything. Restoring into a node with the same
pseudonym key reproduces the same UIDs: the node recognises its own sealed instances.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import requests

from ..errors import TeachfileError
from ..neterrors import explain

USER_ENV = "TEACHFILE_USER"
PASSWORD_ENV = "TEACHFILE_PASSWORD"
MANIFEST = "manifest.json"
FORMAT = "teachfile-backup"
FORMAT_VERSION = 1
#: Orthanc metadata index of a case record (see :mod:`teachfile.api.cases`).
CASE_METADATA = "4601"
_CHUNK = 1 << 16
_SAVE_EVERY = 50


class RemoteError(TeachfileError):
    """The node answered with an error or could not be reached."""


# -- progress -------------------------------------------------------------------------------------


class Progress:
    """A one-line text progress bar on stderr; on a non-terminal only the final line, so logs
    and captured output stay readable."""

    def __init__(self, label: str, total: int | None, unit: str = "",
                 stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.total, self.unit, self.width = label, total, unit, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""

    def line(self) -> str:
        count = (_human(self.done) if self.unit == "B" else str(self.done))
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width)
            total = _human(self.total) if self.unit == "B" else str(self.total)
            return (f"{self.label} [{bar:<{self.width}}] {count}/{total}"
                    f"{' ' + self.unit if self.unit and self.unit != 'B' else ''} "
                    f"{frac * 100:3.0f}%")
        return f"{self.label} {count}{' ' + self.unit if self.unit and self.unit != 'B' else ''}"

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._live:
            text = self.line()
            if text != self._last:
                self.stream.write("\r" + text)
                self.stream.flush()
                self._last = text

    def close(self) -> None:
        self.stream.write(("\r" if self._live else "") + self.line() + "\n")
        self.stream.flush()


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


# -- the node ------------------------------------------------------------------------------------


class Node:
    """The REST calls the commands need; every error becomes a :class:`RemoteError`."""

    def __init__(self, url: str, user: str | None, password: str | None,
                 timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if user:
            self.session.auth = (user, password or "")
        self.timeout = timeout

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,),
             **kw: Any) -> requests.Response:
        try:
            r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise RemoteError(explain(exc, self.url, self.timeout)) from None
        if r.status_code in (401, 403):
            raise RemoteError(f"{method} {path}: HTTP {r.status_code} (check --user and "
                              f"--password or ${USER_ENV}/${PASSWORD_ENV})")
        if r.status_code not in ok:
            raise RemoteError(f"{method} {path}: HTTP {r.status_code}")
        return r

    def json(self, path: str) -> Any:
        return self.call("GET", path).json()

    def content(self, path: str) -> bytes:
        return self.call("GET", path).content

    def study_id(self, study: str) -> str:
        """An Orthanc study id from an id or a Study Instance UID."""
        if self.call("GET", f"/studies/{study}", ok=(200, 404)).status_code == 200:
            return study
        found = self.call("POST", "/tools/lookup", data=study).json()
        ids = [f["ID"] for f in found if f.get("Type") == "Study"]
        if not ids:
            raise RemoteError("no such study on the node")
        return str(ids[0])

    def download(self, path: str, target: Path, label: str) -> int:
        """Stream ``path`` into ``target`` (atomically); the number of bytes."""
        r = self.call("GET", path, stream=True)
        total = int(r.headers.get("Content-Length") or 0) or None
        bar = Progress(label, total, "B")
        tmp = target.with_name(target.name + ".part")
        with open(tmp, "wb") as f:
            for chunk in r.iter_content(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        bar.close()
        os.replace(tmp, target)
        return bar.done

    def case_record(self, study: str) -> dict[str, Any] | None:
        """A study's case record, from the case API (or, on a node from before the case
        store, from Orthanc metadata); None when the study is no case."""
        r = self.call("GET", f"/teachfile/cases/{study}", ok=(200, 404))
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith(
                "application/json"):
            case = r.json()
            if not case.get("labelled"):
                return None
            return {k: case.get(k) for k in ("title", "keywords", "diagnosis", "notes",
                                              "updated")}
        legacy = self.call("GET", f"/studies/{study}/metadata/{CASE_METADATA}", ok=(200, 404))
        return json.loads(legacy.content) if legacy.status_code == 200 else None

    def key_fingerprint(self) -> str | None:
        r = self.call("GET", "/teachfile/status", ok=(200, 404))
        return r.json().get("key_fingerprint") if r.status_code == 200 else None


def _node(args: argparse.Namespace) -> Node:
    user = args.user or os.environ.get(USER_ENV) or "admin"
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    return Node(args.url, user, password)


# -- export ---------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    node = _node(args)
    study = node.study_id(args.study)
    if args.format == "nifti":
        return _export_nifti(node, study, args.output)
    kind = "media" if args.dicomdir or args.format == "dicomdir" else "archive"
    out: Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    size = node.download(f"/studies/{study}/{kind}", out, f"export {out.name}")
    with zipfile.ZipFile(out) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
    count = sum(1 for n in names if n.rsplit("/", 1)[-1] != "DICOMDIR")
    print(f"{out}: {count} instances{' + DICOMDIR' if args.dicomdir else ''}, "
          f"{_human(size)}, in the stored transfer syntax")
    return 0


def _export_nifti(node: Node, study: str, out: Path) -> int:
    from ..api.nifti import export_nifti

    results = export_nifti(node, study, out)
    for r in results:
        names = ", ".join(p.name for p in r.files)
        extra = (f" (sidecar fields removed: {', '.join(r.removed_fields)})"
                 if r.removed_fields else "")
        print(f"{out}: {names}{extra}")
    if not results:
        print(f"{out}: the study has no image series to convert")
    return 0


# -- backup ---------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What a backup directory holds: files (relative path -> checksum, size, study) and the
    case records by study."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except ValueError:
            raise TeachfileError(f"{path} is not JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TeachfileError(f"{path} is not a teachfile backup manifest")
        if data.get("version") != FORMAT_VERSION:
            raise TeachfileError(f"{path}: unsupported manifest version {data.get('version')}")
        return cls(dict(data.get("files", {})), dict(data.get("cases", {})),
                   dict(data.get("source", {})), list(data.get("runs", [])))

    def save(self, directory: Path) -> None:
        data = {"format": FORMAT, "version": FORMAT_VERSION, "source": self.source,
                "runs": self.runs, "cases": dict(sorted(self.cases.items())),
                "files": dict(sorted(self.files.items()))}
        tmp = directory / (MANIFEST + ".part")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, directory / MANIFEST)

    def instance_ids(self) -> set[str]:
        return {str(v.get("instance")) for v in self.files.values()}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(directory: Path, manifest: Manifest,
           progress: Progress | None = None) -> list[str]:
    """Every file the manifest lists, checked; the problems (file names only, no PHI)."""
    problems = []
    for rel, entry in sorted(manifest.files.items()):
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{rel}: size differs from the manifest")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel}: SHA-256 differs from the manifest")
        if progress:
            progress.update()
    return problems


def _studies(node: Node) -> Iterator[tuple[str, list[str]]]:
    for study in node.json("/studies"):
        yield study, [i["ID"] for i in node.json(f"/studies/{study}/instances")]


def cmd_backup(args: argparse.Namespace) -> int:
    node = _node(args)
    out: Path = args.output
    (out / "instances").mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(out)
    fingerprint = node.key_fingerprint()
    if manifest.source.get("key_fingerprint") not in (None, fingerprint):
        print("teachfile: warning: this backup was made from a node with another key",
              file=sys.stderr)
    manifest.source = {"aet": node.json("/system").get("DicomAet"),
                       "key_fingerprint": fingerprint}
    have = manifest.instance_ids()
    todo: list[tuple[str, str]] = []
    for study, instances in _studies(node):
        record = node.case_record(study)
        if record is not None:
            manifest.cases[study] = record
        todo.extend((study, i) for i in instances if i not in have)
    bar = Progress("backup", len(todo), "instances")
    for n, (study, iid) in enumerate(todo, 1):
        rel = f"instances/{iid}.dcm"
        data = node.call("GET", f"/instances/{iid}/file").content
        tmp = out / (rel + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, out / rel)
        manifest.files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                               "instance": iid, "study": study}
        bar.update()
        if n % _SAVE_EVERY == 0:  # an interrupted backup resumes from here
            manifest.save(out)
    bar.close()
    manifest.runs.append({"time": datetime.now(UTC).isoformat(timespec="seconds"),
                          "added": len(todo)})
    manifest.save(out)
    print(f"{out}: {len(todo)} new, {len(have)} already backed up, "
          f"{len(manifest.files)} files, {len(manifest.cases)} case records")
    return 0


# -- restore --------------------------------------------------------------------------------------


def _refusal(r: requests.Response) -> str:
    try:
        reasons = [x.get("reason", "?") for x in r.json().get("Refusals", [])]
    except (ValueError, AttributeError):
        reasons = []
    return f"HTTP {r.status_code}" + (f" ({', '.join(reasons)})" if reasons else "")


def cmd_restore(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not (directory / MANIFEST).exists():
        raise TeachfileError(f"{directory} holds no {MANIFEST}")
    manifest = Manifest.load(directory)
    bar = Progress("verify", len(manifest.files), "files")
    problems = verify(directory, manifest, bar)
    bar.close()
    if problems:
        for p in problems:
            print(f"teachfile: {p}", file=sys.stderr)
        print(f"teachfile: {len(problems)} file(s) do not match the manifest; nothing was "
              "restored", file=sys.stderr)
        return 1
    node = _node(args)
    fingerprint = node.key_fingerprint()
    if fingerprint != manifest.source.get("key_fingerprint"):
        print("teachfile: warning: the target node's pseudonym key differs from the backed-up "
              "node's: it will de-identify the instances again and give them new UIDs",
              file=sys.stderr)
    failed: list[str] = []
    new_study: dict[str, str] = {}
    bar = Progress("restore", len(manifest.files), "instances")
    for rel, entry in sorted(manifest.files.items()):
        r = node.call("POST", "/instances", ok=(200, 400, 409, 422, 500),
                      data=(directory / rel).read_bytes(),
                      headers={"Content-Type": "application/dicom"})
        if r.status_code == 200:
            new_study[str(entry.get("study"))] = str(r.json().get("ParentStudy"))
        else:
            failed.append(f"{rel}: {_refusal(r)}")
        bar.update()
    bar.close()
    labelled = 0
    for old, record in sorted(manifest.cases.items()):
        if old not in new_study:
            continue
        body = {k: record[k] for k in ("title", "keywords", "diagnosis", "notes")
                if k in record and (k != "title" or record[k])}
        r = node.call("PUT", f"/teachfile/cases/{new_study[old]}", ok=(200, 404), json=body)
        if r.status_code == 404:
            failed.append(f"case record of study {new_study[old]}: the node has no case API")
            continue
        labelled += 1
    for f in failed:
        print(f"teachfile: not restored: {f}", file=sys.stderr)
    print(f"restored {len(manifest.files) - len(failed)} of {len(manifest.files)} instances "
          f"and {labelled} case records into {node.url}")
    return 1 if failed else 0


# -- registration ---------------------------------------------------------------------------------


def _auth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the node's REST API, e.g. http://127.0.0.1:8042")
    p.add_argument("--user", help=f"user name (default: ${USER_ENV}, else admin)")
    p.add_argument("--password", help=f"password (default: ${PASSWORD_ENV})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="download one case: a ZIP in its stored syntax, DICOMDIR "
                       "media, or NIfTI (.nii.gz + BIDS sidecar per series)")
    _auth(p)
    p.add_argument("--study", required=True, help="Orthanc study id or Study Instance UID")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="ZIP|DIR",
                   help="the ZIP file to write (zip, dicomdir) or the directory (nifti)")
    p.add_argument("--format", choices=("zip", "dicomdir", "nifti"), default="zip",
                   help="zip (default), dicomdir (media archive), nifti (dcm2niix, one file per "
                        "series, sidecars checked for the case's identifying values)")
    p.add_argument("--dicomdir", action="store_true", help="the same as --format dicomdir")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("backup", help="copy every instance not yet backed up into DIR")
    _auth(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="the backup directory (created, or added to if it holds a backup)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="verify a backup's checksums and upload it to a node")
    p.add_argument("directory", type=Path, metavar="DIR",
                   help="a directory written by teachfile backup")
    _auth(p)
    p.set_defaults(func=cmd_restore)

