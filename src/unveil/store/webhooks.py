"""Webhook subscriptions, their deliveries and attempts: rows moved by compare-and-set.

A delivery moves ``pending -> sending -> delivered`` (or back to ``pending``
to be tried again, or to ``failed`` once its time is up). Claiming one to
send checks the version it read and bumps it, so two nodes never claim the
same attempt; a delivery left ``sending`` by an earlier leadership (its node
died mid-send) or whose lease ran out may be claimed again: delivery is at
least once. Per subscription only the oldest unfinished delivery is ever
due, so a receiver gets its events in the order of the outbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, locked

__all__ = [
    "Attempt",
    "Claimed",
    "Delivery",
    "Subscription",
    "WebhookRepository",
]

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
_UNFINISHED = (PENDING, SENDING)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A project's subscription to some events (its secret is read only to sign)."""

    id: int
    project_id: int
    url: str
    events: tuple[str, ...]
    environments: tuple[str, ...] | None
    format: str
    secret: str
    after_outbox_id: int
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    at: datetime
    status: int | None
    error: str | None
    duration_ms: float
    node: str


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    webhook_id: int
    outbox_id: int
    audit_id: int
    event: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_at: datetime
    give_up_at: datetime
    version: int
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed to send once, with where to and how to sign it."""

    delivery: Delivery
    url: str
    secret: str
    format: str


def _subscription(row: Any) -> Subscription:
    return Subscription(
        row.id,
        row.project_id,
        row.url,
        tuple(json.loads(row.events)),
        None if row.environments is None else tuple(json.loads(row.environments)),
        row.format,
        row.secret,
        int(row.after_outbox_id),
        row.created_by,
        row.created_at,
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        row.id,
        row.webhook_id,
        int(row.outbox_id),
        int(row.audit_id),
        row.event,
        json.loads(row.payload),
        row.state,
        row.attempts,
        row.next_at,
        row.give_up_at,
        int(row.version),
        row.created_at,
        row.delivered_at,
    )


class WebhookRepository:
    """Subscriptions, deliveries and attempts, on one connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- subscriptions ------------------------------------------------------------------

    def add(
        self,
        *,
        project_id: int,
        url: str,
        events: list[str],
        environments: list[str] | None,
        format: str,
        secret: str,
        created_by: str,
        now: datetime,
    ) -> int:
        """A new subscription to changes made from now on; its id."""
        last = self._conn.execute(select(func.max(t.outbox.c.id))).scalar_one_or_none()
        return int(
            self._conn.execute(
                insert(t.webhooks)
                .values(
                    project_id=project_id,
                    url=url,
                    events=json.dumps(events),
                    environments=None if environments is None else json.dumps(environments),
                    format=format,
                    secret=secret,
                    after_outbox_id=int(last or 0),
                    created_by=created_by,
                    created_at=now,
                )
                .returning(t.webhooks.c.id)
            ).scalar_one()
        )

    def get(self, project_id: int, webhook_id: int) -> Subscription | None:
        row = self._conn.execute(
            select(t.webhooks).where(
                t.webhooks.c.id == webhook_id, t.webhooks.c.project_id == project_id
            )
        ).one_or_none()
        return None if row is None else _subscription(row)

    def of_project(self, project_id: int) -> list[Subscription]:
        rows = self._conn.execute(
            select(t.webhooks)
            .where(t.webhooks.c.project_id == project_id)
            .order_by(t.webhooks.c.id)
        )
        return [_subscription(r) for r in rows]

    def everyone(self) -> list[Subscription]:
        return [_subscription(r) for r in self._conn.execute(select(t.webhooks))]

    def remove(self, webhook_id: int) -> None:
        """The subscription, its deliveries and their attempts."""
        deliveries = select(t.webhook_deliveries.c.id).where(
            t.webhook_deliveries.c.webhook_id == webhook_id
        )
        # a sender recording an attempt holds its delivery's row: wait for it to finish,
        # so that its attempt is deleted here too, not left pointing at nothing
        self._conn.execute(locked(self._conn, deliveries)).all()
        self._conn.execute(
            delete(t.webhook_attempts).where(t.webhook_attempts.c.delivery_id.in_(deliveries))
        )
        self._conn.execute(
            delete(t.webhook_deliveries).where(t.webhook_deliveries.c.webhook_id == webhook_id)
        )
        self._conn.execute(delete(t.webhooks).where(t.webhooks.c.id == webhook_id))

    # -- what the outbox says -----------------------------------------------------------

    def change_of(self, audit_id: int) -> tuple[Any, Any]:
        """The audit entry's before and after (what an event is made of), as data."""
        row = self._conn.execute(
            select(t.audit.c.before, t.audit.c.after).where(t.audit.c.id == audit_id)
        ).one_or_none()
        if row is None:
            return None, None
        return (
            None if row.before is None else json.loads(row.before),
            None if row.after is None else json.loads(row.after),
        )

    # -- deliveries ---------------------------------------------------------------------

    def add_delivery(
        self,
        *,
        webhook_id: int,
        outbox_id: int,
        audit_id: int,
        event: str,
        payload: dict[str, Any],
        now: datetime,
        give_up_at: datetime,
    ) -> bool:
        """A delivery of one outbox row to one subscription; False if it exists already."""
        return insert_or_ignore(
            self._conn,
            t.webhook_deliveries,
            {
                "webhook_id": webhook_id,
                "outbox_id": outbox_id,
                "audit_id": audit_id,
                "event": event,
                "payload": json.dumps(payload, separators=(",", ":")),
                "state": PENDING,
                "attempts": 0,
                "next_at": now,
                "give_up_at": give_up_at,
                "version": 1,
                "created_at": now,
            },
        )

    def delivery(self, webhook_id: int, delivery_id: int) -> Delivery | None:
        row = self._conn.execute(
            select(t.webhook_deliveries).where(
                t.webhook_deliveries.c.id == delivery_id,
                t.webhook_deliveries.c.webhook_id == webhook_id,
            )
        ).one_or_none()
        return None if row is None else _delivery(row)

    def deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        """The subscription's latest deliveries, newest first."""
        rows = self._conn.execute(
            select(t.webhook_deliveries)
            .where(t.webhook_deliveries.c.webhook_id == webhook_id)
            .order_by(t.webhook_deliveries.c.id.desc())
            .limit(limit)
        )
        return [_delivery(r) for r in rows]

    def attempts(self, delivery_ids: list[int]) -> dict[int, list[Attempt]]:
        found: dict[int, list[Attempt]] = {i: [] for i in delivery_ids}
        if not delivery_ids:
            return found
        rows = self._conn.execute(
            select(t.webhook_attempts)
            .where(t.webhook_attempts.c.delivery_id.in_(delivery_ids))
            .order_by(t.webhook_attempts.c.id)
        )
        for r in rows:
            found[r.delivery_id].append(
                Attempt(r.number, r.at, r.status, r.error, r.duration_ms, r.node)
            )
        return found

    def due(self, now: datetime, epoch: int, limit: int) -> list[Any]:
        """Deliveries to send now (rows with their subscription's url, secret and format).

        Per subscription only its oldest unfinished delivery is a candidate
        (the heads: one aggregate over the unfinished, not a look behind each
        of them, so that a backlog of a hundred thousand costs one scan). Due:
        pending and its time come, or left sending by an earlier leadership or
        past its lease (its sender died: it is sent again). Only reads: the
        leader reads outside the write lock and takes the rows with ``take``.
        """
        d = t.webhook_deliveries
        heads = select(func.min(d.c.id)).where(d.c.state.in_(_UNFINISHED)).group_by(d.c.webhook_id)
        due = or_(
            and_(d.c.state == PENDING, d.c.next_at <= now),
            and_(
                d.c.state == SENDING,
                or_(d.c.epoch.is_(None), d.c.epoch < epoch, d.c.lease_until < now),
            ),
        )
        return list(
            self._conn.execute(
                select(d, t.webhooks.c.url, t.webhooks.c.secret, t.webhooks.c.format)
                .join(t.webhooks, t.webhooks.c.id == d.c.webhook_id)
                .where(d.c.id.in_(heads), due)
                .order_by(d.c.id)
                .limit(limit)
            ).all()
        )

    def take(self, rows: list[Any], epoch: int, lease_until: datetime) -> list[Claimed]:
        """Claim the rows ``due`` read, each by compare-and-set: one attempt under ``epoch``.

        A row that moved since it was read (another node claimed it, it was
        sent, removed or redelivered) is left alone.
        """
        d = t.webhook_deliveries
        claimed = []
        for row in rows:
            moved = self._conn.execute(
                update(d)
                .where(d.c.id == row.id, d.c.version == row.version)
                .values(
                    state=SENDING,
                    epoch=epoch,
                    lease_until=lease_until,
                    attempts=d.c.attempts + 1,
                    version=d.c.version + 1,
                )
            )
            if moved.rowcount == 1:
                found = _delivery(row)
                delivery = replace(
                    found, state=SENDING, attempts=found.attempts + 1, version=found.version + 1
                )
                claimed.append(Claimed(delivery, row.url, row.secret, row.format))
        return claimed

    def attempted(
        self,
        delivery: Delivery,
        attempt: Attempt,
        state: str,
        next_at: datetime | None,
    ) -> bool:
        """Move the delivery on if it is still as claimed, and record the attempt.

        The attempt is kept even when the delivery was taken over meanwhile (it
        happened), but not when the delivery is gone (its subscription was removed).
        """
        d = t.webhook_deliveries
        values: dict[str, Any] = {"state": state, "version": d.c.version + 1, "lease_until": None}
        if next_at is not None:
            values["next_at"] = next_at
        if state == DELIVERED:
            values["delivered_at"] = attempt.at
        moved = (
            self._conn.execute(
                update(d)
                .where(d.c.id == delivery.id, d.c.version == delivery.version, d.c.state == SENDING)
                .values(**values)
            ).rowcount
            == 1
        )
        there = (
            moved
            or self._conn.execute(select(d.c.id).where(d.c.id == delivery.id)).first() is not None
        )
        if there:
            self._conn.execute(
                insert(t.webhook_attempts).values(
                    delivery_id=delivery.id,
                    number=attempt.number,
                    at=attempt.at,
                    status=attempt.status,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                    node=attempt.node,
                )
            )
        return moved

    def ever_delivered(self, delivery_id: int) -> bool:
        """Whether an attempt of this delivery was ever taken (a 2xx answer recorded)."""
        a = t.webhook_attempts
        found = self._conn.execute(
            select(a.c.id)
            .where(a.c.delivery_id == delivery_id, a.c.error.is_(None), a.c.status.is_not(None))
            .limit(1)
        ).first()
        return found is not None

    def unfinished(self) -> int:
        """How many deliveries wait to be delivered (pending or being sent), everywhere."""
        d = t.webhook_deliveries
        found = self._conn.execute(
            select(func.count()).select_from(d).where(d.c.state.in_(_UNFINISHED))
        ).scalar_one()
        return int(found)

    def redeliver(self, delivery: Delivery, now: datetime, give_up_at: datetime) -> bool:
        """Send again from now on (its time to give up starts anew); False if it moved meanwhile."""
        d = t.webhook_deliveries
        moved = self._conn.execute(
            update(d)
            .where(d.c.id == delivery.id, d.c.version == delivery.version, d.c.state != SENDING)
            .values(
                state=PENDING,
                next_at=now,
                give_up_at=give_up_at,
                delivered_at=None,
                version=d.c.version + 1,
            )
        )
        return moved.rowcount == 1

    def prune(self, before: datetime) -> int:
        """Forget finished deliveries (and their attempts) made before ``before``; how many."""
        d = t.webhook_deliveries
        old = select(d.c.id).where(d.c.created_at < before, d.c.state.in_((DELIVERED, FAILED)))
        self._conn.execute(
            delete(t.webhook_attempts).where(t.webhook_attempts.c.delivery_id.in_(old))
        )
        result = self._conn.execute(
            delete(d).where(d.c.created_at < before, d.c.state.in_((DELIVERED, FAILED)))
        )
        return int(result.rowcount)
