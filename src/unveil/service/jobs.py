"""Background work: jobs that run on the leader, each effect written at most once.

Schedules, release steps, webhook deliveries, traffic changes and the
clean-ups are all jobs. The worker of the node that leads (see
``unveil.store.link``) claims due jobs under its leadership's epoch and runs
each in one unit of work: the job's effect (a flag change, a release step)
and the job's finish are written in the same transaction, and the finish is
a compare-and-set on the job as claimed and on the epoch. A node that lost
the lead mid-job (its connection dropped, another node took over and
re-claimed the job) finds its finish matching nothing; its effect is rolled
back with it. So even two leaders at once cannot apply a job twice.

A handler that raises a refusal of ours (``UnveilError``: the change is no
longer valid) fails the job at once; any other error is retried with a
growing delay, a few times, then the job fails. Failures are kept with
their error for people to read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from unveil.core import UnveilError
from unveil.service.errors import Fenced, NotFound
from unveil.store.jobs import Job
from unveil.store.unit import Store, UnitOfWork

__all__ = ["Again", "Handler", "JobService", "Worker"]

log = logging.getLogger("unveil.service.jobs")

#: Attempts before a job that keeps failing is given up.
MAX_ATTEMPTS = 5
_MAX_RETRY_DELAY = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Again:
    """A handler's answer: run this job again at ``at`` (recurring work)."""

    at: datetime


Handler = Callable[[Job, UnitOfWork], Again | None]


class _Leading(Protocol):
    leading: threading.Event
    epoch: int | None


class JobService:
    """Enqueueing jobs, and running the due ones for a leadership epoch."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self._handlers: dict[str, Handler] = {}
        self._recurring: dict[str, timedelta] = {}
        self.ran = 0
        self.failed = 0
        self.fenced = 0
        #: called after a job is enqueued on this node (the worker wakes up)
        self.on_enqueue: Callable[[], None] | None = None

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def register_recurring(
        self, kind: str, every: timedelta, work: Callable[[UnitOfWork], object]
    ) -> None:
        """Work the leader does every so often; one job of the kind at a time."""

        def handler(_job: Job, unit: UnitOfWork) -> Again:
            work(unit)
            return Again(datetime.now(UTC) + every)

        self._handlers[kind] = handler
        self._recurring[kind] = every

    def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any],
        run_at: datetime | None = None,
        key: str | None = None,
        within: UnitOfWork | None = None,
    ) -> int | None:
        """A new job; None if an unfinished job already holds ``key``."""
        if kind not in self._handlers:
            raise NotFound(f"no job kind '{kind}'")
        now = datetime.now(UTC)
        with self.store.unit_of_work(within) as work:
            job_id = work.jobs.add(kind, dict(payload), run_at or now, now, key)
        if job_id is not None and self.on_enqueue is not None:
            self.on_enqueue()
        return job_id

    def get(self, job_id: int) -> Job:
        with self.store.reading() as r:
            found = r.jobs.get(job_id)
        if found is None:
            raise NotFound(f"no job {job_id}")
        return found

    def ensure_recurring(self) -> None:
        """Every recurring kind has its one job (the leader calls this as it starts)."""
        now = datetime.now(UTC)
        with self.store.unit_of_work() as work:
            for kind in self._recurring:
                work.jobs.add(kind, {}, now, now, key=f"recurring:{kind}")

    def run_due(self, epoch: int, limit: int = 20) -> int:
        """Claim and run what is due under ``epoch``; how many ran to their finish."""
        now = datetime.now(UTC)
        with self.store.unit_of_work() as work:
            claimed = work.jobs.claim(now, self.node, epoch, limit)
        return sum(self._run(job) for job in claimed)

    def _run(self, job: Job) -> bool:
        handler = self._handlers.get(job.kind)
        try:
            with self.store.unit_of_work() as work:
                if handler is None:
                    raise UnveilError(f"no handler for job kind '{job.kind}' on this node")
                outcome = handler(job, work)
                again = outcome.at if isinstance(outcome, Again) else None
                if not work.jobs.finish(job, datetime.now(UTC), again):
                    raise Fenced(f"job {job.id} was taken over; its effect is not written")
        except Fenced as exc:
            self.fenced += 1
            log.warning("%s", exc)
            return False
        except Exception as exc:
            self._failed(job, exc)
            return False
        self.ran += 1
        return True

    def _failed(self, job: Job, exc: Exception) -> None:
        self.failed += 1
        final = isinstance(exc, UnveilError) or job.attempts >= MAX_ATTEMPTS
        delay = min(timedelta(seconds=2**job.attempts), _MAX_RETRY_DELAY)
        now = datetime.now(UTC)
        if final:
            log.error("job %s (%s) failed: %s", job.id, job.kind, exc)
        else:
            log.warning("job %s (%s) failed, retrying in %s: %s", job.id, job.kind, delay, exc)
        try:
            with self.store.unit_of_work() as work:
                work.jobs.fail(
                    job, now, f"{type(exc).__name__}: {exc}", None if final else now + delay
                )
        except Exception:  # the database is away: the claim stays, the next leader retries
            log.exception("recording the failure of job %s failed", job.id)


class Worker:
    """The thread that runs jobs while this node leads."""

    def __init__(
        self,
        jobs: JobService,
        link: _Leading,
        interval: float = 1.0,
        on_lead: Callable[[], object] | None = None,
    ) -> None:
        self._jobs = jobs
        #: told once per leadership, before any job runs (the node records that it leads)
        self._on_lead = on_lead
        self._link = link
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unveil-worker", daemon=True)
        jobs.on_enqueue = self._wake.set

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        started_epoch: int | None = None
        while not self._stop.is_set():
            epoch = self._link.epoch
            if self._link.leading.is_set() and epoch is not None:
                try:
                    if started_epoch != epoch:
                        if self._on_lead is not None:
                            self._on_lead()
                        self._jobs.ensure_recurring()
                        started_epoch = epoch
                    while self._jobs.run_due(epoch) and not self._stop.is_set():
                        pass  # more may be due right away
                except Exception:  # the database may be away for a moment
                    log.exception("running jobs failed")
            self._wake.wait(self._interval)
            self._wake.clear()
