"""The nodes' control messages: the same JSON on the broker as before they were typed, parsed
once per message and handed only to the handlers of their class."""

from __future__ import annotations

from typing import Any

import pytest

from kai.kit.wiring import Wiring, control_dispatcher
from kai.protocol.control import AgentClose, AgentSend, ConfigChanged, FeedsRecheck, Kick


def test_the_wire_is_what_nodes_of_the_last_release_send_and_read() -> None:
    assert Kick(user_id="u1", code=4003, reason="Access revoked").wire() == {
        "op": "kick",
        "userId": "u1",
        "code": 4003,
        "reason": "Access revoked",
    }
    assert AgentSend(agent_id="a1", message={"type": "cancel", "id": "t1"}).wire() == {
        "op": "agent_send",
        "agentId": "a1",
        "message": {"type": "cancel", "id": "t1"},
        "restart": False,
    }
    assert FeedsRecheck(owner_id="o1").wire() == {"op": "feeds_recheck", "ownerId": "o1"}
    assert ConfigChanged().wire() == {"op": "config_changed"}


async def test_each_message_reaches_the_handlers_of_its_class_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wiring = Wiring()
    heard: list[Any] = []

    async def closes(message: AgentClose) -> None:
        heard.append(("close", message))

    async def kicks(message: Kick) -> None:
        heard.append(("kick", message))

    wiring.on_control(AgentClose, closes)
    wiring.on_control(Kick, kicks)
    dispatch = control_dispatcher(wiring.controls)

    await dispatch({"op": "agent_close", "ownerId": "o1", "code": 4006, "reason": "Owner gone"})
    await dispatch({"op": "kick", "agentId": "team:t1", "code": 4004})  # an older node's kick
    await dispatch({"op": "something_newer", "x": 1})  # a newer node's: left alone
    await dispatch({"op": "agent_send", "agentId": "a1"})  # malformed: dropped, said so
    await dispatch({"op": "config_changed"})  # nobody here listens: nothing happens

    assert heard == [
        ("close", AgentClose(owner_id="o1", code=4006, reason="Owner gone")),
        ("kick", Kick(agent_id="team:t1", code=4004)),
    ]
    assert "malformed agent_send" in caplog.text
