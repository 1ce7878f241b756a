"""The password policy (NIST SP 800-63B): length, blank, repetition, common passwords, the
address itself; each refusal a 422 naming its rule."""

from __future__ import annotations

import httpx
import pytest

from kai.auth.passwords import MAX_LENGTH, check_password, common_passwords
from tests.auth.conftest import HubStarter
from tests.helpers import assert_problem

EMAIL = "ann.lee@example.com"


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("password", "common"),
        ("12345678", "common"),
        ("PassWord1", "common"),  # case does not matter
        ("  qwertyuiop ", "common"),
        (" " * 8, "blank"),
        ("\t" * 12, "blank"),
        ("a" * 12, "repetitive"),
        ("ann.lee@example.com", "contains_email"),
        ("my ANN.LEE@example.com pass", "contains_email"),
        ("ann.lee", "too_short"),
        ("x" * (MAX_LENGTH + 1), "too_long"),
    ],
)
def test_the_policy_names_the_rule(password: str, rule: str) -> None:
    rejected = check_password(password, email=EMAIL, min_length=8)
    assert rejected is not None
    assert rejected.rule == rule


@pytest.mark.parametrize(
    "password",
    ["correct horse battery", "eight888", "Tr0ub4dor&3", "ann lee's piano", "€" * 2 + "ok ok ok"],
)
def test_the_policy_takes_ordinary_passwords(password: str) -> None:
    assert check_password(password, email=EMAIL, min_length=8) is None


def test_the_shipped_list() -> None:
    common = common_passwords()
    assert {"password", "12345678", "iloveyou", "qwertyuiop"} <= common
    assert len(common) > 8000
    assert all(len(p) >= 8 for p in common)
    assert "" not in common


def test_the_minimum_is_a_setting() -> None:
    assert check_password("fourteen chars", email=EMAIL, min_length=15) is not None
    assert check_password("fifteen chars!!", email=EMAIL, min_length=15) is None


async def register(client: httpx.AsyncClient, password: str) -> httpx.Response:
    return await client.post(
        "/api/auth/register", json={"userData": {"email": EMAIL, "password": password}}
    )


@pytest.mark.parametrize(
    ("password", "rule", "detail"),
    [
        ("password", "common", "Password is on the list of commonly used passwords"),
        ("12345678", "common", "Password is on the list of commonly used passwords"),
        (" " * 8, "blank", "Password must not be only spaces"),
        (EMAIL, "contains_email", "Password must not contain the email address"),
    ],
)
async def test_register_refuses_with_the_rule(
    client: httpx.AsyncClient, password: str, rule: str, detail: str
) -> None:
    response = await register(client, password)
    assert_problem(response, 422, detail)
    assert response.json()["errors"] == [
        {"field": "userData.password", "message": detail, "rule": rule}
    ]
    # Nothing was created: the address is still free.
    assert (await register(client, "correct horse battery")).status_code == 201


async def test_a_longer_minimum_applies_to_registration(start: HubStarter) -> None:
    async with start(password_min_length=15) as hub:
        short = await register(hub.client, "fourteen chars")
        assert_problem(short, 422, "Password must be at least 15 characters")
        assert short.json()["errors"][0]["rule"] == "too_short"
        assert (await register(hub.client, "fifteen chars!!")).status_code == 201
