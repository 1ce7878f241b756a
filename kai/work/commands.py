"""Commands: request and response with a deadline, routed to whichever node holds the agent.

The node that took the request waits for the answer. The agent's node hands the answer back
to it (directly, or through the broker). An answer after the deadline finds nobody waiting and
is dropped: it can never reach another caller, whose command has another id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert

from kai.agents.live import LiveAgents
from kai.agents.relay import Relay
from kai.agents.service import Registry, Viewer, effective_status
from kai.db import Database, new_id
from kai.errors import BadRequest, Conflict, GatewayTimeout
from kai.kit.batch import BatchWriter
from kai.kit.counters import COUNTS
from kai.protocol.agent import CommandResult
from kai.protocol.control import CommandAnswer
from kai.protocol.states import AgentStatus, CommandStatus
from kai.realtime.broker import Broker
from kai.work.models import Command

log = logging.getLogger("kai.work.commands")


@dataclass(frozen=True, slots=True)
class Outcome:
    command_id: str
    success: bool
    result: Any
    error: str | None
    execution_time: float  # seconds, from the hub sending it to the answer


class Commands:
    def __init__(
        self,
        db: Database,
        *,
        registry: Registry,
        relay: Relay,
        broker: Broker,
        live: LiveAgents,
        record_interval: float = 0.2,
    ) -> None:
        self.db = db
        self.registry = registry
        self.relay = relay
        self.broker = broker
        self.live = live
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}
        self._agents: dict[str, str] = {}  # command id -> agent, for the commands waited on here
        # Each command is recorded once it has ended, written behind in batches: the caller's
        # answer never waits for the database.
        self.records: BatchWriter[dict[str, Any]] = BatchWriter(
            "commands", self._write, interval=record_interval, batch_size=500
        )

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.session() as session:
            await session.execute(insert(Command), rows)

    async def _declared(self, viewer: Viewer, agent_id: str, *, checked: bool) -> list[str]:
        """The commands the connected agent declared; 409 if it is not connected. A caller
        whose access was ``checked`` already (a client socket) is not read again."""
        live = self.live.get(agent_id)
        if checked and live is not None and live.ready and not live.closing:
            return sorted(live.commands)
        async with self.db.session(write=False) as session:
            agent = await self.registry.visible(session, viewer, agent_id)
        if effective_status(agent, self.registry.clock.now()) in (
            AgentStatus.OFFLINE,
            AgentStatus.RESTARTING,
        ):
            raise Conflict("Agent is not connected")
        return list((agent.capabilities or {}).get("commands") or [])

    async def execute(
        self,
        viewer: Viewer,
        agent_id: str,
        *,
        command: str,
        parameters: dict[str, Any],
        timeout: float,
        expects_response: bool = True,
        via: str = "rest",
        command_id: str | None = None,
        checked: bool = False,
        source_agent_id: str | None = None,
    ) -> Outcome:
        """Send ``command`` to the agent and wait up to ``timeout`` seconds for its answer."""
        command_id = command_id or new_id()
        declared = await self._declared(viewer, agent_id, checked=checked)
        if command not in declared:
            raise BadRequest(
                f"Agent does not handle the command {command!r}", commands=sorted(declared)
            )
        row: dict[str, Any] = {
            "id": command_id,
            "agent_id": agent_id,
            "user_id": viewer.user_id,
            "command": command,
            "parameters": parameters,
            "via": via,
            "source_agent_id": source_agent_id,
            "created_at": self.registry.clock.now(),
        }
        waiter: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        if expects_response:
            self._waiting[command_id] = waiter
            self._agents[command_id] = agent_id
        started = time.perf_counter()
        message = {
            "type": "command",
            "commandId": command_id,
            "command": command,
            "params": parameters,
        }
        try:
            try:
                delivered = await self.relay.deliver(agent_id, message, origin=self.broker.node_id)
            except Exception:
                self._record(row, status=CommandStatus.FAILED, error="Not delivered")
                raise
            if not delivered:
                self._record(row, status=CommandStatus.FAILED, error="Agent is not connected")
                raise Conflict("Agent is not connected")
            if not expects_response:
                self._record(row, status=CommandStatus.SENT)
                return Outcome(command_id, True, None, None, time.perf_counter() - started)
            try:
                answer = await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                self._record(
                    row, status=CommandStatus.TIMEOUT, error=f"No answer within {timeout:g} s"
                )
                raise GatewayTimeout(
                    f"The agent did not answer within {timeout:g} s", commandId=command_id
                ) from None
        finally:
            self._waiting.pop(command_id, None)
            # An agent here that never answers must not leave its entry behind; a late answer
            # then resolves nothing here, and is dropped all the same.
            self.relay.reply_to.pop(command_id, None)
            self._agents.pop(command_id, None)
        elapsed = time.perf_counter() - started
        self._record(
            row,
            status=CommandStatus.SUCCEEDED if answer.success else CommandStatus.FAILED,
            result=answer.result,
            error=answer.error,
            execution_time=elapsed,
        )
        return Outcome(command_id, answer.success, answer.result, answer.error, elapsed)

    def _record(
        self,
        row: dict[str, Any],
        *,
        status: str,
        result: Any = None,
        error: str | None = None,
        execution_time: float | None = None,
    ) -> None:
        COUNTS.commands[status] += 1
        self.records.record(
            {
                **row,
                "status": status,
                "result": result,
                "error": error,
                "execution_time": execution_time,
                "completed_at": self.registry.clock.now(),
            }
        )

    # -- the agent's side ------------------------------------------------------------------

    async def answered(self, agent_id: str, answer: CommandResult) -> None:
        """An agent answered: hand the answer to the node waiting for it."""
        sent = self.relay.reply_to.get(answer.command_id)
        if sent is not None and sent[0] != agent_id:
            log.warning("agent %s answered a command sent to another agent; dropped", agent_id)
            return
        self.relay.reply_to.pop(answer.command_id, None)
        origin = sent[1] if sent is not None else self.broker.node_id
        if sent is None:
            # Not sent from here (or already given up on): only a waiter on this node may
            # still want it, and only if the command went to this very agent.
            waiter_agent = self._agents.get(answer.command_id)
            if waiter_agent != agent_id:
                log.info("answer to unknown command %s dropped", answer.command_id)
                return
        if origin == self.broker.node_id:
            self._resolve(answer)
            return
        await self.broker.send_to_node(
            origin, CommandAnswer(answer=answer.model_dump(by_alias=True)).wire()
        )

    async def on_command_answer(self, message: CommandAnswer) -> None:
        """Another node heard the agent's answer to a command whose caller waits here."""
        self._resolve(CommandResult.model_validate(message.answer))

    def _resolve(self, answer: CommandResult) -> None:
        waiter = self._waiting.get(answer.command_id)
        if waiter is None or waiter.done():
            log.info("late or unknown answer to command %s dropped", answer.command_id)
            return
        waiter.set_result(answer)
