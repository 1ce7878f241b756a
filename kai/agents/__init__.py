"""Agents: the registry, the agent connection, logs, restart, delete and backup."""
