"""The web console: static files served by the hub, talking to it only through the public API."""
