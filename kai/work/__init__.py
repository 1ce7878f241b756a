"""Work sent to agents: commands now; tasks, prompt streams and uploads to come."""
