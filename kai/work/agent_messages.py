"""What agents send about work: command results, task progress and results, stream chunks;
and what an agent's coming and going means for its work."""

from __future__ import annotations

from dataclasses import dataclass

from kai.agents.live import LiveAgent
from kai.agents.messages import AgentMessages
from kai.protocol.agent import CommandResult, StreamChunk, StreamEnd, TaskProgress, TaskResult
from kai.work.commands import Commands
from kai.work.streams import Streams
from kai.work.tasks import Tasks


@dataclass(frozen=True, slots=True)
class AgentWork:
    commands: Commands
    tasks: Tasks
    streams: Streams

    def register(self, messages: AgentMessages) -> None:
        messages.handle(CommandResult, self.command_result)
        messages.handle(TaskProgress, self.task_progress)
        messages.handle(TaskResult, self.task_result)
        messages.handle(StreamChunk, self.stream_chunk)
        messages.handle(StreamEnd, self.stream_end)
        messages.on_ready(self.wake)
        messages.on_renewed(self.renew)
        messages.on_left(self.end_streams)

    async def command_result(self, live: LiveAgent, message: CommandResult) -> None:
        await self.commands.answered(live.agent_id, message)

    async def task_progress(self, live: LiveAgent, message: TaskProgress) -> None:
        await self.tasks.progressed(live.agent_id, live.connection_id, message)

    async def task_result(self, live: LiveAgent, message: TaskResult) -> None:
        await self.tasks.finished(live.agent_id, message)

    async def stream_chunk(self, live: LiveAgent, message: StreamChunk) -> None:
        refused = await self.streams.chunk(live.agent_id, message)
        if refused is not None:
            await live.send({"type": "error", "error": refused, "streamId": message.stream_id})

    async def stream_end(self, live: LiveAgent, message: StreamEnd) -> None:
        refused = await self.streams.ended(live.agent_id, message)
        if refused is not None:
            await live.send({"type": "error", "error": refused, "streamId": message.stream_id})

    async def wake(self, live: LiveAgent) -> None:
        """A ready agent that takes tasks gets what waits for it."""
        if live.task_types:
            await self.tasks.wake(live.agent_id)

    async def renew(self, live: LiveAgent) -> None:
        """A heartbeat renews the leases of the tasks the agent runs."""
        if live.task_types:
            await self.tasks.renew(live.agent_id, live.connection_id)

    async def end_streams(self, live: LiveAgent, ours: bool) -> None:
        """An agent gone from this node ends the streams it was producing."""
        if ours:
            await self.streams.agent_left(live.agent_id)
