"""The composition root: build the services over a database and mount the routes.

``create_app(engine)`` gives the ASGI application; ``unveil serve`` runs it.
The lifespan starts the live machinery (snapshot hub, change listener,
leadership, event intake) and stops it in reverse, writing pending events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from unveil.core import UnveilError
from unveil.server import (
    admin,
    changes_api,
    dashboard,
    deploys_api,
    experiments_api,
    launches_api,
    metrics_api,
    ofrep,
    ops,
    promotions_api,
    releases,
    schedules_api,
    sdk,
    stale_api,
    webhooks_api,
)
from unveil.server.errors import error_response
from unveil.server.guard import Guard, Limits
from unveil.server.hub import Hub
from unveil.server.params import checked_parameters
from unveil.server.services import Admission, Metrics, Services
from unveil.service.access import AccessService
from unveil.service.audit import AuditService
from unveil.service.changes import ChangeService
from unveil.service.cluster import Cluster
from unveil.service.deploys import DeployService
from unveil.service.events import EventIntake
from unveil.service.experiments import ExperimentReports
from unveil.service.flags import FlagService
from unveil.service.jobs import JobService, Worker
from unveil.service.launches import LAUNCH_START, LAUNCH_WATCH, LaunchService
from unveil.service.meta import MetaService
from unveil.service.metrics import LAG, GuardReader, keep_windows
from unveil.service.outbox import prune_outbox
from unveil.service.prometheus import PrometheusSource
from unveil.service.promotions import PromotionService
from unveil.service.releases import RELEASE_TICK, ReleaseService
from unveil.service.schedules import SCHEDULE_RUN, ScheduleService
from unveil.service.sessions import SessionService
from unveil.service.stale import STALE_CHECK, StaleService
from unveil.service.templates import TemplateService
from unveil.service.webhooks import ATTEMPT_DEADLINE, Deliverer, RetryPolicy, WebhookService
from unveil.store.deploys import latest_references
from unveil.store.events import EventCounts
from unveil.store.link import link_for
from unveil.store.unit import Store

__all__ = ["create_app"]

#: How often a node records that it is alive.
HEARTBEAT_SECONDS = 5.0
#: OFREP evaluations served at once (per application) before answering 429.
OFREP_IN_FLIGHT = 256

log = logging.getLogger("unveil.server")


def build_services(
    engine: Engine,
    node: str | None = None,
    heartbeat_seconds: float = 15.0,
    check_seconds: float = 5.0,
    events_memory: int = 64 << 20,
    events_series: int = 10_000,
    worker_interval: float = 1.0,
    release_tick: float = 5.0,
    prometheus_url: str | None = None,
    metrics_lag: int = LAG,
    webhook_retry_base: float = 10.0,
    webhook_give_up: float = 86_400.0,
    stale_check_seconds: float = 3600.0,
    webhook_deadline: float = ATTEMPT_DEADLINE,
) -> Services:
    """The services of one server process over one database."""
    store = Store(engine)
    flags = FlagService(store)
    access = AccessService(store)
    metrics = Metrics.create()
    hub = Hub(
        flags,
        lambda _n, seconds: metrics.propagation.observe(seconds),
        check_seconds,
        tokens_alive=access.tokens_alive,
    )
    store.after_commit.append(hub.changed_here)
    access.revoked.append(hub.revoked)
    cluster = Cluster(store, node)
    jobs = JobService(store, cluster.node)
    jobs.register_recurring("nodes.forget_stale", timedelta(seconds=30), cluster.forget_stale)
    jobs.register_recurring("outbox.prune", timedelta(hours=1), prune_outbox)
    counts = EventCounts(engine)
    jobs.register_recurring(
        "metrics.keep", timedelta(minutes=10), lambda _unit: keep_windows(counts)
    )
    prometheus = PrometheusSource(prometheus_url) if prometheus_url else None
    releases = ReleaseService(
        store,
        flags,
        jobs,
        GuardReader(counts, prometheus, lag=metrics_lag),
        timedelta(seconds=release_tick),
        experiments=ExperimentReports(counts),
    )
    jobs.register(RELEASE_TICK, releases.handler())
    jobs.register_recurring("releases.keep_ticking", timedelta(minutes=1), releases.keep_ticking)
    promotions = PromotionService(store, flags)
    schedules = ScheduleService(store, flags, releases, promotions=promotions)
    jobs.register(SCHEDULE_RUN, schedules.handler())
    changes = ChangeService(store, flags, releases, schedules, promotions=promotions)
    templates = TemplateService(store)
    launches = LaunchService(
        store, flags, releases, templates, jobs, changes, timedelta(seconds=release_tick)
    )
    jobs.register(LAUNCH_START, launches.start_handler())
    jobs.register(LAUNCH_WATCH, launches.watch_handler())
    link = link_for(store, cluster.node, hub.changed, worker_interval)
    retry = RetryPolicy(webhook_retry_base, give_up_after=timedelta(seconds=webhook_give_up))
    webhooks = WebhookService(store, retry, webhook_deadline, metrics.webhook_latency.observe)
    jobs.register_recurring("webhooks.prune", timedelta(hours=1), webhooks.prune)
    deliverer = Deliverer(webhooks, link, cluster.node, worker_interval)
    stale = StaleService(store, counts, deployed=latest_references)
    jobs.register_recurring(STALE_CHECK, timedelta(seconds=stale_check_seconds), stale.check)
    store.after_commit.append(deliverer.wake)
    sessions = SessionService(store)
    jobs.register_recurring("sessions.forget", timedelta(hours=1), sessions.forget_old)
    built = Services(
        store=store,
        flags=flags,
        access=access,
        audit=AuditService(store),
        meta=MetaService(store),
        jobs=jobs,
        hub=hub,
        intake=EventIntake(counts, events_memory, events_series),
        cluster=cluster,
        link=link,
        worker=Worker(jobs, link, worker_interval, lambda: cluster.heartbeat(True)),
        metrics=metrics,
        heartbeat_seconds=heartbeat_seconds,
        ofrep=Admission(OFREP_IN_FLIGHT),
        releases=releases,
        schedules=schedules,
        changes=changes,
        webhooks=webhooks,
        deliverer=deliverer,
        sessions=sessions,
        promotions=promotions,
        templates=templates,
        launches=launches,
        stale=stale,
        deploys=DeployService(store, flags),
    )
    metrics.watch(built)
    return built


def create_app(engine: Engine, limits: Limits | None = None, **options: Any) -> FastAPI:
    """The application over one database (options: see ``build_services``).

    ``limits`` bounds request bodies per kind of route (see ``Limits``).
    """
    svc = build_services(engine, **options)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.hub.start()
        svc.link.start()
        svc.worker.start()
        svc.intake.start()
        svc.deliverer.start()

        async def report_alive() -> None:
            while True:
                try:
                    await run_in_threadpool(svc.cluster.heartbeat, svc.link.leading.is_set())
                except Exception:  # the database may be away for a moment
                    log.warning("node heartbeat failed", exc_info=True)
                await asyncio.sleep(HEARTBEAT_SECONDS)

        alive = asyncio.create_task(report_alive())
        try:
            yield
        finally:
            alive.cancel()
            svc.deliverer.stop()
            svc.intake.stop()
            svc.worker.stop()
            svc.link.stop()
            svc.hub.stop()

    app = FastAPI(
        title="unveil",
        version="1",
        description="Flags, their live delivery to SDKs, and the audit trail of every change.",
        lifespan=lifespan,
    )
    app.state.services = svc
    app.add_middleware(GZipMiddleware, minimum_size=sdk.GZIP_MINIMUM)
    app.add_middleware(sdk.SnapshotShortcut)  # prepared bytes, behind the guard

    app.add_middleware(Guard, services=svc, limits=limits)  # outermost: before any body is read

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"path": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "malformed request", "problems": problems}, 400)

    async def refused(request: Request, exc: Exception) -> Response:
        if dashboard.is_dashboard_page(request.url.path):
            return dashboard.error_page(request, exc)
        return error_response(exc)

    app.add_exception_handler(UnveilError, refused)
    # The database away is an answer (503), not a failure of the server: handled here it
    # is sent like any refusal. Left to the catch-all below it would be sent and then
    # raised again, and the server closes a connection whose answer raised.
    app.add_exception_handler(OperationalError, refused)
    app.add_exception_handler(Exception, refused)  # the unexpected: 500, logged, no details

    checked = [Depends(checked_parameters)]  # every parameter of every route, as text
    routers = [ops.router, admin.router, releases.router, schedules_api.router, changes_api.router]
    routers += [metrics_api.router, experiments_api.router, sdk.router, webhooks_api.router]
    routers += [promotions_api.router, launches_api.router, deploys_api.router, stale_api.router]
    for router in [*routers, ofrep.router]:
        app.include_router(router, dependencies=checked)
    app.include_router(dashboard.router, dependencies=checked)
    app.mount("/static", StaticFiles(directory=str(files("unveil.server.dashboard") / "static")))
    return app
