"""The fenced blocks of the documentation, and the checks of those that are not run."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from kai.config import Settings, check_secret
from tests.agents.processes import REPO_ROOT

# Blocks that a test runs: shell in one bash session per page, Python files written beside it.
RUN = frozenset({"sh", "python"})
# Blocks that are shown, never run; those with a parser are checked by it.
SHOWN = frozenset({"json", "text", "http", "env", "ini", "nginx"})
# `bash` would read as runnable but is not what the runner looks for: one name, `sh`.
TAGS = RUN | SHOWN

OPEN = re.compile(r"^(?P<indent> *)```(?P<tag>\S*)\s*$")
FILE_HEADER = re.compile(r"^# (?P<name>[a-z_][a-z0-9_]*\.py)\n")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository, e.g. "docs/tasks.md"
    line: int  # of the opening fence, from 1
    tag: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def filename(self) -> str | None:
        """The file a ``python`` block is, from its first line ``# name.py``."""
        found = FILE_HEADER.match(self.text)
        return found["name"] if found else None


def pages() -> list[Path]:
    """Every page of the documentation: docs/*.md and the README."""
    return [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]


def relative(path: Path) -> str:
    return path.resolve().relative_to(REPO_ROOT).as_posix()


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a page, in order, their text without the fence's indent."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            line = lines[j]
            body.append(line[indent:] if line.startswith(" " * indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{relative(path)}:{i + 1}: a fence that is never closed")
        found.append(Block(relative(path), i + 1, opening["tag"], "\n".join(body) + "\n"))
        i = j + 1
    return found


# -- blocks that are shown: checked by their parsers -------------------------------------------


def json_values(text: str) -> list[Any]:
    """The JSON values of a block: one value, or several one after the other (JSON lines)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def env_assignments(text: str) -> dict[str, str]:
    """``NAME=value`` lines (shell quoting allowed, ``#`` comments and blank lines skipped)."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = stripped.partition("=")
        if not equals or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise AssertionError(f"line {number} is not NAME=value: {line!r}")
        words = shlex.split(value)
        found[name] = " ".join(words)
    return found


def settings_from(assignments: dict[str, str]) -> Settings:
    """The settings a hub started with these variables would have; every name must be one."""
    known = {f"KAI_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(name for name in assignments if name not in known)
    assert not unknown, f"not settings of kai: {unknown}"
    # Read as `kai serve` reads them: from the environment, with nothing else of kai's in it.
    others = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
    with mock.patch.dict(os.environ, {**others, **assignments}, clear=True):
        settings = Settings()
    if settings.secret_key is not None:
        check_secret(settings.secret_key.get_secret_value())
    return settings


def ini_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@dataclass
class Directive:
    """One nginx directive: its name, arguments and, for a block, the directives inside."""

    name: str
    args: list[str]
    children: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        """Every directive called ``name`` at any depth below this one."""
        found: list[Directive] = []
        for child in self.children or []:
            if child.name == name:
                found.append(child)
            found.extend(child.find(name))
        return found


def nginx_config(text: str) -> Directive:
    """nginx's configuration syntax, parsed: ``name args;`` and ``name args { ... }``."""
    tokens = re.findall(r"""'[^']*'|"[^"]*"|[{};]|[^\s{};'"#]+|#[^\n]*""", text)
    tokens = [t for t in tokens if not t.startswith("#")]
    root = Directive("main", [], [])
    stack = [root]
    words: list[str] = []
    for token in tokens:
        if token in (";", "{"):
            assert words, f"nginx: {token!r} without a directive"
            directive = Directive(words[0], [w.strip("'\"") for w in words[1:]])
            children = stack[-1].children
            assert children is not None
            children.append(directive)
            if token == "{":
                directive.children = []
                stack.append(directive)
            words = []
        elif token == "}":
            assert not words, f"nginx: {' '.join(words)} lacks its ';'"
            assert len(stack) > 1, "nginx: a '}' too many"
            stack.pop()
        else:
            words.append(token)
    assert not words, f"nginx: {' '.join(words)} lacks its ';'"
    assert len(stack) == 1, "nginx: a '{' is never closed"
    return root


def seconds(value: str) -> float:
    """An nginx time (``75s``, ``1h``, ``30``) in seconds."""
    found = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert found, f"not an nginx time: {value!r}"
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[found[2] or "s"]
    return int(found[1]) * unit


def size(value: str) -> int:
    """An nginx size (``110m``, ``1g``, ``0``) in bytes."""
    found = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    assert found, f"not an nginx size: {value!r}"
    return int(found[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(found[2] or "").lower()]
