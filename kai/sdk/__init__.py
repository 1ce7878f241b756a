"""kai's SDKs. ``kai.sdk.Agent`` writes an agent in a few lines; see docs/writing-agents.md."""

from kai.sdk.agent import Agent, AgentStopped, CommandContext, FileInfo, TaskContext

__all__ = ["Agent", "AgentStopped", "CommandContext", "FileInfo", "TaskContext"]
