"""The hostile tests' own fixture: a real ``kai serve`` that answers and stops cleanly."""

from __future__ import annotations

from tests.hostile.conftest import HubStarter


async def test_a_served_hub_answers_and_logs_in(start_hub: HubStarter) -> None:
    hub = start_hub()
    async with hub.client() as client:
        response = await client.get("/api/auth/session", headers=await hub.admin())
    assert response.status_code == 200
    assert response.json()["user"]["email"] == "admin@example.com"
    assert await hub.health_p50_ms(samples=5) < 1000
    hub.stop()
    assert not hub.alive()
