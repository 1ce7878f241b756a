"""Operating the hub: health, readiness, and (later) config, services and metrics."""
