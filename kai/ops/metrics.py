"""Prometheus metrics: ``GET /metrics``.

Hot paths (an event published, a message sent to a client) only add to plain integers in
``COUNTS``; the collector turns them into metric families when Prometheus scrapes. HTTP
requests are counted and timed by ``HttpMetrics``, an ASGI middleware, by route template (never
by raw path, so ids do not multiply the series). The database-backed gauges (agents online,
tasks by status) are read once per scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kai.kit.counters import COUNTS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


# The plain totals: metric name, help, and the attribute of ``Counts`` it reads.
TOTALS = (
    ("kai_events_published", "Events numbered into agents' event logs", "events_published"),
    ("kai_events_delivered", "Messages sent to client WebSockets", "events_delivered"),
    ("kai_events_dropped", "Events dropped for slow clients (closed 4008)", "events_dropped"),
    ("kai_database_errors", "Requests and writes that failed in the database", "database_errors"),
    ("kai_broker_errors", "Operations that failed in the broker (Redis)", "broker_errors"),
    (
        "kai_agent_logs_dropped",
        "Agent log records dropped over the agent's quota",
        "agent_logs_dropped",
    ),
    (
        "kai_audit_attempts_counted",
        "Failed anonymous attempts counted into a flood's audit entry instead of a row each",
        "audit_attempts_counted",
    ),
)


@dataclass
class Snapshot:
    """What a scrape read from the hub just before the metrics were written."""

    client_connections: int = 0
    agent_connections: int = 0
    agents_by_status: dict[str, int] = field(default_factory=dict)
    tasks_by_status: dict[str, int] = field(default_factory=dict)


class KaiCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        counts, now = COUNTS, self.snapshot
        for name, help_text, attribute in TOTALS:
            yield CounterMetricFamily(name, help_text, value=getattr(counts, attribute))
        commands = CounterMetricFamily("kai_commands", "Commands by outcome", labels=["outcome"])
        for outcome, value in sorted(counts.commands.items()):
            commands.add_metric([outcome], value)
        yield commands
        tasks = CounterMetricFamily(
            "kai_tasks_ended", "Tasks that ended, by status", labels=["status"]
        )
        for status, value in sorted(counts.tasks.items()):
            tasks.add_metric([status], value)
        yield tasks
        peers = CounterMetricFamily(
            "kai_peer_requests",
            "Requests agents made of their peers and teams, by kind and outcome",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), value in sorted(counts.peer_requests.items()):
            peers.add_metric([kind, outcome], value)
        yield peers
        refused = CounterMetricFamily(
            "kai_connections_refused",
            "Connections the server refused or closed before the app saw them, by reason",
            labels=["reason"],
        )
        for reason, value in sorted(counts.connections_refused.items()):
            refused.add_metric([reason], value)
        yield refused
        sockets = GaugeMetricFamily(
            "kai_websocket_connections", "Open WebSockets on this node", labels=["kind"]
        )
        sockets.add_metric(["client"], now.client_connections)
        sockets.add_metric(["agent"], now.agent_connections)
        yield sockets
        agents = GaugeMetricFamily("kai_agents", "Agents by status (all nodes)", labels=["status"])
        for status, value in sorted(now.agents_by_status.items()):
            agents.add_metric([status], value)
        yield agents
        queue = GaugeMetricFamily("kai_tasks", "Tasks by status (all nodes)", labels=["status"])
        for status, value in sorted(now.tasks_by_status.items()):
            queue.add_metric([status], value)
        yield queue


class Metrics:
    """One app's registry: its HTTP metrics and the collector of everything else."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kai_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kai_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.collector = KaiCollector()
        self.registry.register(self.collector)


class HttpMetrics:
    """Counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
