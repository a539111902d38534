"""Reading YAML with its line and column marks, collecting problems instead of raising.

The roster is validated on PyYAML's node tree (``yaml.compose``), which keeps the position of
every key and value, so each message can say ``roster.yaml:LINE:COL`` and a run reports every
problem at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError

PERMISSIONS: tuple[str, ...] = ("echo", "find", "move", "get", "store")
ROLES: tuple[str, ...] = ("admin", "contributor", "viewer")


@dataclass(frozen=True)
class Diagnostic:
    """One problem, at a 1-based line and column of the roster file."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class RosterError(ConfigError):
    """The roster is invalid; ``diagnostics`` holds every problem found, in file order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.line, d.col, d.message))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class Reader:
    """Turns YAML nodes into Python values, recording a diagnostic instead of raising."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, at: Node | tuple[int, int], message: str) -> None:
        line, col = at if isinstance(at, tuple) else where(at)
        self.diagnostics.append(Diagnostic(self.path, line, col, message))

    def mapping(self, node: Node, keys: tuple[str, ...], what: str) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.error(key_node, f"{what}: keys must be plain strings")
            elif key in out:
                self.error(key_node, f"{what}: duplicate key {key!r}")
            elif key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(key_node, f"unknown key {key!r} in {what}{hint}"
                           f" (known: {', '.join(keys)})")
            else:
                out[key] = value_node
        return out

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def string(self, node: Node, what: str) -> str | None:
        # The raw scalar text: "aet: 0042" stays "0042", "name: yes" stays "yes".
        if not isinstance(node, ScalarNode) or self.is_null(node) or node.value == "":
            self.error(node, f"{what} must be a non-empty string")
            return None
        return str(node.value)

    def integer(self, node: Node, what: str, low: int, high: int) -> int | None:
        value = self._constructor.construct_object(node, deep=True)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"{what} must be an integer")
            return None
        if not low <= value <= high:
            self.error(node, f"{what} must be between {low} and {high} (got {value})")
            return None
        return value

    def boolean(self, node: Node, what: str) -> bool | None:
        value = self._constructor.construct_object(node, deep=True)
        if not isinstance(value, bool):
            self.error(node, f"{what} must be true or false")
            return None
        return value

    def port(self, node: Node, what: str) -> int | None:
        return self.integer(node, what, 1, 65535)

    def permissions(self, node: Node, what: str) -> tuple[str, ...] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list drawn from {', '.join(PERMISSIONS)}")
            return None
        found: set[str] = set()
        ok = True
        for item in node.value:
            value = item.value if isinstance(item, ScalarNode) else None
            if value not in PERMISSIONS:
                close = difflib.get_close_matches(str(value), PERMISSIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(item, f"unknown permission {value!r}{hint}"
                           f" (known: {', '.join(PERMISSIONS)})")
                ok = False
            else:
                found.add(value)
        return tuple(p for p in PERMISSIONS if p in found) if ok else None

    def role(self, node: Node, what: str) -> str | None:
        if self.is_null(node):
            return None
        value = self.string(node, what)
        if value is not None and value not in ROLES:
            self.error(node, f"{what} {value!r} is not one of {', '.join(ROLES)}")
            return None
        return value

    def checked(self, node: Node, value: str | None, problem: str | None) -> str | None:
        if value is not None and problem:
            self.error(node, problem)
            return None
        return value


def where(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


