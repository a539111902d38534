"""Role decisions as data: the table is the specification."""

from __future__ import annotations

import base64

import pytest

from teachfile.errors import ConfigError
from teachfile.node.roles import Roles, allowed, basic_user

CASES = [
    # role, method, uri, allowed
    ("viewer", "GET", "/studies/abc/archive", True),
    ("viewer", "GET", "/instances?expand", True),
    ("viewer", "POST", "/tools/find", True),
    ("viewer", "POST", "/teachfile/audit", True),
    ("viewer", "POST", "/studies/abc/archive", True),
    ("viewer", "POST", "/modalities/PACS/query", True),
    ("viewer", "POST", "/instances", False),
    ("viewer", "POST", "/dicom-web/studies", False),
    ("viewer", "DELETE", "/studies/abc", False),
    ("viewer", "POST", "/studies/abc/modify", False),
    ("viewer", "POST", "/studies/abc/anonymize", False),
    ("viewer", "PUT", "/modalities/x", False),
    ("viewer", "POST", "/modalities/x/move", False),
    ("viewer", "POST", "/tools/execute-script", False),
    ("contributor", "POST", "/instances", True),
    ("contributor", "POST", "/dicom-web/studies", True),
    ("contributor", "POST", "/dicom-web/studies/1.2.3", True),
    ("contributor", "PUT", "/teachfile/cases/abc", True),
    ("contributor", "DELETE", "/instances/abc", False),
    ("contributor", "POST", "/studies/abc/modify", False),
    ("contributor", "POST", "/tools/reset", False),
    ("admin", "DELETE", "/studies/abc", True),
    ("admin", "POST", "/tools/reset", True),
]


@pytest.mark.parametrize("role,method,uri,expected", CASES)
def test_role_table(role: str, method: str, uri: str, expected: bool) -> None:
    assert allowed(role, method, uri) is expected


def test_unknown_role_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        Roles.from_config({"bob": "superuser"})


def test_users_without_role_are_viewers_and_admin_is_admin() -> None:
    roles = Roles.from_config({"alice": "contributor"}, {"admin": None, "dave": None})
    assert roles.role_of("dave") == "viewer"
    assert roles.role_of("admin") == "admin"
    assert roles.allows("alice", "POST", "/instances")
    assert not roles.allows(None, "GET", "/studies")


@pytest.mark.parametrize("header,user", [
    ("Basic " + base64.b64encode(b"alice:pw:with:colons").decode(), "alice"),
    ("basic " + base64.b64encode(b"bob:").decode(), "bob"),
    ("Bearer abc", None),
    ("Basic !!!", None),
    ("Basic " + base64.b64encode(b"nocolon").decode(), None),
])
def test_basic_user(header: str, user: str | None) -> None:
    assert basic_user({"authorization": header}) == user
