"""kai's SDKs. ``kai.sdk.Agent`` writes an agent in a few lines; see docs/writing-agents.md."""

from kai.sdk.agent import Agent, AgentStopped, CommandContext, FileInfo, TaskContext
from kai.sdk.peers import Peer, PeerError, Subtask, SubtaskFailed, Team

__all__ = [
    "Agent",
    "AgentStopped",
    "CommandContext",
    "FileInfo",
    "Peer",
    "PeerError",
    "Subtask",
    "SubtaskFailed",
    "TaskContext",
    "Team",
]
