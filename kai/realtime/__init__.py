"""Real time: the per-agent event log, the broker (in process or Redis), client sockets."""
