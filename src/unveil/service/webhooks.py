"""Webhooks: subscriptions per project, and delivering the outbox to them, signed.

Every change writes an outbox row with its audit entry (``UnitOfWork.record``).
The leader's ``Deliverer`` turns each row a subscription wants into a
delivery (a row of its own, written once whatever happens next), then sends
due deliveries from a small pool of threads of its own, never from the job
runner's thread and never from a request: a receiver that is slow, hangs or
is down costs a pool thread for at most the timeouts, and no change waits
for it. Each attempt is recorded with its answer; a failed one is tried
again after an exponentially growing delay with full jitter, until a day
has passed since the change. Per subscription, only its oldest unfinished
delivery is ever sent, so a receiver sees events in the outbox's order.

Delivery is at least once: a node that dies mid-send (or a leader that lost
the lead while sending) leaves its delivery to be sent again. Receivers
dedupe by the delivery's id. docs/governance.md is the user's account.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from unveil.core import Problem
from unveil.service.errors import Conflict, Invalid, NotFound
from unveil.service.scope import require_project
from unveil.service.text import text_problem
from unveil.store import tables as t
from unveil.store.outbox import Announcement
from unveil.store.unit import Store, UnitOfWork
from unveil.store.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    Attempt,
    Claimed,
    Delivery,
    Subscription,
)

__all__ = [
    "EVENTS",
    "FORMATS",
    "Deliverer",
    "RetryPolicy",
    "WebhookService",
    "body_of",
    "events_of",
    "sign",
]

log = logging.getLogger("unveil.service.webhooks")

#: The events a subscription may ask for (docs/governance.md says when each fires).
EVENTS = (
    "flag.changed",
    "flag.switched_off",
    "release.started",
    "release.advanced",
    "release.paused",
    "release.rolled_back",
    "release.completed",
    "change.opened",
    "change.approved",
    "change.rejected",
    "schedule.applied",
    "schedule.failed",
    "launch.started",
    "launch.stopped",
    "launch.done",
    "flag.stale",
    "deploy.recorded",
    "deploy.rolled_back",
    "deploy.verified",
)
FORMATS = ("json", "slack")
#: The longest URL a subscription may have (the column's width).
MAX_URL = 2000
#: What a release decision announces; aborting is a rollback a person asked for.
_RELEASE_EVENTS = {
    "release.started": "release.started",
    "release.advanced": "release.advanced",
    "release.paused": "release.paused",
    "release.rolled_back": "release.rolled_back",
    "release.aborted": "release.rolled_back",
    "release.completed": "release.completed",
}
#: Actions that are events of the same name.
_SAME_NAME = frozenset(
    {
        "change.opened",
        "change.approved",
        "change.rejected",
        "schedule.applied",
        "schedule.failed",
        "launch.started",
        "launch.stopped",
        "launch.done",
        "deploy.recorded",
        "deploy.rolled_back",
        "deploy.verified",
    }
)
#: Actions announced under another name: the leader marking a flag stale (service/stale.py).
_RENAMED = {"stale.found": "flag.stale"}
_FLAG_ACTIONS = frozenset({"flag.create", "flag.update", "flag.delete"})

#: Sending: short timeouts, so that a dead receiver holds a pool thread briefly.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
#: A whole attempt's longest time: a receiver that drips its answer a byte at a time
#: (each read within READ_TIMEOUT) is cut off here, not allowed to hold a sender for ever.
ATTEMPT_DEADLINE = 30.0
#: Threads that send; per subscription one delivery is in flight at a time.
SENDERS = 8
#: How long a claimed delivery is its sender's before another node may send it again.
LEASE = timedelta(seconds=60)
#: Finished deliveries are kept this long for people to read.
DELIVERY_RETENTION = timedelta(days=7)


def _disabled(flag: Any) -> bool:
    return isinstance(flag, Mapping) and flag.get("enabled", True) is False


def events_of(action: str, before: Any, after: Any) -> tuple[str, ...]:
    """The events one audited change is, the most specific first (none: not announced).

    A flag's change is ``flag.changed``; one that turns an enabled flag off
    (``enabled: false`` where it was not) is also ``flag.switched_off``. A
    whole-document apply is a flag change, and a switch-off if it turns any
    flag that was there off.
    """
    if action in _FLAG_ACTIONS:
        if action == "flag.update" and _disabled(after) and not _disabled(before):
            return ("flag.switched_off", "flag.changed")
        return ("flag.changed",)
    if action == "document.apply":
        old = before.get("flags", {}) if isinstance(before, Mapping) else {}
        new = after.get("flags", {}) if isinstance(after, Mapping) else {}
        if any(_disabled(new.get(k)) and not _disabled(v) for k, v in old.items()):
            return ("flag.switched_off", "flag.changed")
        return ("flag.changed",)
    if action in _RELEASE_EVENTS:
        return (_RELEASE_EVENTS[action],)
    if action in _SAME_NAME:
        return (action,)
    if action in _RENAMED:
        return (_RENAMED[action],)
    return ()


def body_of(delivery_id: int, payload: Mapping[str, Any]) -> bytes:
    """The body sent for a delivery: the same bytes at every attempt."""
    return json.dumps({"id": delivery_id, **payload}, separators=(",", ":")).encode()


def _slack_text(payload: Mapping[str, Any]) -> str:
    where = payload["project"] + (f"/{payload['environment']}" if payload["environment"] else "")
    text = f"[{where}] {payload['event']}: {payload['target']} by {payload['actor']}"
    if payload.get("reason"):
        text += f": {payload['reason']}"
    if isinstance(payload.get("notes"), str) and payload["notes"]:
        text += "\n" + payload["notes"]  # a launch's release notes: what the channel is for
    return text


def _slack_escaped(text: str) -> str:
    """Text Slack shows as written: ``<!channel>``, ``<@U1>`` and ``<url|label>`` in a
    reason would otherwise ping everyone or dress up a link; Slack asks for these three."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(payload: Mapping[str, Any]) -> bytes:
    """A Slack-style incoming webhook's message: one line of text (a launch's notes
    below it), none of it markup."""
    text = _slack_escaped(_slack_text(payload))
    return json.dumps({"text": text}, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Unveil-Signature`` header: HMAC-SHA256 of ``{timestamp}.{body}``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for a bounded time."""

    base: float = 10.0  # seconds: the first retry comes within this
    cap: float = 3600.0  # seconds: no wait is longer
    give_up_after: timedelta = timedelta(hours=24)

    def delay(self, attempts: int, draw: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait after ``attempts`` failed attempts: uniform in [0, base·2^(n-1)]."""
        return draw(0.0, min(self.cap, self.base * 2 ** min(attempts - 1, 40)))


# -- checking a subscription ----------------------------------------------------------------


def _url_problem(url: object) -> Problem | None:
    problem = text_problem(url, "url", MAX_URL)
    if problem is not None or not isinstance(url, str):
        return problem
    if any(c.isspace() for c in url):
        return Problem("url", "must not contain spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError as exc:
        return Problem("url", f"is not a URL: {exc}")
    if parts.scheme not in ("http", "https"):
        return Problem("url", "must be an http:// or https:// URL")
    if "@" in parts.netloc:
        return Problem("url", "must not carry a user name or password (put secrets elsewhere)")
    if parts.fragment or url.endswith("#"):
        return Problem("url", "must not have a fragment (#...): receivers never see it")
    host = parts.hostname or ""
    if not host:
        return Problem("url", "needs a host")
    if parts.port == 0:
        return Problem("url", "has port 0, which nothing listens on (1 to 65535)")
    if host.startswith("[") or ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            return Problem("url", "has a host that is not a name or an address")
    elif any(not label or len(label) > 63 for label in host.rstrip(".").split(".")):
        return Problem("url", "has a host with an empty label or one over 63 characters")
    try:  # the client that sends must be able to send to it, or every attempt would fail
        httpx.Request("POST", url)
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        return Problem("url", f"is not a URL the sender can reach: {exc}")
    return None


def _list_problems(value: object, field: str, known: tuple[str, ...] | None) -> list[Problem]:
    if not isinstance(value, list):
        return [Problem(field, "must be a list")]
    if not value:
        return [Problem(field, "must name at least one")]
    problems = []
    for i, item in enumerate(value):
        problem = text_problem(item, f"{field}[{i}]", 200)
        if problem is not None:
            problems.append(problem)
        elif known is not None and item not in known:
            problems.append(
                Problem(
                    f"{field}[{i}]", f"unknown {field[:-1]} '{item}'; known: {', '.join(known)}"
                )
            )
    return problems


def _utc(value: datetime | None) -> str | None:
    return None if value is None else t.utc_text(value)


def _subscription_data(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "environments": None if sub.environments is None else list(sub.environments),
        "format": sub.format,
        "created_by": sub.created_by,
        "created_at": _utc(sub.created_at),
    }


def _delivery_data(delivery: Delivery, attempts: list[Attempt]) -> dict[str, Any]:
    finished = delivery.state in (DELIVERED, FAILED)
    return {
        "id": delivery.id,
        "event": delivery.event,
        "state": delivery.state,
        "outbox_id": delivery.outbox_id,
        "audit_id": delivery.audit_id,
        "created_at": _utc(delivery.created_at),
        "delivered_at": _utc(delivery.delivered_at),
        "next_attempt_at": None if finished else _utc(delivery.next_at),
        "give_up_at": _utc(delivery.give_up_at),
        "body": json.loads(body_of(delivery.id, delivery.payload)),
        "attempts": [
            {
                "number": a.number,
                "at": _utc(a.at),
                "status": a.status,
                "error": a.error,
                "duration_ms": round(a.duration_ms, 1),
                "node": a.node,
            }
            for a in attempts
        ],
    }


class _Deadline:
    """Cuts one attempt's connection when its whole time is up.

    httpx bounds each read, not the whole exchange; this closes the socket
    from a timer, which ends the blocked read at once. The socket is learnt
    from the connection's ``connect_tcp`` trace, so the sending client must
    open a connection per attempt (no keep-alive).
    """

    def __init__(self, seconds: float) -> None:
        self.cut = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        found = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = found if isinstance(found, socket.socket) else None
            late = self.cut
        if late:
            self._shut()

    def _cut(self) -> None:
        with self._lock:
            self.cut = True
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already: the attempt ended by itself
                sock.shutdown(socket.SHUT_RDWR)


#: What an attempt's recording counts, by outcome (docs/metrics.md: unveil_webhook_attempts).
OUTCOMES = ("delivered", "failed", "given_up")


def _target(project: str, webhook_id: int) -> str:
    return f"{project}/webhooks/{webhook_id}"


def _announces_here(action: str, after: Any, env: str, environments: Sequence[str] | None) -> bool:
    """Whether this environment's row announces the event to a subscription.

    A launch records its events in each of its environments (each audit log
    shows them), but it is one business event: a subscription hears it once,
    from the first of the launch's environments that it covers.
    """
    if not action.startswith("launch.") or not isinstance(after, Mapping):
        return True
    launched = after.get("environments")
    if not isinstance(launched, list):
        return True
    covered = [e for e in launched if environments is None or e in environments]
    return not covered or covered[0] == env


class WebhookService:
    """Subscribing, reading deliveries, redelivering; and making deliveries from the outbox."""

    def __init__(
        self,
        store: Store,
        retry: RetryPolicy | None = None,
        deadline: float = ATTEMPT_DEADLINE,
        on_delivered: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.retry = retry or RetryPolicy()
        self.deadline = deadline
        #: seconds from a change to its delivery's first success, told once per delivery
        self.on_delivered = on_delivered
        #: attempts recorded here by outcome: delivered, failed (to be tried again), given up
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self._counting = threading.Lock()

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(
        self,
        project: str,
        url: str,
        events: list[str],
        environments: list[str] | None,
        format: str,
        actor: str,
    ) -> dict[str, Any]:
        """A new subscription, with its signing secret: shown here and never again."""
        problems = []
        url_problem = _url_problem(url)
        if url_problem is not None:
            problems.append(url_problem)
        problems += _list_problems(events, "events", EVENTS)
        if environments is not None:
            problems += _list_problems(environments, "environments", None)
        if format not in FORMATS:
            problems.append(Problem("format", f"must be one of: {', '.join(FORMATS)}"))
        if problems:
            raise Invalid(tuple(problems))
        wanted = list(dict.fromkeys(events))
        envs = None if environments is None else list(dict.fromkeys(environments))
        secret = "whsec_" + secrets.token_urlsafe(32)
        with self.store.unit_of_work() as work:
            project_id = require_project(work, project)
            unknown = [
                Problem(f"environments[{i}]", f"no environment '{e}' in project '{project}'")
                for i, e in enumerate(envs or [])
                if work.environments.id_of(project, e) is None
            ]
            if unknown:
                raise Invalid(tuple(unknown))
            webhook_id = work.webhooks.add(
                project_id=project_id,
                url=url,
                events=wanted,
                environments=envs,
                format=format,
                secret=secret,
                created_by=actor,
                now=datetime.now(UTC),
            )
            sub = work.webhooks.get(project_id, webhook_id)
            assert sub is not None
            shown = _subscription_data(sub)
            work.record(
                actor=actor,
                action="webhook.create",
                target=_target(project, webhook_id),
                after={k: v for k, v in shown.items() if k not in ("created_at", "created_by")},
            )
        return {**shown, "secret": secret}

    def subscriptions(self, project: str) -> list[dict[str, Any]]:
        with self.store.reading() as r:
            found = r.webhooks.of_project(require_project(r, project))
        return [_subscription_data(s) for s in found]

    def get(self, project: str, webhook_id: int) -> dict[str, Any]:
        with self.store.reading() as r:
            return _subscription_data(self._find(r, project, webhook_id))

    def remove(self, project: str, webhook_id: int, actor: str) -> None:
        """Unsubscribe: its deliveries, sent or not, go with it."""
        with self.store.unit_of_work() as work:
            sub = self._find(work, project, webhook_id)
            work.webhooks.remove(sub.id)
            before = _subscription_data(sub)
            work.record(
                actor=actor, action="webhook.delete", target=_target(project, sub.id), before=before
            )

    @staticmethod
    def _find(reading: Any, project: str, webhook_id: int) -> Subscription:
        project_id = require_project(reading, project)
        found = reading.webhooks.get(project_id, webhook_id) if 0 < webhook_id < 2**31 else None
        if found is None:
            raise NotFound(f"no webhook {webhook_id} in project '{project}'")
        return found  # type: ignore[no-any-return]

    # -- deliveries ---------------------------------------------------------------------

    def deliveries(self, project: str, webhook_id: int, limit: int = 50) -> list[dict[str, Any]]:
        """The latest deliveries, newest first, each with every attempt and its answer."""
        with self.store.reading() as r:
            sub = self._find(r, project, webhook_id)
            found = r.webhooks.deliveries(sub.id, limit)
            attempts = r.webhooks.attempts([d.id for d in found])
        return [_delivery_data(d, attempts[d.id]) for d in found]

    def redeliver(
        self, project: str, webhook_id: int, delivery_id: int, actor: str
    ) -> dict[str, Any]:
        """Send a delivery again (the same body, the same id), whatever became of it."""
        now = datetime.now(UTC)
        with self.store.unit_of_work() as work:
            sub = self._find(work, project, webhook_id)
            found = work.webhooks.delivery(sub.id, delivery_id) if 0 < delivery_id < 2**31 else None
            if found is None:
                raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
            if not work.webhooks.redeliver(found, now, now + self.retry.give_up_after):
                raise Conflict(f"delivery {delivery_id} is being sent right now; try again shortly")
            work.record(
                actor=actor,
                action="webhook.redeliver",
                target=_target(project, sub.id),
                after={"delivery": delivery_id, "event": found.event},
            )
            moved = work.webhooks.delivery(sub.id, delivery_id)
            assert moved is not None
            attempts = work.webhooks.attempts([delivery_id])[delivery_id]
        return _delivery_data(moved, attempts)

    def prune(self, work: UnitOfWork) -> int:
        """Forget finished deliveries older than the retention; how many."""
        return work.webhooks.prune(datetime.now(UTC) - DELIVERY_RETENTION)

    # -- from the outbox ----------------------------------------------------------------

    def fan_out(self, limit: int = 200) -> int:
        """Deliveries for the outbox rows not yet looked at; how many rows were looked at.

        Safe to run on two nodes at once: a delivery is unique per subscription
        and outbox row.
        """
        now = datetime.now(UTC)
        with self.store.unit_of_work() as work:
            rows = work.outbox.pending(limit=limit)
            if not rows:
                return 0
            subs = work.webhooks.everyone()
            for row in rows:
                self._deliveries_of(work, row, subs, now)
            work.outbox.mark_delivered([r.id for r in rows], now)
        return len(rows)

    def _deliveries_of(
        self, work: UnitOfWork, row: Announcement, subs: list[Subscription], now: datetime
    ) -> None:
        wanting = [s for s in subs if s.after_outbox_id < row.id]
        if not wanting or row.environment_id is None:
            return
        before, after = work.webhooks.change_of(row.audit_id)
        events = events_of(row.action, before, after)
        keys = work.environments.keys_of(row.environment_id) if events else None
        if keys is None:
            return
        project, env = keys
        project_id = work.projects.id_of(project)
        for sub in wanting:
            if sub.project_id != project_id:
                continue
            if sub.environments is not None and env not in sub.environments:
                continue
            if not _announces_here(row.action, after, env, sub.environments):
                continue
            event = next((e for e in events if e in sub.events), None)
            if event is None:
                continue
            payload = {
                "event": event,
                "action": row.action,
                "occurred_at": row.payload.get("at") or t.utc_text(row.at),
                "project": project,
                "environment": env,
                "target": row.payload.get("target"),
                "actor": row.payload.get("actor"),
                "reason": row.payload.get("reason"),
                "environment_version": row.payload.get("environment_version"),
                "audit_id": row.audit_id,
                "explanation": after if row.action.startswith(("release.", "stale.")) else None,
            }
            if row.action.startswith("launch.") and isinstance(after, Mapping):
                payload["notes"] = after.get("notes")  # the release notes, for people
                payload["launch"] = {k: v for k, v in after.items() if k != "notes"}
            work.webhooks.add_delivery(
                webhook_id=sub.id,
                outbox_id=row.id,
                audit_id=row.audit_id,
                event=event,
                payload=payload,
                now=now,
                give_up_at=now + self.retry.give_up_after,
            )

    # -- sending ------------------------------------------------------------------------

    def claim(self, epoch: int, limit: int) -> list[Claimed]:
        now = datetime.now(UTC)
        with self.store.reading() as r:  # the search holds no write lock (SQLite has one)
            rows = r.webhooks.due(now, epoch, limit)
        if not rows:
            return []
        with self.store.unit_of_work() as work:
            return work.webhooks.take(rows, epoch, now + LEASE)

    def send(self, claimed: Claimed, http: httpx.Client, node: str) -> bool:
        """One attempt, recorded with its answer; whether the receiver took it."""
        delivery = claimed.delivery
        if claimed.format == "slack":
            body = slack_body({**delivery.payload})
        else:
            body = body_of(delivery.id, delivery.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "unveil-webhooks/1",
            "Unveil-Delivery": str(delivery.id),
            "Unveil-Event": delivery.event,
            "Unveil-Signature": sign(claimed.secret, int(time.time()), body),
        }
        at = datetime.now(UTC)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        deadline = _Deadline(self.deadline)
        try:
            with (
                deadline,
                http.stream(
                    "POST",
                    claimed.url,
                    content=body,
                    headers=headers,
                    extensions={"trace": deadline.trace},
                ) as answer,
            ):
                status = answer.status_code  # the answer's body is never read
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        except Exception as exc:  # an odd URL httpx refuses: a failed attempt, never a lost one
            error = f"{type(exc).__name__}: {exc}"[:1000]
        if deadline.cut and error is not None:
            status, error = None, f"no whole answer within {self.deadline:g} s: cut off"
        duration = (time.monotonic() - started) * 1000
        ok = error is None
        attempt = Attempt(delivery.attempts, at, status, error, duration, node)
        now = datetime.now(UTC)
        next_at: datetime | None = None
        if ok:
            state = DELIVERED
        else:
            next_at = now + timedelta(seconds=self.retry.delay(delivery.attempts))
            give_up = delivery.give_up_at
            give_up = give_up if give_up.tzinfo else give_up.replace(tzinfo=UTC)
            state = PENDING if next_at < give_up else FAILED
        with self.store.unit_of_work() as work:
            first = ok and not work.webhooks.ever_delivered(delivery.id)
            if not work.webhooks.attempted(delivery, attempt, state, next_at):
                log.info("delivery %s was taken over while it was sent", delivery.id)
        self._count(state, first, delivery, now)
        return ok

    def _count(self, state: str, first: bool, delivery: Delivery, now: datetime) -> None:
        outcome = {DELIVERED: "delivered", PENDING: "failed"}.get(state, "given_up")
        with self._counting:
            self.outcomes[outcome] += 1
        if first and self.on_delivered is not None:
            changed = _when(delivery.payload.get("occurred_at")) or delivery.created_at
            changed = changed if changed.tzinfo else changed.replace(tzinfo=UTC)
            self.on_delivered(max(0.0, (now - changed).total_seconds()))

    def waiting(self) -> int:
        """Deliveries not yet delivered nor given up, on every node (for /metrics)."""
        with self.store.reading() as r:
            return r.webhooks.unfinished()


def _when(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class _Leading(Protocol):
    leading: threading.Event
    epoch: int | None


#: How long the delivery loop lets changes gather after one wakes it, in seconds.
SETTLE = 0.1


class Deliverer:
    """The leader's delivery loop: outbox to deliveries, due deliveries to a pool of senders.

    Its own thread and its own pool: nothing here runs in a request or in the
    job runner's thread, so a receiver can delay nothing but its own deliveries.
    """

    def __init__(
        self,
        webhooks: WebhookService,
        link: _Leading,
        node: str,
        interval: float = 1.0,
        senders: int = SENDERS,
    ) -> None:
        self._webhooks = webhooks
        self._link = link
        self._node = node
        self._interval = interval
        self._senders = senders
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unveil-webhooks", daemon=True)
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="unveil-webhook-send")
        self._http = httpx.Client(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            # a connection per attempt: the attempt's deadline learns its socket as it opens
            limits=httpx.Limits(max_connections=senders * 2, max_keepalive_connections=0),
        )

    def wake(self, _environment_id: object = None) -> None:
        """Look now (a change committed here, a send finished)."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            epoch = self._link.epoch
            if self._link.leading.is_set() and epoch is not None:
                try:
                    while self._webhooks.fan_out() and not self._stop.is_set():
                        pass
                    self._dispatch(epoch)
                except Exception:  # the database may be away for a moment
                    log.exception("delivering webhooks failed")
            if self._wake.wait(self._interval) and not self._stop.is_set():
                # Woken by a commit: let the write that woke it answer first, and let a
                # burst of changes gather, so they fan out in one transaction rather than
                # one each, taking the interpreter (and SQLite's write lock) from the
                # writes themselves.
                self._stop.wait(SETTLE)
            self._wake.clear()

    def _dispatch(self, epoch: int) -> None:
        with self._lock:
            free = self._senders - self._in_flight
        if free <= 0:
            return
        for claimed in self._webhooks.claim(epoch, free):
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._send, claimed)

    def _send(self, claimed: Claimed) -> None:
        try:
            self._webhooks.send(claimed, self._http, self._node)
        except Exception:  # recording the attempt failed: the lease lets it be sent again
            log.exception("sending delivery %s failed", claimed.delivery.id)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()
