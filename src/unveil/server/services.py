"""What the routes use, built once per application."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from unveil.server.hub import Hub
from unveil.service.access import AccessService
from unveil.service.audit import AuditService
from unveil.service.cluster import Cluster
from unveil.service.events import EventIntake
from unveil.service.flags import FlagService
from unveil.service.jobs import JobService, Worker
from unveil.service.meta import MetaService
from unveil.store.link import FileLink, PostgresLink
from unveil.store.unit import Store

__all__ = ["Admission", "Metrics", "Services", "services"]


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
        def gauge(name: str, text: str, read: object) -> None:
            Gauge(name, text, registry=self.registry).set_function(read)  # type: ignore[arg-type]

        hub, intake = services.hub, services.intake
        gauge("unveil_stream_clients", "Connected stream clients", hub.subscriber_count)
        gauge(
            "unveil_stream_cut_off",
            "Streams ended because their client fell behind (it resyncs on reconnect)",
            lambda: hub.cut_off,
        )
        gauge(
            "unveil_stream_revoked",
            "Streams ended because their SDK key was revoked",
            lambda: hub.revoked_streams,
        )
        gauge(
            "unveil_events_pending_bytes",
            "Bytes of event counts held in memory, not yet written",
            intake.pending_bytes,
        )
        gauge(
            "unveil_events_refused",
            "Event batches refused with 429 (memory bound or too many new series)",
            lambda: intake.refused,
        )
        gauge(
            "unveil_events_rejected_rows",
            "Count rows the database refused, dropped",
            lambda: intake.rejected_rows,
        )
        gauge(
            "unveil_events_lost",
            "Acknowledged events not written: the database stayed away at stop",
            lambda: intake.lost_events,
        )
        gauge(
            "unveil_worker_leading",
            "1 on the node doing background work",
            lambda: float(services.link.leading.is_set()),
        )
        gauge("unveil_jobs_ran", "Jobs run to their finish here", lambda: services.jobs.ran)
        gauge("unveil_jobs_failed", "Job attempts that failed here", lambda: services.jobs.failed)
        gauge(
            "unveil_jobs_fenced",
            "Job attempts whose effect was refused: another leader had taken the job over",
            lambda: services.jobs.fenced,
        )


@dataclass
class Admission:
    """How many requests of a kind are being served at once, per application."""

    limit: int
    in_flight: int = field(default=0)


@dataclass
class Services:
    """The use cases and the live machinery of one server process."""

    store: Store
    flags: FlagService
    access: AccessService
    audit: AuditService
    meta: MetaService
    jobs: JobService
    hub: Hub
    intake: EventIntake
    cluster: Cluster
    link: PostgresLink | FileLink
    worker: Worker
    metrics: Metrics
    heartbeat_seconds: float
    ofrep: Admission


def services(request: Request) -> Services:
    """The application's services, for a route."""
    found: Services = request.app.state.services
    return found
