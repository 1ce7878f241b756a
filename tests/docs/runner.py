"""Running a page's examples: its ``sh`` blocks in order in one bash session, its ``python``
blocks written as the files they name (``# name.py``) for the shell blocks after them to run.

The session runs in a directory laid out like a clone where ``make run`` runs: ``.venv`` (the
test's own), ``data/`` (the hub's data directory: on SQLite its database, and the signing key),
so that the pages' ``.venv/bin/kai`` commands find the hub the test started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.agents.processes import REPO_ROOT
from tests.docs.blocks import RUN, Block, blocks

# Where the pages' examples expect the hub; the test puts its own hub's address instead.
DOCS_HUB = "127.0.0.1:8000"
CONVENTION = "docs/concepts.md"
CONVENTION_HEADING = "## Trying the examples"
MARK = "@@ block "


@dataclass(frozen=True)
class Page:
    """How one page's examples run, and what their output must show."""

    path: str
    # Regular expressions (multi-line) that the session's output must match.
    expect: tuple[str, ...] = ()
    # Whether the page relies on the shared variables (HUB, ACCESS, AGENT) of concepts.md.
    login: bool = True
    # Shell blocks the test's own hub stands in for, by their exact text.
    stand_ins: tuple[str, ...] = ()
    # Further (text, replacement) pairs applied to every runnable block of the page.
    replace: tuple[tuple[str, str], ...] = ()
    # Blocks (by a line they hold) that run on one database only: (line, "sqlite" | "postgresql").
    only_on: tuple[tuple[str, str], ...] = ()
    # Extra environment of the session.
    env: tuple[tuple[str, str], ...] = ()
    # Whether the page needs an OpenAI-compatible endpoint (the tests' fake LLM provider).
    openai: bool = False
    # Regular expressions the output must match on one database: (expression, database).
    expect_on: tuple[tuple[str, str], ...] = ()
    # Whether the page also runs on PostgreSQL (it has blocks for PostgreSQL only).
    postgresql: bool = False
    # Checks of the output that a regular expression cannot make; raise AssertionError.
    check: Callable[[Session], None] | None = None
    timeout: float = 90.0

    @property
    def blocks(self) -> list[Block]:
        return [b for b in blocks(REPO_ROOT / self.path) if b.tag in RUN]

    def __str__(self) -> str:
        return self.path


def login_block() -> Block:
    """The shell block of concepts.md that sets ``HUB``, ``ACCESS`` and ``AGENT``."""
    text = (REPO_ROOT / CONVENTION).read_text()
    assert CONVENTION_HEADING in text, f"{CONVENTION} lost its section {CONVENTION_HEADING!r}"
    start = text.index(CONVENTION_HEADING)
    (first, *_) = [
        b
        for b in blocks(REPO_ROOT / CONVENTION)
        if b.tag == "sh" and text.count("\n", 0, start) < b.line
    ]
    return first


def selected(page: Page, database: str, *, only_specific: bool = False) -> list[Block]:
    """The page's runnable blocks that run here: not stood in for, not for the other database
    (and, with ``only_specific``, only those for this database: the others ran elsewhere)."""
    chosen = []
    for block in page.blocks:
        if block.tag == "sh" and block.text.strip() in page.stand_ins:
            continue
        wanted = [db for line, db in page.only_on if line in block.text]
        if (wanted and database not in wanted) or (only_specific and not wanted):
            continue
        chosen.append(block)
    return chosen


def script(page: Page, chosen: Iterable[Block], replacements: dict[str, str]) -> str:
    """One bash script: the blocks in order, each announced on stdout and stderr."""
    lines = [
        "set -euo pipefail",
        # Whatever a page leaves running in the background (agents) stops with the session.
        "trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT",
    ]
    todo = list(chosen)
    if page.login:
        todo.insert(0, login_block())
    for block in todo:
        text = block.text
        for old, new in replacements.items():
            text = text.replace(old, new)
        lines.append(f"printf '\\n{MARK}%s\\n' {block.where}")
        lines.append(f"printf '\\n{MARK}%s %s\\n' {block.where} \"$EPOCHREALTIME\" >&2")
        if block.tag == "python":
            assert block.filename, f"{block.where}: a python block starts with # name.py"
            lines += [f"cat > {block.filename} <<'KAI_DOCS_PYTHON'", text + "KAI_DOCS_PYTHON"]
        else:
            lines.append(text)
    return "\n".join(lines) + "\n"


@dataclass
class Session:
    """What a page's session printed."""

    returncode: int | None
    stdout: str
    stderr: str
    outputs: dict[str, str] = field(default_factory=dict)

    def explain(self) -> str:
        return f"--- stdout:\n{self.stdout[-6000:]}\n--- stderr:\n{self.stderr[-6000:]}"

    @property
    def failed_block(self) -> str | None:
        marks = re.findall(rf"^{MARK}(\S+)$", self.stderr, re.M)
        return marks[-1] if marks else None


async def run(text: str, *, cwd: Path, env: dict[str, str], timeout: float) -> Session:
    """Run the script in bash in ``cwd``; everything it started is stopped afterwards."""
    path = cwd / "page.sh"
    path.write_text(text)
    out_path, err_path = cwd / "page.out", cwd / "page.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(path),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    returncode: int | None
    try:
        returncode = await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        returncode = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
    stdout = out_path.read_text(errors="replace")
    session = Session(returncode, stdout, err_path.read_text(errors="replace"))
    where = None
    for line in stdout.splitlines(keepends=True):
        if line.startswith(MARK):
            where = line[len(MARK) :].strip()
            session.outputs[where] = ""
        elif where is not None:
            session.outputs[where] += line
    return session


def hub_directory(path: Path) -> Path:
    """A directory like a clone's: ``.venv`` is the test's own, ``data/`` is the hub's."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (path / "data").mkdir(exist_ok=True)
    # Every answer on a line of its own, so that the tests can match whole lines.
    (path / ".curlrc").write_text('write-out = "\\n"\n')
    return path
