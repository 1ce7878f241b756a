"""Login and magic-link throttling: per account, per client address, and behind proxies."""

from __future__ import annotations

import httpx

from tests.auth.conftest import HubStarter
from tests.helpers import PASSWORD, Api, assert_problem

LOGIN = "/api/auth/login"
LIMIT = 3
WINDOW = 60


def credentials(email: str, password: str = PASSWORD) -> dict[str, object]:
    return {"credentials": {"email": email, "password": password}}


def assert_throttled(response: httpx.Response) -> None:
    assert_problem(response, 429)
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    assert response.json()["retryAfter"] == retry_after


async def test_an_account_is_throttled_from_every_address(start: HubStarter) -> None:
    async with start(auth_rate_limit=LIMIT, auth_rate_window=WINDOW) as hub:
        api = Api(hub.client)
        await api.register("ann@example.com")
        await api.register("bob@example.com")
        for i in range(LIMIT):
            async with hub.connect((f"192.0.2.{i + 1}", 1000)) as client:
                wrong = await client.post(LOGIN, json=credentials("ann@example.com", "guess it"))
                assert_problem(wrong, 401, "Authentication failed")
        async with hub.connect(("192.0.2.100", 1000)) as fresh:
            # Even the right password is refused while the account is throttled...
            assert_throttled(await fresh.post(LOGIN, json=credentials("ann@example.com")))
            assert_throttled(await fresh.post(LOGIN, json=credentials("ANN@example.com")))
            # ...but other accounts, from the same address, are not.
            assert (await fresh.post(LOGIN, json=credentials("bob@example.com"))).status_code == 200


async def test_an_address_is_throttled_across_accounts(start: HubStarter) -> None:
    async with start(auth_rate_limit=LIMIT, auth_rate_window=WINDOW) as hub:
        api = Api(hub.client)
        await api.register("ann@example.com")
        async with hub.connect(("10.0.0.1", 1234)) as attacker:
            for i in range(LIMIT):
                response = await attacker.post(LOGIN, json=credentials(f"u{i}@example.com"))
                assert_problem(response, 401, "Authentication failed")
            assert_throttled(await attacker.post(LOGIN, json=credentials("ann@example.com")))
            assert_throttled(await attacker.post(LOGIN, json=credentials("new@example.com")))
        async with hub.connect(("10.0.0.2", 1234)) as neighbour:
            assert (
                await neighbour.post(LOGIN, json=credentials("ann@example.com"))
            ).status_code == 200


async def test_forwarded_for_is_ignored_without_trusted_proxies(start: HubStarter) -> None:
    async with start(auth_rate_limit=LIMIT, auth_rate_window=WINDOW) as hub:
        async with hub.connect(("10.0.0.1", 1234)) as attacker:
            for i in range(LIMIT):
                response = await attacker.post(
                    LOGIN,
                    json=credentials(f"u{i}@example.com"),
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                )
                assert_problem(response, 401)
            spoofed = await attacker.post(
                LOGIN,
                json=credentials("other@example.com"),
                headers={"X-Forwarded-For": "203.0.113.99"},
            )
            assert_throttled(spoofed)


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(start: HubStarter) -> None:
    async with start(
        auth_rate_limit=LIMIT, auth_rate_window=WINDOW, trusted_proxies=["10.0.0.0/8"]
    ) as hub:
        async with hub.connect(("192.0.2.7", 1234)) as attacker:
            for i in range(LIMIT):
                response = await attacker.post(
                    LOGIN,
                    json=credentials(f"u{i}@example.com"),
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                )
                assert_problem(response, 401)
            spoofed = await attacker.post(
                LOGIN,
                json=credentials("other@example.com"),
                headers={"X-Forwarded-For": "203.0.113.99"},
            )
            assert_throttled(spoofed)


async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(start: HubStarter) -> None:
    async with start(
        auth_rate_limit=LIMIT, auth_rate_window=WINDOW, trusted_proxies=["10.0.0.0/8"]
    ) as hub:
        async with hub.connect(("10.0.0.1", 1234)) as proxy:
            for i in range(LIMIT):
                response = await proxy.post(
                    LOGIN,
                    json=credentials(f"u{i}@example.com"),
                    headers={"X-Forwarded-For": "203.0.113.5"},
                )
                assert_problem(response, 401)
            blocked = await proxy.post(
                LOGIN,
                json=credentials("other@example.com"),
                headers={"X-Forwarded-For": "203.0.113.5"},
            )
            assert_throttled(blocked)
            # The client cannot escape by prepending an address of its choosing: the proxy
            # appends the address it saw, and that is the one that counts.
            prepended = await proxy.post(
                LOGIN,
                json=credentials("other2@example.com"),
                headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"},
            )
            assert_throttled(prepended)
            # Another client behind the same proxy is a different address.
            other_client = await proxy.post(
                LOGIN,
                json=credentials("other3@example.com"),
                headers={"X-Forwarded-For": "203.0.113.6"},
            )
            assert_problem(other_client, 401)
            # A chain of trusted proxies is walked back to the first untrusted hop.
            chained = await proxy.post(
                LOGIN,
                json=credentials("other4@example.com"),
                headers={"X-Forwarded-For": "203.0.113.5, 10.0.0.9"},
            )
            assert_throttled(chained)


async def test_magic_links_are_throttled(start: HubStarter) -> None:
    async with start(auth_rate_limit=LIMIT, auth_rate_window=WINDOW) as hub:
        for i in range(LIMIT):
            async with hub.connect((f"192.0.2.{i + 1}", 1000)) as client:
                response = await client.post(
                    "/api/auth/magic-link", json={"email": "ann@example.com"}
                )
                assert response.status_code == 202, response.text
        async with hub.connect(("192.0.2.100", 1000)) as client:
            throttled = await client.post("/api/auth/magic-link", json={"email": "ann@example.com"})
            assert_throttled(throttled)
        async with hub.connect(("10.1.1.1", 1000)) as client:
            for i in range(LIMIT):
                response = await client.post(
                    "/api/auth/magic-link", json={"email": f"u{i}@example.com"}
                )
                assert response.status_code == 202, response.text
            throttled = await client.post("/api/auth/magic-link", json={"email": "z@example.com"})
            assert_throttled(throttled)


async def test_forwarded_for_split_over_several_header_lines_is_one_list(
    start: HubStarter,
) -> None:
    # A proxy may add its own X-Forwarded-For line below the one the client sent; the lines
    # together are one list (RFC 9110 §5.3), and the last hop is still the one that counts.
    async with start(
        auth_rate_limit=LIMIT, auth_rate_window=WINDOW, trusted_proxies=["10.0.0.0/8"]
    ) as hub:
        async with hub.connect(("10.0.0.1", 1234)) as proxy:
            for i in range(LIMIT + 1):
                response = await proxy.post(
                    LOGIN,
                    json=credentials(f"u{i}@example.com"),
                    headers=[
                        ("X-Forwarded-For", f"198.51.100.{i + 1}"),
                        ("X-Forwarded-For", "203.0.113.5"),
                    ],
                )
                if i < LIMIT:
                    assert_problem(response, 401)
                else:
                    assert_throttled(response)
