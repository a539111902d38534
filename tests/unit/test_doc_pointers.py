"""Every pointer to a file of this repository, and to a README section, leads somewhere.

The example roster sent readers to ``docs/roster.md``, which never existed, and the package's
move into rooms left README pointers to modules that had moved."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Written by docker/init-secrets.sh on the user's machine, never committed.
GENERATED = ("docker/secrets/",)
_PATH = re.compile(
    r"(?<![\w/.-])((?:docs|plugin|orthanc-config|scripts|tests|docker)/[\w./-]*\w)")
_SECTION = re.compile(r'README(?:\.md)?, "([^"\n]+)"')


def _texts() -> list[tuple[Path, str]]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "compose.yaml", ROOT / "Dockerfile",
             *ROOT.glob("orthanc-config/**/*"), *ROOT.glob("docs/**/*"),
             *ROOT.glob("plugin/**/*.py"), *ROOT.glob("scripts/*")]
    out = []
    for f in files:
        if f.is_file() and f.suffix not in (".so", ".pyc"):
            try:
                out.append((f, f.read_text()))
            except UnicodeDecodeError:
                continue
    return out


def test_every_repository_path_named_in_docs_and_comments_exists() -> None:
    missing = sorted({f"{f.relative_to(ROOT)}: {p}" for f, text in _texts()
                      for p in _PATH.findall(text)
                      if not p.startswith(GENERATED) and not (ROOT / p).exists()})
    assert missing == []


def test_every_readme_section_named_elsewhere_exists() -> None:
    headings = [line.lstrip("#").strip() for line in
                (ROOT / "README.md").read_text().splitlines() if line.startswith("#")]
    # A name may wrap onto the next comment line ("# lanes").
    named = {(f.relative_to(ROOT), s) for f, text in _texts()
             for s in _SECTION.findall(re.sub(r"\n\s*(#+|//|\*)\s*", " ", text))}
    assert named  # the example roster and the pixel rules point there
    missing = sorted(f"{f}: {s}" for f, s in named
                     if not any(h.startswith(s) for h in headings))
    assert missing == []
