"""What a flag is for, across a project's environments: type, lifetime, tags, owner.

The type says how long a flag is expected to live: release and experiment
flags are temporary (40 days unless told otherwise) and become stale after
that; operational, kill-switch and permission flags are meant to stay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from unveil.core import Problem
from unveil.service.errors import Invalid, NotFound, PreconditionFailed, PreconditionRequired
from unveil.service.scope import require_project
from unveil.service.text import check_text, text_problem
from unveil.store.tables import utc_text
from unveil.store.unit import Store

__all__ = ["DEFAULT_LIFETIME_DAYS", "FLAG_TYPES", "MetaService", "check_meta"]

FLAG_TYPES = ("release", "experiment", "operational", "kill-switch", "permission")
DEFAULT_LIFETIME_DAYS = {"release": 40, "experiment": 40}
_FIELDS = {"type", "lifetime_days", "tags", "owner"}


def check_meta(data: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata, completed with defaults; ``Invalid`` names every bad field."""
    problems = [Problem(k, "unknown field") for k in data if k not in _FIELDS]
    kind = data.get("type", "release")
    if kind not in FLAG_TYPES:
        problems.append(Problem("type", f"must be one of {', '.join(FLAG_TYPES)}"))
    lifetime = data.get("lifetime_days", DEFAULT_LIFETIME_DAYS.get(str(kind)))
    if lifetime is not None and (
        not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 1 <= lifetime <= 3650
    ):
        problems.append(Problem("lifetime_days", "must be a whole number of days, 1 to 3650"))
    tags = data.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 20:
        problems.append(Problem("tags", "must be a list of at most 20 tags"))
    else:
        problems += [
            p
            for i, tag in enumerate(tags)
            if (p := text_problem(tag, f"tags[{i}]", 50)) is not None
        ]
    owner = data.get("owner")
    if owner is not None and (problem := text_problem(owner, "owner", 200)) is not None:
        problems.append(problem)
    if problems:
        raise Invalid(tuple(problems))
    return {"type": kind, "lifetime_days": lifetime, "tags": list(tags), "owner": owner}


class MetaService:
    """Reading and writing flag metadata."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, project: str, key: str) -> dict[str, Any]:
        """The flag's metadata, with ``etag`` to send back in If-Match."""
        with self.store.reading() as r:
            found = r.meta.get(require_project(r, project), key)
        if found is None:
            raise NotFound(f"no metadata for flag '{key}'")
        return _shown(key, *found)

    def all(self, project: str) -> dict[str, dict[str, Any]]:
        """The metadata of every flag of the project that has some, by key."""
        with self.store.reading() as r:
            return r.meta.all(require_project(r, project))

    def put(
        self,
        project: str,
        key: str,
        data: Mapping[str, Any],
        actor: str = "system",
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Create, or replace with the ETag read before (If-Match), the flag's metadata.

        Creating inserts only if no row exists (two creators at once: the
        second is told to read and send If-Match), and replacing holds the
        row, so no writer ever overwrites another unseen.
        """
        meta = check_meta(data)
        check_text(key, "key")
        with self.store.unit_of_work() as work:
            project_id = require_project(work, project)
            found = work.meta.get(project_id, key, lock=True)
            before = None if found is None else _shown(key, *found)
            if before is None:
                if if_match is not None:
                    raise NotFound(f"no metadata for flag '{key}'")
                if not work.meta.add(project_id, key, meta, datetime.now(UTC)):
                    raise PreconditionRequired(
                        f"the metadata of '{key}' was just created by someone else; "
                        "read it and send If-Match"
                    )
            else:
                if if_match is None:
                    raise PreconditionRequired(f"changing the metadata of '{key}' needs If-Match")
                if if_match != before["etag"]:
                    raise PreconditionFailed(before["etag"])
                work.meta.replace(project_id, key, meta)
            work.record(
                actor=actor,
                action="flag.meta",
                target=f"{project}/{key}",
                before=before,
                after={"key": key, **meta},
            )
            stored = work.meta.get(project_id, key)
        assert stored is not None
        return _shown(key, *stored)


def _shown(key: str, meta: dict[str, Any], created_at: datetime) -> dict[str, Any]:
    return {"key": key, **meta, "created_at": utc_text(created_at), "etag": meta_etag(meta)}


def meta_etag(meta: Mapping[str, Any]) -> str:
    """An ETag for metadata: a digest of its content (it has no version of its own)."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return f'"m-{digest}"'
