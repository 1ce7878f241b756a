"""Uploaded files after the upload: listed, downloaded and deleted by whom the matrix allows,
followed live as ``upload_progress`` events, and handed to agents (raw sockets, the demo agent as
a real process, and across two nodes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kai.config import Settings
from tests.agents.conftest import ServerStarter
from tests.agents.processes import Launcher, child_env, run_cli
from tests.agents.support import HubServer, People, agent_socket
from tests.conftest import TEST_SECRET
from tests.helpers import assert_problem, bearer
from tests.realtime.client_support import Hubs, Watcher, watch
from tests.work.support import DEMO, kept_alive, payload
from tests.work.upload_support import (
    MIB,
    MULTIPART,
    Storage,
    agent_download,
    check_download,
    file_part,
    files_page,
    form,
    part,
    path_of,
    send,
    send_streamed,
    sha256,
    upload,
    upload_path,
)

# -- who may -------------------------------------------------------------------------------------


async def test_other_users_see_nothing_and_strangers_are_asked_to_log_in(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    admin = await people.admin()
    created = await ann.create_agent()
    response = await upload(ann, created.agent_id, b"ann's", filename="anns.txt")
    assert response.status_code == 201, response.text
    file_id = payload(response)["fileId"]
    storage = Storage.of(server.settings)

    assert_problem(await upload(bob, created.agent_id, b"bob's"), 404, "Agent not found")
    assert_problem(await bob.call("GET", f"/api/agents/{created.agent_id}/files"), 404)
    assert_problem(await bob.call("GET", f"/api/files/{file_id}"), 404, "File not found")
    assert_problem(await bob.call("DELETE", f"/api/files/{file_id}"), 404, "File not found")
    assert_problem(await bob.call("GET", "/api/files/no-such-file"), 404, "File not found")
    assert_problem(await upload(bob, "no-such-agent", b"x"), 404, "Agent not found")

    client = server.client
    body = form(file_part(b"nobody's"))
    headers = {"Content-Type": MULTIPART}
    assert_problem(
        await client.post(upload_path(created.agent_id), content=body, headers=headers), 401
    )
    assert_problem(await client.get(f"/api/agents/{created.agent_id}/files"), 401)
    assert_problem(await client.get(f"/api/files/{file_id}"), 401)
    assert_problem(await client.delete(f"/api/files/{file_id}"), 401)

    # Nothing of theirs was stored, and ann's file is still there; the admin sees it too.
    assert len(storage.stored()) == 1
    assert storage.partial() == []
    check_download(await ann.call("GET", f"/api/files/{file_id}"), b"ann's", "anns.txt")
    check_download(await admin.call("GET", f"/api/files/{file_id}"), b"ann's", "anns.txt")
    assert (await files_page(admin, created.agent_id))["total"] == 1


async def test_the_agent_role_may_upload_and_delete_but_not_read_as_the_matrix_says(
    server: HubServer, people: People
) -> None:
    """The matrix gives the ``agent`` role ``files:upload`` and no ``agents:read``."""
    carl = await people.join("carl@example.com")
    created = await carl.create_agent()
    kept = await upload(carl, created.agent_id, b"kept", filename="kept.txt")
    assert kept.status_code == 201, kept.text

    settings = server.settings
    env = child_env(
        KAI_DATABASE_URL=settings.resolved_database_url,
        KAI_DATA_DIR=str(settings.data_dir),
        KAI_SECRET_KEY=TEST_SECRET,
    )
    done = await run_cli("users", "set-role", carl.email, "agent", env=env)
    assert done.returncode == 0, done.stderr

    response = await upload(carl, created.agent_id, b"as agent", filename="agent.txt")
    assert response.status_code == 201, response.text
    file_id = payload(response)["fileId"]
    listed = await carl.call("GET", f"/api/agents/{created.agent_id}/files")
    assert_problem(listed, 403, "Insufficient permissions: agents:read")
    assert_problem(
        await carl.call("GET", f"/api/files/{file_id}"),
        403,
        "Insufficient permissions: agents:read",
    )
    deleted = await carl.call("DELETE", f"/api/files/{file_id}")
    assert deleted.status_code == 200, deleted.text
    # Its own agent's token still fetches what is left.
    check_download(
        await agent_download(server, payload(kept)["fileId"], created.token), b"kept", "kept.txt"
    )
    assert len(Storage.of(settings).stored()) == 1


# -- listing -------------------------------------------------------------------------------------


async def test_files_are_listed_newest_first_in_pages(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    elsewhere = await ann.create_agent("elsewhere")
    uploaded = []
    for index in range(5):
        response = await upload(
            ann,
            created.agent_id,
            b"f" * (index + 1),
            filename=f"f{index}.txt",
            metadata={"index": index},
            content_type="text/plain",
        )
        assert response.status_code == 201, response.text
        uploaded.append(payload(response))
    other = await upload(ann, elsewhere.agent_id, b"elsewhere")
    assert other.status_code == 201, other.text

    newest_first = [{k: v for k, v in f.items() if k != "success"} for f in reversed(uploaded)]
    everything = await files_page(ann, created.agent_id)
    assert everything == {"files": newest_first, "total": 5, "hasMore": False, "nextOffset": None}

    first = await files_page(ann, created.agent_id, limit=2)
    assert first == {"files": newest_first[:2], "total": 5, "hasMore": True, "nextOffset": 2}
    middle = await files_page(ann, created.agent_id, limit=2, offset=first["nextOffset"])
    assert middle == {"files": newest_first[2:4], "total": 5, "hasMore": True, "nextOffset": 4}
    last = await files_page(ann, created.agent_id, limit=2, offset=middle["nextOffset"])
    assert last == {"files": newest_first[4:], "total": 5, "hasMore": False, "nextOffset": None}
    beyond = await files_page(ann, created.agent_id, offset=10)
    assert beyond == {"files": [], "total": 5, "hasMore": False, "nextOffset": None}
    assert newest_first[0]["size"] == 5
    assert newest_first[0]["contentType"] == "text/plain"
    assert newest_first[0]["metadata"] == {"index": 4}

    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = await ann.call("GET", f"/api/agents/{created.agent_id}/files", params=params)
        assert_problem(response, 422)


# -- progress events -----------------------------------------------------------------------------


def progress_of(events: list[dict[str, Any]], file_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "upload_progress" and e["fileId"] == file_id]


async def progress_until_done(watcher: Watcher) -> list[dict[str, Any]]:
    events = await watcher.until("upload_progress", done=True)
    return [e for e in events if e["type"] == "upload_progress"]


def check_progress(
    events: list[dict[str, Any]], *, file_id: str, filename: str, size: int, total: int | None
) -> None:
    """Events in order, gap-free, growing, and a last one that says it is done."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(events))), seqs
    *during, last = events
    assert during, "no progress was reported before the end"
    for event in events:
        assert set(event) >= {
            "type",
            "seq",
            "epoch",
            "timestamp",
            "fileId",
            "filename",
            "bytesReceived",
            "totalBytes",
            "done",
        }
        assert (event["fileId"], event["filename"]) == (file_id, filename)
    received = [e["bytesReceived"] for e in during]
    assert received == sorted(set(received)), received
    assert received[0] > 0
    assert received[-1] <= size
    assert all(e["done"] is False and e["totalBytes"] == total for e in during)
    assert last["done"] is True
    assert (last["bytesReceived"], last["totalBytes"]) == (size, size)


async def drain(watcher: Watcher, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Whatever arrives until nothing has for ``quiet`` seconds."""
    got = []
    while True:
        try:
            got.append(await watcher.recv(quiet))
        except TimeoutError:
            return got


async def test_a_watcher_sees_upload_progress_in_order_ending_with_done(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    data = os.urandom(3 * MIB)
    async with watch(server, created.agent_id, ann.token) as watcher:
        assert (await watcher.recv())["type"] == "status_update"

        # With Content-Length: the total while it streams is the body's declared length.
        body = form(file_part(data, "../with-length.bin"))
        response = await send(ann, created.agent_id, body)
        assert response.status_code == 201, response.text
        events = await progress_until_done(watcher)
        check_progress(
            events,
            file_id=payload(response)["fileId"],
            filename="with-length.bin",
            size=len(data),
            total=len(body),
        )

        # Without it: the total is unknown (null) until the end.
        response = await send_streamed(ann, created.agent_id, form(file_part(data, "chunked")))
        assert response.status_code == 201, response.text
        more = await progress_until_done(watcher)
        check_progress(
            more,
            file_id=payload(response)["fileId"],
            filename="chunked",
            size=len(data),
            total=None,
        )
        assert more[0]["seq"] == events[-1]["seq"] + 1

        # An upload refused after its file streamed in never says it is done.
        refused = form(file_part(data, "refused.bin"), part("comment", b"x"))
        assert_problem(await send(ann, created.agent_id, refused), 422)
        after = await drain(watcher)
        assert after, "the refused upload's bytes were not reported"
        assert {(e["type"], e["filename"], e["done"]) for e in after} == {
            ("upload_progress", "refused.bin", False)
        }


# -- real agents ---------------------------------------------------------------------------------


async def test_an_agent_that_did_not_declare_files_is_not_told(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("plain")
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello("plain")
        async with kept_alive(raw):
            await ann.wait_status(created.agent_id, "online")
            response = await upload(ann, created.agent_id, b"quiet", filename="quiet.txt")
            assert response.status_code == 201, response.text
            # A message the hub answers with an error, as a marker: a ``file`` message, had it
            # been sent, would arrive before the answer (only heartbeat acks may).
            await raw.send({"type": "marker"})
            answer = await raw.recv_type("error")
            assert answer["error"] == "Unknown message type: marker"
    # The agent's own token still downloads what is its own.
    check_download(
        await agent_download(server, payload(response)["fileId"], created.token),
        b"quiet",
        "quiet.txt",
    )


async def test_the_demo_agent_downloads_an_upload_and_logs_that_it_checked_it(
    start_server: ServerStarter, fast_settings: Settings, tmp_path: Path
) -> None:
    # The demo agent fetches the URL the hub hands out: the hub's public URL must reach it.
    public = f"http://127.0.0.1:{fast_settings.port}"
    async with start_server(public_base_url=public) as server:
        ann = await People(server).join("ann@example.com")
        created = await ann.create_agent("demo")
        launcher = Launcher(server.ws_url, tmp_path)
        try:
            process = launcher.start(created.token, target=DEMO)
            online = await ann.wait_status(created.agent_id, "online", 20, process=process)
            assert online["capabilities"]["files"] is True

            data = os.urandom(MIB + 7)
            name = "notes \u00fcber alles.txt"
            response = await upload(ann, created.agent_id, data, filename=name)
            assert response.status_code == 201, response.text
            assert payload(response)["sha256"] == sha256(data)
            await ann.wait_logs(
                created.agent_id,
                f"received file {name} ({len(data)} bytes, SHA-256 checked)",
                timeout=20,
            )
            assert "Traceback" not in process.output()
        finally:
            launcher.kill_all()


@pytest.mark.parametrize("mode", ["redis"])
async def test_an_upload_through_another_node_reaches_the_agent(hubs: Hubs) -> None:
    near, far = await hubs.pair()
    ann = await People(far).join("ann@example.com")
    created = await ann.create_agent("raw")
    data = os.urandom(2 * MIB)
    async with agent_socket(near.ws_url, created.token) as raw:
        await raw.hello("raw", files=True)
        await ann.wait_status(created.agent_id, "online")
        assert near.hub.live.get(created.agent_id) is not None
        assert far.hub.live.get(created.agent_id) is None
        async with kept_alive(raw), watch(near, created.agent_id, ann.token) as watcher:
            response = await upload(ann, created.agent_id, data, filename="far.bin")
            assert response.status_code == 201, response.text
            file_id = payload(response)["fileId"]
            announced = await raw.recv_type("file", timeout=10)
            # The agent's node relays the progress of an upload that another node received.
            events = progress_of(await watcher.until("upload_progress", done=True), file_id)

    assert announced["fileId"] == file_id
    assert (announced["size"], announced["sha256"]) == (len(data), sha256(data))
    assert events[-1]["bytesReceived"] == len(data)
    # Both nodes serve the file to the agent's token (they share the storage).
    for node in (near, far):
        response = await node.client.get(path_of(announced["url"]), headers=bearer(created.token))
        check_download(response, data, "far.bin")
