"""The tables, in SQLAlchemy Core: the one description of the schema.

Flags and segments are stored per environment as their flags-file form
(JSON text), so what the store holds is exactly what the core validates and
what SDKs receive. Each environment carries a version that every change
bumps; a flag or segment carries the environment version at which it last
changed, its ETag for If-Match: it only ever grows, so a stale If-Match from
before a delete can never match the flag created after it.

Every change appends an audit entry and an outbox row (what must be
announced) in the same transaction; background work runs as ``jobs``
fenced by the ``leadership`` epoch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
)

environments = Table(
    "environments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("key", String(200), nullable=False),
    Column("version", BigInteger, nullable=False, default=0),
    UniqueConstraint("project_id", "key"),
)


def _document_part(name: str) -> Table:
    """Flags and segments are stored alike: a key, its flags-file form, a version."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
        Column("key", String(200), nullable=False),
        Column("data", Text, nullable=False),
        Column("version", BigInteger, nullable=False),
        UniqueConstraint("environment_id", "key"),
    )


flags = _document_part("flags")
segments = _document_part("segments")

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(50), nullable=False),
    Column("target", String(400), nullable=False),  # "project/flag" fits
    Column("reason", Text, nullable=True),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("environment_version", BigInteger, nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),  # the audit's actor
    Column("kind", String(10), nullable=False),  # admin | sdk
    Column("role", String(20), nullable=True),  # viewer | editor | releaser | admin
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # kept after revoking, so that a name in the audit log names one token forever
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

nodes = Table(
    "nodes",
    metadata,
    Column("node", String(64), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("leading", Boolean, nullable=False),
)

# No foreign key to environments, on purpose: an insert under one takes a lock on
# the environment's row (KEY SHARE on PostgreSQL), the row every flag write locks,
# and telemetry must never hold a lock a kill switch waits for. On SQLite the
# counts live in a file of their own (see store/events.py).
event_counts = Table(
    "event_counts",
    metadata,
    Column("environment_id", Integer, nullable=False),
    Column("minute", DateTime(timezone=True), nullable=False),
    Column("flag", String(200), nullable=False),
    Column("variant", String(200), nullable=False),
    Column("metric", String(200), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("total", Float, nullable=False),
    PrimaryKeyConstraint("environment_id", "minute", "flag", "variant", "metric"),
)


# The judge's data: per environment, flag, metric, window and variant a count, a sum
# and (in metric_buckets) the non-empty buckets of the fixed log-spaced histogram
# (core/logbuckets.py). ``seconds`` is the window's width, 10 or 3600 (10-second
# windows are rolled into hourly ones after a week); ``start`` is the window's first
# second since the epoch, an integer so that both databases can compute hours from it.
# Like event_counts: no foreign key, and on SQLite in the events file.
def _window_key() -> list[Column[Any]]:
    """The columns that name one variant's window of one metric."""
    return [
        Column("environment_id", Integer, nullable=False),
        Column("flag", String(200), nullable=False),
        Column("metric", String(200), nullable=False),
        Column("seconds", Integer, nullable=False),
        Column("start", BigInteger, nullable=False),
        Column("variant", String(200), nullable=False),
    ]


metric_windows = Table(
    "metric_windows",
    metadata,
    *_window_key(),
    Column("count", BigInteger, nullable=False),
    Column("total", Float, nullable=False),
    PrimaryKeyConstraint("environment_id", "flag", "metric", "seconds", "start", "variant"),
    Index("metric_windows_by_age", "seconds", "start"),
    # what lists an environment's experiments reads (their metrics are named $experiment.*)
    Index("metric_windows_by_metric", "environment_id", "metric", "start"),
)

metric_buckets = Table(
    "metric_buckets",
    metadata,
    *_window_key(),
    Column("bucket", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint(
        "environment_id", "flag", "metric", "seconds", "start", "variant", "bucket"
    ),
    Index("metric_buckets_by_age", "seconds", "start"),
)

# The latest mismatch examples of dark-launch experiments (issue 14), at most
# ``EXAMPLES_KEPT`` per environment and experiment (store/events.py trims them as it
# writes). Telemetry like the counts: no foreign key, and on SQLite in the events file.
experiment_examples = Table(
    "experiment_examples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("environment_id", Integer, nullable=False),
    Column("experiment", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Column("context", String(200), nullable=True),
    Column("control", Text, nullable=False),
    Column("candidate", Text, nullable=False),
    Index("experiment_examples_latest", "environment_id", "experiment", "id"),
)

flag_meta = Table(
    "flag_meta",
    metadata,
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("key", String(200), nullable=False),
    Column("type", String(20), nullable=False),
    Column("lifetime_days", Integer, nullable=True),
    Column("tags", Text, nullable=False),
    Column("owner", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("project_id", "key"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", String(300), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("audit_id", Integer, ForeignKey("audit.id"), nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("action", String(50), nullable=False),
    # no foreign key: a row must never lock the environment a flag write needs
    Column("environment_id", Integer, nullable=True),
    Column("payload", Text, nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(100), nullable=False),
    # one job per key at a time (recurring work, one schedule, one release)
    Column("key", String(300), nullable=True, unique=True),
    Column("payload", Text, nullable=False),
    Column("state", String(20), nullable=False),  # pending | running | done | failed | cancelled
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("version", BigInteger, nullable=False),  # compare-and-set on every move
    Column("epoch", BigInteger, nullable=True),  # the leadership that claimed it
    Column("owner", String(64), nullable=True),  # the node that claimed it
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("jobs_due", jobs.c.state, jobs.c.run_at)

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),  # the release's id is "r<id>"
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
    Column("flag", String(200), nullable=False),
    Column("phase", String(40), nullable=False),  # the state's phase, for listing
    Column("active", Boolean, nullable=False),  # not over: the worker still ticks it
    Column("state", Text, nullable=False),  # release/state.py's plain data, as JSON
    Column("version", BigInteger, nullable=False),  # compare-and-set on every move
    # the flag's version the release last wrote or accepted: another one is a hand edit
    Column("flag_version", BigInteger, nullable=True),
    Column("judged_until", DateTime(timezone=True), nullable=True),  # end of the last window seen
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("releases_by_flag", releases.c.environment_id, releases.c.flag, releases.c.active)

schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True),  # the schedule's id is "s<id>"
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
    Column("action", String(40), nullable=False),  # flag.put | segment.put | ... (see service)
    Column("target", String(200), nullable=False),  # the key changed ("" for a document)
    Column("change", Text, nullable=False),  # what to write and what it was written against
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("until", DateTime(timezone=True), nullable=True),  # when it is undone, if ever
    Column("time_zone", String(100), nullable=True),  # the zone the times were given in
    Column("state", String(20), nullable=False),  # pending | applied | failed | cancelled
    Column("undoes", Integer, nullable=True),  # the schedule this one undoes
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("outcome", Text, nullable=True),  # what happened when it ran
    Column("version", BigInteger, nullable=False),  # compare-and-set on every move
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("schedules_by_environment", schedules.c.environment_id, schedules.c.state)

environment_settings = Table(
    "environment_settings",
    metadata,
    Column("environment_id", Integer, ForeignKey("environments.id"), primary_key=True),
    Column("requires_approval", Boolean, nullable=False),  # changes become change requests
    # what a deploy rollback does to a flag whose code it takes away: off | keep | ask
    Column("on_deploy_rollback", String(10), nullable=True),  # NULL: off
)

change_requests = Table(
    "change_requests",
    metadata,
    Column("id", Integer, primary_key=True),  # the request's id is "c<id>"
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
    Column("action", String(40), nullable=False),  # flag.put | flag.delete | ... (see service)
    Column("target", String(200), nullable=False),
    Column("payload", Text, nullable=False),  # the change exactly as asked
    Column("diff", Text, nullable=False),  # before and after, against base_version
    Column("base_version", BigInteger, nullable=True),  # the version it was asked against
    Column("state", String(20), nullable=False),  # open | applied | rejected | withdrawn | refused
    Column("requester", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("outcome", Text, nullable=True),
    Column("comments", Text, nullable=False),  # [{at, by, text}]
    Column("version", BigInteger, nullable=False),  # compare-and-set on every move
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("change_requests_by_environment", change_requests.c.environment_id, change_requests.c.state)

leadership = Table(
    "leadership",
    metadata,
    Column("id", Integer, primary_key=True),  # one row
    Column("epoch", BigInteger, nullable=False),  # grows each time a node takes the lead
    Column("node", String(64), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
)


def utc_text(value: datetime) -> str:
    """A stored time as RFC 3339: SQLite gives times back without their zone, always UTC."""
    return as_utc(value).isoformat()


def as_utc(value: datetime) -> datetime:
    """A stored time with its zone: SQLite gives times back without it, always UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Webhooks: a project's subscriptions, one delivery per outbox row a subscription
# wants (made by the leader from the outbox), and every attempt to send one.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("events", Text, nullable=False),  # JSON list of event names
    Column("environments", Text, nullable=True),  # JSON list of keys; NULL: every one
    Column("format", String(10), nullable=False),  # json | slack
    # kept as is: signing needs the secret itself, not a hash of it
    Column("secret", String(100), nullable=False),
    # only outbox rows after this one (changes made after the subscription) are sent
    Column("after_outbox_id", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id"), nullable=False),
    # no foreign key: the outbox is pruned, a delivery's record outlives it
    Column("outbox_id", BigInteger, nullable=False),
    Column("audit_id", BigInteger, nullable=False),
    Column("event", String(50), nullable=False),
    Column("payload", Text, nullable=False),  # the body without its id, as JSON
    Column("state", String(20), nullable=False),  # pending | sending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("give_up_at", DateTime(timezone=True), nullable=False),
    Column("version", BigInteger, nullable=False),  # compare-and-set on every move
    Column("epoch", BigInteger, nullable=True),  # the leadership that claimed it to send
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("webhook_id", "outbox_id"),
)
Index("webhook_deliveries_due", webhook_deliveries.c.state, webhook_deliveries.c.next_at)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("delivery_id", Integer, ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", Integer, nullable=True),  # the HTTP status; NULL: no answer
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("node", String(64), nullable=False),
)
Index("webhook_attempts_of", webhook_attempts.c.delivery_id)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),  # the cookie is never stored
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),  # logged out
)
Index("sessions_expiry", sessions.c.expires_at)

# Release templates: a plan without its flag, saved under a name per project.
release_templates = Table(
    "release_templates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("plan", Text, nullable=False),  # the template's plan fields, as JSON
    Column("version", BigInteger, nullable=False),  # its ETag; grows with every save
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "name"),
)

# Launches: a named business release of several flag changes, started and stopped together.
launches = Table(
    "launches",
    metadata,
    Column("id", Integer, primary_key=True),  # the launch's id is "l<id>"
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("notes", Text, nullable=False),  # release notes, for people
    Column("owner", String(200), nullable=False),
    Column("planned_at", DateTime(timezone=True), nullable=True),
    Column("state", String(30), nullable=False),  # planned | waiting_for_approval | ...
    Column("changes", Text, nullable=False),  # the flag changes, as asked (JSON list)
    Column("effects", Text, nullable=False),  # what starting did, per change: to turn back
    Column("approvals", Text, nullable=False),  # environment -> change request, while waiting
    Column("outcome", Text, nullable=True),
    Column("version", BigInteger, nullable=False),  # compare-and-set on every move
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index("launches_by_project", launches.c.project_id, launches.c.state)
# Stale flags (service/stale.py): a project's clean-up setting, and per environment
# the flags the leader found stale, each announced once when it was found (the
# primary key is what makes "once" hold, whichever node looks).
project_settings = Table(
    "project_settings",
    metadata,
    Column("project_id", Integer, ForeignKey("projects.id"), primary_key=True),
    Column("stale_after_days", Integer, nullable=False),  # N of the stale criteria
)

stale_flags = Table(
    "stale_flags",
    metadata,
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
    Column("flag", String(200), nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list of {code, since, text}
    Column("found_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("environment_id", "flag"),
)


# Deploys: a project's services, and each deploy of one to an environment. ``refs`` is
# the flags its code references ({"flag": ["path:line", ...]}, JSON); ``rollback`` says
# the deploy went back to an older version than ``previous_id``, the deploy it replaced.
services = Table(
    "services",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("owner", String(200), nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "name"),
)

deploys = Table(
    "deploys",
    metadata,
    Column("id", Integer, primary_key=True),  # the deploy's id is "d<id>"
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("version", String(200), nullable=False),
    Column("commit", String(100), nullable=True),
    Column("link", String(2000), nullable=True),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("refs", Text, nullable=False),
    Column("rollback", Boolean, nullable=False),
    Column("previous_id", Integer, nullable=True),
    Column("verification", Text, nullable=True),  # the checks and their evidence, JSON
    Column("verified", String(10), nullable=True),  # passed | failed; NULL: not verified
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("deploys_by_service", deploys.c.environment_id, deploys.c.service_id, deploys.c.id)
