"""The tables, in SQLAlchemy Core: the one description of the schema.

Flags and segments are stored per environment as their flags-file form
(JSON text), so what the store holds is exactly what the core validates and
what SDKs receive. Each environment carries a version that every change
bumps; each flag carries its own version for ETag / If-Match.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
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
    Column("target", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("environment_version", BigInteger, nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(10), nullable=False),  # admin | sdk
    Column("role", String(20), nullable=True),  # viewer | editor | releaser | admin
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("node", String(64), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("leading", Boolean, nullable=False),
)

event_counts = Table(
    "event_counts",
    metadata,
    Column("environment_id", Integer, ForeignKey("environments.id"), nullable=False),
    Column("minute", DateTime(timezone=True), nullable=False),
    Column("flag", String(200), nullable=False),
    Column("variant", String(200), nullable=False),
    Column("metric", String(200), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("total", Float, nullable=False),
    PrimaryKeyConstraint("environment_id", "minute", "flag", "variant", "metric"),
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


def utc_text(value: datetime) -> str:
    """A stored time as RFC 3339: SQLite gives times back without their zone, always UTC."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
