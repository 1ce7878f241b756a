"""What the documentation's code blocks may be: every fence says what it holds; every block
that looks runnable is run by a test; every block that is only shown is checked by a parser
where one exists; every setting, client method and command the pages name exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kai.config import Settings
from kai.sdk.client import KaiClient
from tests.agents.processes import REPO_ROOT
from tests.docs.blocks import (
    RUN,
    TAGS,
    blocks,
    env_assignments,
    ini_sections,
    json_values,
    nginx_config,
    pages,
    relative,
    settings_from,
)
from tests.docs.runner import CONVENTION, Page
from tests.docs.test_pages import PAGES

# Pages whose runnable blocks something else runs than the runner's per-page test: what does.
RUN_ELSEWHERE = {
    "docs/deploying.md": "tests/docs/test_deploying.py",
    # `make run` starts the hub, and the console's browser tests are the suite's own tests.
    "docs/console.md": "tests/console",
}
# Variables the pages name that are not the hub's settings.
NOT_SETTINGS = {
    "KAI_AGENT_TOKEN",  # kai agent run
    "KAI_AGENT_URL",
    "KAI_AGENT_LOG_LEVEL",
    "KAI_AGENT_LOG_CONSOLE",
    "KAI_URL",  # the client and `kai files upload`
    "KAI_EMAIL",
    "KAI_PASSWORD",
    "KAI_OPENAI_BASE_URL",  # kai.openai_agent
    "KAI_OPENAI_MODEL",
    "KAI_OPENAI_API_KEY",
    "KAI_OPENAI_SYSTEM_PROMPT",
    "KAI_OPENAI_TIMEOUT",
    "KAI_TEST_DATABASE_URL",  # the test suite
    "KAI_TEST_REDIS_URL",
}
PAGE_IDS = [relative(p) for p in pages()]
BY_PATH = {page.path: page for page in PAGES}


@pytest.mark.parametrize("path", pages(), ids=PAGE_IDS)
def test_every_fence_says_what_it_holds(path: Path) -> None:
    wrong = [f"{b.where} ```{b.tag}" for b in blocks(path) if b.tag not in TAGS]
    assert not wrong, f"untagged or unknown fences (tags: {sorted(TAGS)}): {wrong}"


@pytest.mark.parametrize("path", pages(), ids=PAGE_IDS)
def test_every_runnable_block_is_run(path: Path) -> None:
    name = relative(path)
    runnable = [b for b in blocks(path) if b.tag in RUN]
    if not runnable:
        assert name not in BY_PATH, f"{name} has nothing to run: drop it from PAGES"
        return
    if name in RUN_ELSEWHERE:
        assert (REPO_ROOT / RUN_ELSEWHERE[name]).exists()
        return
    assert name in BY_PATH, f"{name} has sh/python blocks but no entry in PAGES: {runnable[0]}"
    page = BY_PATH[name]
    texts = {b.text.strip() for b in runnable}
    for stand_in in page.stand_ins:
        assert stand_in in texts, f"{name}: no block {stand_in!r} to stand in for"
    for line, database in page.only_on:
        assert any(line in b.text for b in runnable), f"{name}: no block holds {line!r}"
        assert database in ("sqlite", "postgresql")
        if database == "postgresql":
            assert page.postgresql, f"{name} has a PostgreSQL block but does not run there"
    if page.login:
        assert f"{CONVENTION.removeprefix('docs/')}#trying-the-examples" in path.read_text(), (
            f"{name} relies on HUB, ACCESS and AGENT: say so, linking to concepts.md"
        )
    assert page.expect or page.check, f"{name}: say what its output must show"


@pytest.mark.parametrize("path", pages(), ids=PAGE_IDS)
def test_python_blocks_are_files_that_a_later_shell_block_runs(path: Path) -> None:
    found = blocks(path)
    for i, block in enumerate(found):
        if block.tag != "python":
            continue
        assert block.filename, f"{block.where}: a python block starts with `# name.py`"
        module = block.filename.removesuffix(".py")
        later = [b.text for b in found[i + 1 :] if b.tag in RUN]
        used = re.compile(rf"\b({re.escape(block.filename)}|{module}:\w+|from {module} import)")
        assert any(used.search(text) for text in later), (
            f"{block.where}: no later block runs {block.filename}"
        )


@pytest.mark.parametrize("path", pages(), ids=PAGE_IDS)
def test_json_blocks_are_json(path: Path) -> None:
    for block in blocks(path):
        if block.tag == "json":
            try:
                assert json_values(block.text)
            except ValueError as exc:
                raise AssertionError(f"{block.where}: {exc}") from None


@pytest.mark.parametrize("path", pages(), ids=PAGE_IDS)
def test_env_blocks_are_settings_kai_accepts(path: Path) -> None:
    for block in blocks(path):
        if block.tag == "env":
            try:
                settings_from(env_assignments(block.text))
            except Exception as exc:
                raise AssertionError(f"{block.where}: {exc}") from None


@pytest.mark.parametrize("path", pages(), ids=PAGE_IDS)
def test_ini_and_nginx_blocks_parse(path: Path) -> None:
    for block in blocks(path):
        if block.tag == "ini":
            assert ini_sections(block.text).sections(), block.where
        if block.tag == "nginx":
            assert nginx_config(block.text).children, block.where


def test_the_settings_the_pages_name_exist() -> None:
    """Every ``KAI_`` name in the pages is a setting (or one of the few read elsewhere), and
    configuration.md names every setting."""
    settings = {f"KAI_{name.upper()}" for name in Settings.model_fields}
    for path in pages():
        named = set(re.findall(r"\bKAI_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
        unknown = named - settings - NOT_SETTINGS
        assert not unknown, f"{relative(path)} names settings kai does not have: {unknown}"
    listed = (REPO_ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(name for name in settings if f"`{name}`" not in listed)
    assert not missing, f"configuration.md lacks {missing}"


def test_the_client_methods_of_the_client_page_exist() -> None:
    text = (REPO_ROOT / "docs" / "client.md").read_text()
    table = text[text.index("## What it offers") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    names = {n for row in rows for n in re.findall(r"`(\w+)[`(]", row.split("|")[2])}
    assert len(names) > 30
    missing = sorted(n for n in names if not callable(getattr(KaiClient, n, None)))
    assert not missing, f"client.md lists methods KaiClient does not have: {missing}"


def test_the_readme_names_the_commands_of_kai() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    (comment,) = re.findall(r"\.venv/bin/kai --help +# (.*)", readme)
    shown = subprocess.run(
        [sys.executable, "-m", "kai", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    ).stdout
    commands = set(re.findall(r"^│ (\w+) ", shown, re.M))
    named = {name.split()[0] for name in comment.split(", ")}
    assert named == commands, f"README says {sorted(named)}, kai has {sorted(commands)}"


def test_the_pages_run_in_the_runner_are_pages() -> None:
    for page in PAGES:
        assert isinstance(page, Page)
        assert (REPO_ROOT / page.path).exists(), page.path
    assert len({page.path for page in PAGES}) == len(PAGES)
