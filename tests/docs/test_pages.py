"""Every page's examples, run as they stand against a real hub hosting the demo agent: the
``sh`` blocks in order in one bash session (``set -euo pipefail``), the ``python`` blocks as
the files the shell blocks run. What each page's output must show is listed here, per page."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator

import pytest

from tests.docs.conftest import DocsHub
from tests.docs.runner import DOCS_HUB, Page, Session, run, script, selected
from tests.services import plain_dsn
from tests.work.openai_upstream import API_KEY, MODEL, openai_upstream


def resumed_without_loss(session: Session) -> None:
    """websocket.md: the resumed watch starts at the seq where the first one stopped, then
    comes the record it missed."""
    (watched,) = [out for out in session.outputs.values() if "while you were away" in out]
    lines = [line.split(" ", 3) for line in watched.splitlines() if line.strip()]
    *_, last_seen, snapshot, missed = lines
    seq, epoch = last_seen[0], last_seen[1]
    assert snapshot[:3] == [seq, epoch, "status_update"], lines
    assert missed == [str(int(seq) + 1), epoch, "log_stream", "while you were away"], lines


def quickstart_streamed_and_watched(session: Session) -> None:
    """quickstart.md: the stream's chunks make the demo's whole answer; the watch printed five
    numbered events."""
    sse = [line for line in session.stdout.splitlines() if line.startswith("data: ")]
    chunks = [json.loads(line[6:])["chunk"] for line in sse if '"chunk"' in line]
    assert "".join(chunks) == "You asked: What can you do?. This is the demo agent answering."
    (watched,) = [out for out in session.outputs.values() if '"seq":' in out]
    events = [json.loads(line) for line in watched.splitlines() if line.startswith("{")]
    assert len(events) == 5, watched
    assert [e["seq"] for e in events[1:]] == list(range(events[1]["seq"], events[1]["seq"] + 4))


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

PAGES = [
    Page("docs/concepts.md", login=False, expect=(rf"^{UUID}$",)),
    Page(
        "docs/commands.md",
        expect=(
            r'"result":\{"text":"hello"\}',
            r'"success":false,.*"error":"no luck"',
            r'"status":504,"detail":"The agent did not answer within 1 s"',
            r'"commands":\["echo","fail","log","sleep"\]',
            r'^\{"type":"command_acknowledged","commandId":"',
            r'^\{"type":"command_result",.*"result":\{"text":"hi"\},"success":true',
        ),
    ),
    Page(
        "docs/writing-agents.md",
        expect=(
            r'"result":\{"greeting":"Hello, Ann"\}',
            r'"message":"greeter ready"',
            r"^connected as greeter$",
        ),
    ),
    Page(
        "docs/client.md",
        login=False,
        expect=(
            r"^command: \{'text': 'hello'\}$",
            r"^task: succeeded \{'counted': 3\}$",
            r"^stream: You asked: What is kai\?\. This is the demo agent answering\.$",
            r"^event: succeeded 1\.0$",
        ),
    ),
    Page(
        "docs/agent-protocol.md",
        expect=(r'^\{"type":"hello_ack","status":"online"', r'"result":\{"text":"HELLO"\}'),
    ),
    Page(
        "docs/auth.md",
        expect=(
            r'"message":"Registration successful"',
            r'"permissions":\["agents:command","agents:create","agents:read","agents:update",'
            r'"config:read","files:upload"\]',
            r'"detail":"Insufficient permissions: services:read"',
            r'"status":401,"detail":"Invalid refresh token"',
            r'"status":401,"detail":"Invalid or expired session"',
            r'"permission":"auth:refresh_reuse",.*"granted":false',
            r'"role":"developer".*"updatedFields":\["role"\]',
            r"^kai: ann@example\.com is now developer$",
            r"^kai: created user bob@example\.com \(",
        ),
    ),
    Page(
        "docs/errors.md",
        expect=(
            r'"status":422,"detail":"Invalid request","errors":\[\{"field":"credentials\.email"',
            r"^x-request-id: trace-42\r?$",
            r'"status":404,"detail":"Agent not found","requestId":"trace-42"',
        ),
    ),
    Page(
        "docs/websocket.md",
        expect=(r"^\d+ [0-9a-f]+ resync_required $",),
        check=resumed_without_loss,
    ),
    Page(
        "docs/streams.md",
        openai=True,
        expect=(
            r'^\{"success":true,"streamId":".*"streamUrl":"http://127\.0\.0\.1:\d+/api/streams/',
            r'"index":10,"chunk":" answering\."',
            r'"status":"completed","chunks":11\}',
            r'"status":"completed","chunks":11,"error":null',
            r'"status":"cancelled","previousStatus":"running"',
            r'"status":"cancelled","chunks":[1-9]\}',
            r'"detail":"Stream already cancelled","currentStatus":"cancelled"',
            r'"index":3,"chunk":"Why is the sky blue\?"',
        ),
    ),
    Page(
        "docs/uploads.md",
        expect=(
            r'"filename":"numbers.txt","contentType":"text/plain","size":588895,'
            r'"sha256":"b2bc7d3f8b652d2ec96865b68ad8f80e22cca174abe1aed7889e242a747d590f"',
            r'"status":422,"detail":"metadata must be a JSON object"',
            r'"message":"numbers.txt: 100000 lines \(count\)"',
            r'^\{"total":1,"hasMore":false,"nextOffset":null,"files":\[\{',
            r"^the same bytes$",
            r'"status":404,"detail":"File not found"',
        ),
    ),
    Page(
        "docs/operating.md",
        postgresql=True,
        only_on=(("sqlite3 data/kai.db", "sqlite"), ("pg_dump", "postgresql")),
        expect=(
            r'^\{"status":"ok","version":"',
            r'^\{"status":"ready","checks":\{"database":"ok"',
            r'^kai_http_requests_total\{method="GET",route="/health",status="200"\} 1\.0$',
            r"'value': 10\.0, 'source': 'runtime'",
            r'"updatedFields":\["commandTimeout","wsRateLimit"\]',
            r'"field":"commandTimeout","message":"Input should be greater than or equal to 0\.1"',
            r"^lease-reaper running healthy \['restart', 'stop'\]$",
            r'"name":"lease-reaper","kind":"loop","state":"stopped"',
            r"│ demo +│ [0-9a-f-]{36} │ admin@example\.com +│ online",
            r"INFO +demo agent ready",
            r"^kai: backup written to data/backups/agents/[0-9a-f-]{36}-\w+\.json\.gz$",
            r"^kai: restored agent scratch \(",
            r"^kai: database is up to date \(0 migrations applied\)$",
            r"^kai: database schema at \d{4}; pending: none$",
            r"^HTTP/1\.1 429 Too Many Requests\r?$",
            r"^retry-after: 30\r?$",
        ),
        expect_on=((r"^ok$", "sqlite"), (r"^[1-9]\d*$", "postgresql")),
    ),
    Page(
        "docs/teams.md",
        expect=(
            r'"name":"docs-team","description":"the demo and its helpers"',
            r'"channelUrl":"/ws/teams/',
            r'"actions":\["command"\]',
            r"^answer: \{'via': 'asker'\}$",
            r"^refused: No grant lets this agent create tasks for that agent$",
            r'^  "taskType": "count_words",\n  "status": "succeeded",',
            r'^      "taskType": "count_words",\n      "status": "succeeded",',
        ),
    ),
    Page(
        "docs/tasks.md",
        expect=(
            rf'^\{{"success":true,"taskId":"{UUID}","status":"(queued|running)"',
            r'"taskTypes":\["count"\]',
            r'"status":"cancelled","previousStatus":"(queued|running)"',
            r'"detail":"Task already cancelled","currentStatus":"cancelled"',
            r"^idempotent-replayed: true",
            r'"detail":"This idempotencyKey was already used for a different task"',
            r'"status":"succeeded",.*"result":\{"counted":5\}',
            r'^\{"total":1,.*"status":"cancelled"',
        ),
    ),
    Page(
        "docs/quickstart.md",
        login=False,
        stand_ins=("make run",),  # the test's hub, hosting the demo agent
        expect=(
            r'"result":\{"hello":"world"\}',
            r"^event: end$",
            r'"status":"succeeded"',
            r'"result":\{"counted":3\}',
            r'"previousStatus":"online"',
            r'"agentToken":"kai_agent_',
        ),
        check=quickstart_streamed_and_watched,
    ),
]


@contextlib.asynccontextmanager
async def provider(page: Page) -> AsyncIterator[dict[str, str]]:
    """The replacements for a page that needs an LLM provider: the tests' fake one."""
    if not page.openai:
        yield {}
        return
    async with openai_upstream() as upstream:
        yield {"http://127.0.0.1:11434/v1": upstream.base_url, "llama3.2": MODEL}


async def run_page(page: Page, docs_hub: DocsHub, *, only_specific: bool = False) -> None:
    env = {**docs_hub.env, **dict(page.env)}
    if page.openai:
        env["KAI_OPENAI_API_KEY"] = API_KEY
    database = {}
    if docs_hub.database == "postgresql":
        database = {"postgresql://kai:secret@db.internal/kai": plain_dsn(env["KAI_DATABASE_URL"])}
    async with provider(page) as for_provider:
        replacements = {
            DOCS_HUB: f"127.0.0.1:{docs_hub.server.port}",
            **database,
            **dict(page.replace),
            **for_provider,
        }
        chosen = selected(page, docs_hub.database, only_specific=only_specific)
        text = script(page, chosen, replacements)
        session = await run(text, cwd=docs_hub.directory, env=env, timeout=page.timeout)
    assert session.returncode is not None, f"{page} did not finish\n{session.explain()}"
    assert session.returncode == 0, (
        f"{session.failed_block} failed with {session.returncode}\n{session.explain()}"
    )
    everywhere = [] if only_specific else page.expect
    expected = [*everywhere, *(e for e, db in page.expect_on if db == docs_hub.database)]
    missing = [e for e in expected if not re.search(e, session.stdout, re.M)]
    assert not missing, f"{page}: the output lacks {missing}\n{session.explain()}"
    if page.check is not None and not only_specific:
        page.check(session)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("page", PAGES, ids=str)
async def test_the_examples_of_the_page_run(page: Page, docs_hub: DocsHub) -> None:
    await run_page(page, docs_hub)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("page", [p for p in PAGES if p.postgresql], ids=str)
async def test_the_postgresql_examples_of_the_page_run(page: Page, docs_hub: DocsHub) -> None:
    """The blocks for PostgreSQL only (the others ran on SQLite), on a hub on PostgreSQL."""
    await run_page(page, docs_hub, only_specific=True)
