"""What the routes use, built once per application."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine

from unveil.server.hub import Hub
from unveil.service.access import AccessService
from unveil.service.cluster import Cluster
from unveil.service.events import EventIntake
from unveil.service.flags import FlagService
from unveil.service.meta import MetaService
from unveil.store.changes import ChangeListener
from unveil.store.leadership import Leadership

__all__ = ["Metrics", "Services", "services"]


@dataclass
class Metrics:
    """The Prometheus series of one application (its own registry)."""

    registry: CollectorRegistry
    requests: Counter
    propagation: Histogram

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter(
                "unveil_http_requests",
                "HTTP requests answered, by route and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            Histogram(
                "unveil_propagation_seconds",
                "From noticing a change to handing its patch to every stream client",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                registry=registry,
            ),
        )

    def watch(self, services: Services) -> None:
        Gauge(
            "unveil_stream_clients", "Connected stream clients", registry=self.registry
        ).set_function(services.hub.subscriber_count)
        Gauge(
            "unveil_events_queue_depth", "Event batches waiting", registry=self.registry
        ).set_function(services.intake.depth)
        Gauge(
            "unveil_events_refused", "Event batches refused as overload", registry=self.registry
        ).set_function(lambda: services.intake.dropped)
        Gauge(
            "unveil_worker_leading", "1 on the node doing background work", registry=self.registry
        ).set_function(lambda: float(services.leadership.leading.is_set()))


@dataclass
class Services:
    """The use cases and the live machinery of one server process."""

    engine: Engine
    flags: FlagService
    access: AccessService
    meta: MetaService
    hub: Hub
    intake: EventIntake
    cluster: Cluster
    leadership: Leadership
    listener: ChangeListener
    metrics: Metrics
    heartbeat_seconds: float


def services(request: Request) -> Services:
    """The application's services, for a route."""
    found: Services = request.app.state.services
    return found
