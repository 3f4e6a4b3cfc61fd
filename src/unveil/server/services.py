"""What the routes use, built once per application."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from unveil.server.hub import Hub
from unveil.service.access import AccessService
from unveil.service.audit import AuditService
from unveil.service.changes import ChangeService
from unveil.service.cluster import Cluster
from unveil.service.deploys import DeployService
from unveil.service.events import EventIntake
from unveil.service.flags import FlagService
from unveil.service.jobs import JobService, Worker
from unveil.service.launches import LaunchService
from unveil.service.meta import MetaService
from unveil.service.promotions import PromotionService
from unveil.service.releases import ReleaseService
from unveil.service.schedules import ScheduleService
from unveil.service.sessions import SessionService
from unveil.service.stale import StaleService
from unveil.service.templates import TemplateService
from unveil.service.webhooks import Deliverer, WebhookService
from unveil.store.link import FileLink, PostgresLink
from unveil.store.unit import Store

__all__ = ["Admission", "Metrics", "Services", "services"]


@dataclass
class Metrics:
    """The Prometheus series of one application (its own registry)."""

    registry: CollectorRegistry
    requests: Counter
    propagation: Histogram
    webhook_latency: Histogram

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
            Histogram(
                "unveil_webhook_delivery_seconds",
                "From a change to its webhook delivery's first successful attempt (sent here)",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600),
                registry=registry,
            ),
        )

    def watch(self, services: Services) -> None:
        counts = _Counts()
        self.registry.register(counts)

        def gauge(name: str, text: str, read: object) -> None:
            Gauge(name, text, registry=self.registry).set_function(read)  # type: ignore[arg-type]

        def counter(name: str, text: str, read: Callable[[], float]) -> None:
            counts.add(name, text, read)

        hub, intake = services.hub, services.intake
        gauge("unveil_stream_clients", "Connected stream clients", hub.subscriber_count)
        counter(
            "unveil_stream_cut_off",
            "Streams ended because their client fell behind (it resyncs on reconnect)",
            lambda: hub.cut_off,
        )
        counter(
            "unveil_stream_revoked",
            "Streams ended because their SDK key was revoked",
            lambda: hub.revoked_streams,
        )
        gauge(
            "unveil_events_pending_bytes",
            "Bytes of event counts held in memory, not yet written",
            intake.pending_bytes,
        )
        counter(
            "unveil_events_refused",
            "Event batches refused with 429 (memory bound or too many new series)",
            lambda: intake.refused,
        )
        counter(
            "unveil_events_rejected_rows",
            "Count rows the database refused, dropped",
            lambda: intake.rejected_rows,
        )
        counter(
            "unveil_events_lost",
            "Acknowledged events not written: the database stayed away at stop",
            lambda: intake.lost_events,
        )
        gauge(
            "unveil_worker_leading",
            "1 on the node doing background work",
            lambda: float(services.link.leading.is_set()),
        )
        webhooks = services.webhooks
        self.registry.register(_Outcomes(webhooks.outcomes))
        gauge(
            "unveil_webhook_waiting",
            "Webhook deliveries not yet delivered nor given up, on every node",
            lambda: _or_nan(webhooks.waiting),
        )
        counter("unveil_jobs_ran", "Jobs run to their finish here", lambda: services.jobs.ran)
        counter("unveil_jobs_failed", "Job attempts that failed here", lambda: services.jobs.failed)
        counter(
            "unveil_jobs_fenced",
            "Job attempts whose effect was refused: another leader had taken the job over",
            lambda: services.jobs.fenced,
        )


class _Counts(Collector):
    """Counts that only grow, kept by the services, shown as Prometheus counters.

    (A Gauge would make ``rate()`` and resets read wrongly; the client library's
    Counter cannot read a value kept elsewhere, so this collector does.)
    Each is exposed with the ``_total`` suffix.
    """

    def __init__(self) -> None:
        self._reads: list[tuple[str, str, Callable[[], float]]] = []

    def add(self, name: str, text: str, read: Callable[[], float]) -> None:
        self._reads.append((name, text, read))

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, text, read in self._reads:
            yield CounterMetricFamily(name, text, value=float(read()))


class _Outcomes(Collector):
    """Webhook attempts recorded here, by outcome, as one labelled counter."""

    def __init__(self, outcomes: dict[str, int]) -> None:
        self._outcomes = outcomes

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "unveil_webhook_attempts",
            "Webhook attempts sent here, by outcome: delivered, failed (tried again), given_up",
            labels=["outcome"],
        )
        for outcome, count in list(self._outcomes.items()):
            family.add_metric([outcome], float(count))
        yield family


def _or_nan(read: Callable[[], int]) -> float:
    """A figure read from the database, or NaN while it is away (a scrape never fails)."""
    try:
        return float(read())
    except Exception:
        return float("nan")


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
    releases: ReleaseService
    schedules: ScheduleService
    changes: ChangeService
    webhooks: WebhookService
    deliverer: Deliverer
    sessions: SessionService
    promotions: PromotionService
    templates: TemplateService
    launches: LaunchService
    stale: StaleService
    deploys: DeployService


async def services(request: Request) -> Services:
    """The application's services, for a route.

    A coroutine: FastAPI would run a plain function in its thread pool, a hand-off on
    every request for one attribute read (tests/test_route_dependencies.py).
    """
    found: Services = request.app.state.services
    return found
