"""Multi-agent coordination: teams of agents, grants between them, and team channels."""
