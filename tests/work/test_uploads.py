"""``POST /api/agents/{agentId}/upload``: what reaches the disk and what does not. Real hubs on
real ports, bodies sent whole and as chunked streams, the storage read back from disk."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import unicodedata
from pathlib import Path

import orjson
import pytest

from tests.agents.conftest import ServerStarter
from tests.agents.support import HubServer, People, agent_socket, eventually
from tests.helpers import assert_problem, bearer
from tests.work.support import kept_alive, payload
from tests.work.upload_support import (
    BOUNDARY,
    KIB,
    MAX_METADATA,
    MIB,
    OVERHEAD,
    Storage,
    agent_download,
    check_download,
    file_part,
    files_page,
    form,
    metadata_part,
    part,
    path_of,
    post,
    send,
    send_streamed,
    sha256,
    until,
    upload,
    upload_path,
)

# -- the bytes, end to end -----------------------------------------------------------------------


async def test_a_file_round_trips_exactly_to_the_owner_and_to_the_agent_it_was_for(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("reader")
    other = await ann.create_agent("other")
    storage = Storage.of(server.settings)
    data = os.urandom(3 * MIB + 12_345)
    metadata = {"purpose": "summarize", "pages": [1, 2], "nested": {"ok": True}}

    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("reader", files=True)
        await ann.wait_status(created.agent_id, "online")
        # As a standard client sends it (what curl -F does): httpx builds the multipart body.
        response = await ann.call(
            "POST",
            upload_path(created.agent_id),
            files={"file": ("report.pdf", data, "application/pdf")},
            data={"metadata": orjson.dumps(metadata).decode()},
        )
        assert response.status_code == 201, response.text
        body = payload(response)
        announced = await raw.recv_type("file")

    assert set(body) == {
        "success",
        "fileId",
        "agentId",
        "filename",
        "contentType",
        "size",
        "sha256",
        "metadata",
        "uploadedAt",
    }
    assert body["success"] is True
    assert body["agentId"] == created.agent_id
    assert body["filename"] == "report.pdf"
    assert body["contentType"] == "application/pdf"
    assert body["size"] == len(data)
    assert body["sha256"] == sha256(data)
    assert body["metadata"] == metadata
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["uploadedAt"])
    file_id = body["fileId"]

    # The agent was told, with everything it needs to fetch and check the file.
    assert announced == {
        "type": "file",
        "fileId": file_id,
        "filename": "report.pdf",
        "size": len(data),
        "sha256": sha256(data),
        "contentType": "application/pdf",
        "url": f"{server.settings.public_base_url}/api/files/{file_id}",
        "metadata": metadata,
    }

    # On disk: one file under a generated name, the exact bytes; nothing left half received.
    assert list(storage.stored().values()) == [data]
    assert storage.partial() == []

    # The owner downloads it; so does the agent, with its own token, from the URL it was given.
    check_download(await ann.call("GET", f"/api/files/{file_id}"), data, "report.pdf")
    assert_problem(await agent_download(server, file_id, None), 401)
    by_agent = await server.client.get(path_of(announced["url"]), headers=bearer(created.token))
    check_download(by_agent, data, "report.pdf")
    assert sha256(by_agent.content) == announced["sha256"]

    # Another agent's token (of the same owner) finds nothing there; a made-up agent token and
    # no token at all are not let in.
    assert_problem(await agent_download(server, file_id, other.token), 404, "File not found")
    assert_problem(await agent_download(server, file_id, "kai_agent_made-up"), 401)
    assert_problem(await agent_download(server, file_id, "not-a-token"), 401)


# -- names ---------------------------------------------------------------------------------------


HOSTILE_NAMES: list[tuple[bytes, str]] = [
    (b"../../escape.txt", "escape.txt"),
    (b"..\\..\\windows.txt", "windows.txt"),
    (b"/etc/passwd", "passwd"),
    (b"nul\x00inside\x01and\x1b[31mcolour\x7f.txt", "nulinsideand[31mcolour.txt"),
    (b"..", "upload"),
    (b"", "upload"),
    (b"  .hidden  ", "hidden"),
    ("caf\u00e9 \u00bbfinal\u00ab.txt".encode(), "caf\u00e9 \u00bbfinal\u00ab.txt"),
]


async def test_client_file_names_are_only_shown_and_never_reach_the_disk(
    server: HubServer, people: People, tmp_path: Path
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    storage = Storage.of(server.settings)
    before = set(tmp_path.rglob("*"))

    shown = []
    for index, (raw, _) in enumerate(HOSTILE_NAMES):
        response = await upload(ann, created.agent_id, b"x%d" % index, filename=raw)
        assert response.status_code == 201, (raw, response.text)
        shown.append(payload(response)["filename"])
    assert shown == [expected for _, expected in HOSTILE_NAMES]

    # Every stored file has a generated name directly in data_dir/files, and nothing was
    # written anywhere else (no escape.txt beside the data directory, say).
    stored = storage.stored()
    assert sorted(stored.values()) == sorted(b"x%d" % i for i in range(len(HOSTILE_NAMES)))
    assert storage.partial() == []
    new = set(tmp_path.rglob("*")) - before
    outside = {
        p for p in new if not p.is_relative_to(storage.root) and p not in storage.root.parents
    }
    assert {p for p in outside if not p.name.startswith("kai.db")} == set()
    listed = (await files_page(ann, created.agent_id))["files"]
    assert sorted(f["filename"] for f in listed) == sorted(shown)


async def test_downloads_name_the_file_safely_in_content_disposition(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    cases = {
        "r\u00e9sum\u00e9 \u2013 \u65e5\u672c.pdf": (
            'attachment; filename="r_sum_ _ __.pdf"; '
            "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%80%93%20%E6%97%A5%E6%9C%AC.pdf"
        ),
        'say "hi"; now=1.txt': (
            'attachment; filename="say _hi__ now_1.txt"; '
            "filename*=UTF-8''say%20%22hi%22%3B%20now%3D1.txt"
        ),
    }
    for name, expected in cases.items():
        # A quote inside the part's quoted file name is escaped with a backslash.
        raw = name.replace('"', '\\"').encode()
        response = await upload(ann, created.agent_id, b"named", filename=raw)
        assert response.status_code == 201, response.text
        assert payload(response)["filename"] == name
        download = await ann.call("GET", f"/api/files/{payload(response)['fileId']}")
        check_download(download, b"named", name)
        assert download.headers["content-disposition"] == expected
        assert download.headers["content-disposition"].isascii()


async def test_shown_names_hold_no_c1_control_characters(server: HubServer, people: People) -> None:
    """U+0080..U+009F are control characters too (U+009B is a terminal's CSI, U+0085 a line
    break): a name shown in lists, logs and the agent's ``file`` message must not hold them."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    raw = "a\u0085b\u009b31mc\u0080.txt"
    response = await upload(ann, created.agent_id, b"c1", filename=raw.encode())
    assert response.status_code == 201, response.text
    shown = payload(response)["filename"]
    assert [c for c in shown if unicodedata.category(c) == "Cc"] == [], ascii(shown)


async def test_the_digest_header_encodes_the_sha256_in_base64(
    server: HubServer, people: People
) -> None:
    """``Digest: sha-256=...`` (RFC 3230, with the algorithm of RFC 5843) carries the digest
    in base64; a client that checks it against the body must find it equal."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    data = os.urandom(10 * KIB)
    response = await upload(ann, created.agent_id, data)
    assert response.status_code == 201, response.text
    download = await ann.call("GET", f"/api/files/{payload(response)['fileId']}")
    check_download(download, data, "data.bin")
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert download.headers["digest"] == f"sha-256={expected}"


# -- limits --------------------------------------------------------------------------------------


async def test_over_the_size_cap_is_413_with_or_without_content_length_and_leaves_nothing(
    start_server: ServerStarter,
) -> None:
    cap = 1 * MIB
    async with start_server(upload_max_bytes=cap) as server:
        ann = await People(server).join("ann@example.com")
        created = await ann.create_agent()
        storage = Storage.of(server.settings)

        # Exactly at the cap: accepted.
        at_cap = os.urandom(cap)
        response = await upload(ann, created.agent_id, at_cap)
        assert response.status_code == 201, response.text
        assert payload(response)["size"] == cap
        (kept,) = storage.stored()

        # A declared length far past the cap: refused before a byte is read.
        far_over = form(file_part(os.urandom(cap + OVERHEAD + 1)))
        assert_problem(
            await send(ann, created.agent_id, far_over),
            413,
            f"Request body is larger than {cap + OVERHEAD} bytes",
        )

        # A declared length within the body allowance, but a file one byte past the cap: cut
        # off while it streams.
        one_over = form(file_part(os.urandom(cap + 1)))
        assert len(one_over) <= cap + OVERHEAD
        assert_problem(
            await send(ann, created.agent_id, one_over), 413, f"File is larger than {cap} bytes"
        )
        assert list(storage.stored()) == [kept]
        assert storage.partial() == []

        # No Content-Length at all (a chunked stream): the bytes reach .incoming, then the
        # stream is cut off at the cap and the partial file goes.
        seen_partial: list[int] = []

        async def watch_partial(sent: int) -> None:
            if sent == cap // 2:

                async def landed() -> int:
                    size = storage.partial_bytes()
                    return size if size >= cap // 4 else 0

                seen_partial.append(await eventually(landed, what="part of the upload on disk"))

        streamed_over = form(file_part(os.urandom(3 * cap)))
        response = await send_streamed(ann, created.agent_id, streamed_over, pause=watch_partial)
        assert_problem(response, 413, f"File is larger than {cap} bytes")
        assert seen_partial, "the stream never reached half the cap"
        assert list(storage.stored()) == [kept]
        assert storage.partial() == []
        assert (await files_page(ann, created.agent_id))["total"] == 1


async def test_bytes_reach_the_disk_while_the_body_is_still_being_sent(
    server: HubServer, people: People
) -> None:
    """The hub writes what it has received and does not hold the file: the upload's first
    megabytes are on disk before the client has sent the rest."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    storage = Storage.of(server.settings)
    data = os.urandom(4 * MIB)
    body = form(file_part(data, "slow.bin"))
    on_disk: list[int] = []

    async def held_back(sent: int) -> None:
        # After each megabyte, hold the rest back until that much is in the .incoming file.
        if sent % MIB == 0 and sent < len(data):

            async def written() -> int:
                size = storage.partial_bytes()
                return size if size >= sent - 64 * KIB else 0

            on_disk.append(await eventually(written, what=f"{sent} bytes on disk"))

    response = await send_streamed(ann, created.agent_id, body, pause=held_back)
    assert response.status_code == 201, response.text
    assert payload(response)["size"] == len(data)
    assert payload(response)["sha256"] == sha256(data)
    assert len(on_disk) == 3
    assert on_disk == sorted(on_disk)
    assert on_disk[-1] >= 3 * MIB - 64 * KIB
    assert list(storage.stored().values()) == [data]
    assert storage.partial() == []


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    storage = Storage.of(server.settings)

    class GoneAway(Exception):
        pass

    async def vanish(sent: int) -> None:
        if sent == MIB:
            await until(lambda: storage.partial_bytes() >= MIB // 2, what="bytes on disk")
            raise GoneAway

    with pytest.raises(GoneAway):
        await send_streamed(
            ann, created.agent_id, form(file_part(os.urandom(3 * MIB))), pause=vanish
        )
    await until(lambda: storage.partial() == [], what="the partial file removed")
    assert storage.stored() == {}


async def test_the_quota_counts_a_users_stored_files_and_a_delete_frees_room(
    start_server: ServerStarter,
) -> None:
    async with start_server(upload_max_bytes=1 * MIB, upload_quota_bytes=MIB + MIB // 2) as server:
        people = People(server)
        ann = await people.join("ann@example.com")
        bob = await people.join("bob@example.com")
        anns = await ann.create_agent()
        bobs = await bob.create_agent()
        storage = Storage.of(server.settings)

        first = await upload(ann, anns.agent_id, os.urandom(MIB), filename="first.bin")
        assert first.status_code == 201, first.text
        first_id = payload(first)["fileId"]

        # Half a megabyte of room is left: 768 KiB does not fit, declared or streamed.
        second = os.urandom(768 * KIB)
        refused = await upload(ann, anns.agent_id, second)
        assert_problem(refused, 413, "Storage quota exceeded")
        assert refused.json()["quota"] == MIB + MIB // 2
        streamed = await send_streamed(ann, anns.agent_id, form(file_part(second)))
        assert_problem(streamed, 413, "Storage quota exceeded")
        assert storage.partial() == []
        assert len(storage.stored()) == 1

        # What does fit, fits; then the quota is full and even one byte is refused at once.
        fits = await upload(ann, anns.agent_id, os.urandom(MIB // 2))
        assert fits.status_code == 201, fits.text
        assert_problem(await upload(ann, anns.agent_id, b"x"), 413, "Storage quota exceeded")

        # The quota is each user's own.
        bobs_file = await upload(bob, bobs.agent_id, os.urandom(MIB))
        assert bobs_file.status_code == 201, bobs_file.text

        # Deleting gives the room back, and takes the bytes off the disk.
        assert len(storage.stored()) == 3
        deleted = await ann.call("DELETE", f"/api/files/{first_id}")
        assert deleted.status_code == 200, deleted.text
        assert payload(deleted) == {"success": True, "fileId": first_id}
        assert len(storage.stored()) == 2
        assert_problem(await ann.call("GET", f"/api/files/{first_id}"), 404, "File not found")
        assert_problem(await ann.call("DELETE", f"/api/files/{first_id}"), 404, "File not found")
        again = await upload(ann, anns.agent_id, second)
        assert again.status_code == 201, again.text
        assert (await files_page(ann, anns.agent_id))["total"] == 2


async def test_uploads_in_parallel_cannot_exceed_the_quota(start_server: ServerStarter) -> None:
    async with start_server(upload_max_bytes=MIB, upload_quota_bytes=MIB + MIB // 2) as server:
        ann = await People(server).join("ann@example.com")
        created = await ann.create_agent()
        storage = Storage.of(server.settings)

        arrived: list[int] = []
        both = asyncio.Event()

        async def both_started(sent: int) -> None:
            # Each upload waits, once under way, until both are (each has its .incoming file):
            # a barrier, so that neither can be stored before the other has begun.
            if sent == 256 * KIB:
                arrived.append(sent)
                await until(
                    lambda: both.is_set() or (len(arrived) == 2 and len(storage.partial()) == 2),
                    what="two uploads under way",
                )
                both.set()

        responses = await asyncio.gather(
            *(
                send_streamed(
                    ann, created.agent_id, form(file_part(os.urandom(MIB))), pause=both_started
                )
                for _ in range(2)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        stored = sum(len(data) for data in storage.stored().values())
        assert stored <= MIB + MIB // 2, (statuses, stored)
        assert statuses == [201, 413]


# -- what a body may hold ------------------------------------------------------------------------


async def test_malformed_forms_are_422_and_other_bodies_415_and_leave_nothing(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    storage = Storage.of(server.settings)
    data = os.urandom(100 * KIB)
    too_big = b'{"pad": "' + b"x" * MAX_METADATA + b'"}'
    refusals: list[tuple[bytes, str]] = [
        (form(file_part(data), metadata_part(b"{not json")), "metadata must be JSON"),
        (form(file_part(data), metadata_part([1, 2])), "metadata must be a JSON object"),
        (form(file_part(data), metadata_part(b'"text"')), "metadata must be a JSON object"),
        (form(file_part(data), metadata_part(b"\xff\xfe")), "metadata must be JSON"),
        (
            form(file_part(data), metadata_part(too_big)),
            f"metadata is larger than {MAX_METADATA} bytes",
        ),
        (
            form(metadata_part({"a": 1}), metadata_part({"b": 2}), file_part(data)),
            "Send metadata once",
        ),
        (
            form(file_part(data), part("comment", b"hello")),
            "Unknown form field: 'comment' (expected file and metadata)",
        ),
        (form(file_part(data), file_part(data, "second.bin")), "Send one file per upload"),
        (form(metadata_part({"a": 1})), "The upload needs a complete file part named 'file'"),
        (form(), "The upload needs a complete file part named 'file'"),
        # The closing boundary never comes: the file is not complete.
        (file_part(data)[:-2], "The upload needs a complete file part named 'file'"),
    ]
    for body, detail in refusals:
        assert_problem(await send(ann, created.agent_id, body), 422, detail)
        assert storage.partial() == []

    not_multipart = [
        ("application/json", b'{"file": "x"}'),
        ("application/octet-stream", data),
        ("multipart/form-data", form(file_part(data))),  # no boundary
        ("multipart/mixed; boundary=kai-test-boundary-7d1f9a", form(file_part(data))),
    ]
    for content_type, body in not_multipart:
        response = await post(ann, created.agent_id, body, content_type)
        assert_problem(response, 415, "Upload with Content-Type multipart/form-data")

    assert storage.stored() == {}
    assert storage.partial() == []
    assert (await files_page(ann, created.agent_id))["total"] == 0

    # Metadata of exactly the limit is fine, and comes back as sent.
    padding = "y" * (MAX_METADATA - len(b'{"pad":""}'))
    exact = orjson.dumps({"pad": padding})
    assert len(exact) == MAX_METADATA
    response = await send(ann, created.agent_id, form(file_part(data), metadata_part(exact)))
    assert response.status_code == 201, response.text
    assert payload(response)["metadata"] == {"pad": padding}
    # Without metadata (or with an empty part), it is an empty object.
    for body in (form(file_part(data)), form(file_part(data), metadata_part(b""))):
        response = await send(ann, created.agent_id, body)
        assert response.status_code == 201, response.text
        assert payload(response)["metadata"] == {}


MALFORMED_FRAMING: dict[str, bytes] = {
    "not multipart": b"not a multipart body at all",
    "another boundary": form(file_part(b"data")).replace(BOUNDARY.encode(), b"other-boundary"),
    "a header without a colon": form(file_part(b"data")).replace(
        b"Content-Disposition: ", b"Content-Disposition "
    ),
    "a header line of 8 KiB": form(file_part(b"data", content_type="text/" + "x" * 8 * KIB)),
    "too many headers": form(file_part(b"data")).replace(
        b"\r\n\r\n", b"\r\nX-A: 1" * 9 + b"\r\n\r\n", 1
    ),
}


async def test_a_body_that_is_not_well_formed_multipart_is_422_not_a_server_error(
    server: HubServer, people: People
) -> None:
    """The multipart parser refuses these bodies; that is the client's mistake, not the hub's."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    storage = Storage.of(server.settings)
    answers = {}
    for case, body in MALFORMED_FRAMING.items():
        response = await send(ann, created.agent_id, body)
        assert response.headers["content-type"].startswith("application/problem+json")
        answers[case] = response.status_code
        assert storage.partial() == []
    assert {case: status for case, status in answers.items() if status not in {400, 422}} == {}
    assert storage.stored() == {}


async def test_nul_characters_in_a_form_are_never_a_server_error(
    server: HubServer, people: People
) -> None:
    """What a client writes in a part reaches the database only as text PostgreSQL can hold:
    a NUL in the part's Content-Type, its file name or its metadata is kept out or refused."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    storage = Storage.of(server.settings)

    response = await upload(
        ann, created.agent_id, b"named", filename=b"a\x00b.txt", metadata={"note": "x\u0000y"}
    )
    assert response.status_code == 201, response.text
    assert payload(response)["filename"] == "ab.txt"
    assert payload(response)["metadata"] == {"note": "x\u0000y"}
    listed = (await files_page(ann, created.agent_id))["files"]
    assert listed[0]["metadata"] == {"note": "x\u0000y"}

    response = await upload(
        ann, created.agent_id, b"typed", filename="typed.txt", content_type="text/pl\x00ain"
    )
    assert response.status_code in {201, 422}, response.text
    if response.status_code == 201:
        assert "\x00" not in payload(response)["contentType"]
    assert len(storage.stored()) == (2 if response.status_code == 201 else 1)
    assert storage.partial() == []
