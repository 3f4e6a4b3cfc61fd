"""Changing flags and segments: validate through the core, then record the change.

Every write reads the environment's whole flags document inside its unit of
work, applies the change and parses the result with the core: a change that
would leave anything invalid (a rule naming a segment that is gone, a
prerequisite on a deleted flag) is refused with every problem, and nothing
is written. The environment's row is held first, so writes to one
environment go one at a time and its version counts them exactly.

A flag or segment's version is the environment version at which it last
changed: it grows with every change and never repeats for a key, even
across a delete and a re-create, so If-Match can never match a stale read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unveil.core import InvalidDocument, document_to_data, parse_document
from unveil.service.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
)
from unveil.service.scope import require_environment
from unveil.store.items import PARTS, Part
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = ["Change", "DocumentDiff", "FlagRecord", "FlagService", "Part", "Snapshot"]

_SINGULAR = {"flags": "flag", "segments": "segment"}


@dataclass(frozen=True, slots=True)
class FlagRecord:
    """One flag or segment of one environment, as stored."""

    key: str
    data: dict[str, Any]
    version: int
    created: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An environment's whole flags document and the version it is at."""

    version: int
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    """Who changes something, and why."""

    actor: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentDiff:
    """What applying a document would add, change and remove, per part."""

    added: dict[str, list[str]]
    changed: dict[str, list[str]]
    removed: dict[str, list[str]]

    @property
    def empty(self) -> bool:
        return not any(
            keys for d in (self.added, self.changed, self.removed) for keys in d.values()
        )

    def as_data(self) -> dict[str, Any]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed}


def diff_parts(before: Mapping[str, Any], after: Mapping[str, Any]) -> DocumentDiff:
    """Which flags and segments differ between two canonical documents."""
    added: dict[str, list[str]] = {}
    changed: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    for part in PARTS:
        old, new = before.get(part, {}), after.get(part, {})
        added[part] = sorted(k for k in new if k not in old)
        changed[part] = sorted(k for k in new if k in old and old[k] != new[k])
        removed[part] = sorted(k for k in old if k not in new)
    return DocumentDiff(added, changed, removed)


def _validated(document: dict[str, Any]) -> dict[str, Any]:
    try:
        return document_to_data(parse_document(document))
    except InvalidDocument as exc:
        raise Invalid(exc.problems) from None


def _document(reading: Reading, environment_id: int) -> dict[str, Any]:
    document: dict[str, Any] = {"version": 1}
    for part in PARTS:
        items = reading.items(part).all(environment_id)  # type: ignore[arg-type]
        document[part] = {item.key: item.data for item in items}
    return document


class FlagService:
    """Flags and segments of environments."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading ---------------------------------------------------------------------

    def list_items(self, part: Part, project: str, env: str) -> list[FlagRecord]:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            return [FlagRecord(i.key, i.data, i.version) for i in r.items(part).all(environment_id)]

    def get_item(self, part: Part, project: str, env: str, key: str) -> FlagRecord:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            found = r.items(part).get(environment_id, key)
        if found is None:
            raise NotFound(f"no {_SINGULAR[part]} '{key}'")
        return FlagRecord(found.key, found.data, found.version)

    def snapshot(self, project: str, env: str) -> Snapshot:
        """The environment's flags document in canonical form, at one version."""
        with self.store.reading() as r:
            return self._snapshot(r, require_environment(r, project, env))

    def snapshot_of(self, environment_id: int) -> Snapshot:
        """The snapshot of an environment known by id (an SDK key's)."""
        with self.store.reading() as r:
            return self._snapshot(r, environment_id)

    def version_of(self, environment_id: int) -> int:
        """The environment's version alone: cheap to ask often."""
        with self.store.reading() as r:
            version = r.environments.version(environment_id)
        if version is None:
            raise NotFound(f"no environment {environment_id}")
        return version

    @staticmethod
    def _snapshot(reading: Reading, environment_id: int) -> Snapshot:
        version = reading.environments.version(environment_id)
        if version is None:
            raise NotFound(f"no environment {environment_id}")
        document = _document(reading, environment_id)
        return Snapshot(version, document_to_data(parse_document(document)))

    # -- writing ---------------------------------------------------------------------

    def put_item(
        self,
        part: Part,
        project: str,
        env: str,
        key: str,
        data: Mapping[str, Any],
        change: Change,
        if_match: int | None,
        create_only: bool = False,
        within: UnitOfWork | None = None,
    ) -> FlagRecord:
        """Create or replace a flag or segment. Replacing needs the version it was read at."""
        what = f"{_SINGULAR[part]} '{key}'"
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            before = work.items(part).get(environment_id, key)
            if before is not None:
                if create_only:
                    raise Conflict(f"{what} exists already")
                if if_match is None:
                    raise PreconditionRequired(f"changing {what} needs If-Match")
                if if_match != before.version:
                    raise PreconditionFailed(before.version)
            elif if_match is not None:
                raise NotFound(f"no {what}")
            document = _document(work, environment_id)
            document[part][key] = dict(data)
            canonical = _validated(document)[part][key]
            if before is not None and canonical == before.data:
                # the same flag again: nothing to write, nobody's ETag goes stale
                return FlagRecord(key, before.data, before.version)
            recorded = work.record(
                actor=change.actor,
                action=f"{_SINGULAR[part]}.{'create' if before is None else 'update'}",
                target=key,
                reason=change.reason,
                before=None if before is None else before.data,
                after=canonical,
                environment_id=environment_id,
            )
            version = recorded.environment_version or 0
            work.items(part).put(environment_id, key, canonical, version, before is not None)
            return FlagRecord(key, canonical, version, created=before is None)

    def delete_item(
        self,
        part: Part,
        project: str,
        env: str,
        key: str,
        change: Change,
        if_match: int | None,
        within: UnitOfWork | None = None,
    ) -> int:
        """Delete a flag or segment (needs If-Match); the environment's version after."""
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            before = work.items(part).get(environment_id, key)
            if before is None:
                raise NotFound(f"no {_SINGULAR[part]} '{key}'")
            if if_match is None:
                raise PreconditionRequired(f"deleting {_SINGULAR[part]} '{key}' needs If-Match")
            if if_match != before.version:
                raise PreconditionFailed(before.version)
            document = _document(work, environment_id)
            del document[part][key]
            _validated(document)
            work.items(part).remove(environment_id, key)
            recorded = work.record(
                actor=change.actor,
                action=f"{_SINGULAR[part]}.delete",
                target=key,
                reason=change.reason,
                before=before.data,
                environment_id=environment_id,
            )
            return recorded.environment_version or 0

    def apply_document(
        self,
        project: str,
        env: str,
        data: Mapping[str, Any],
        change: Change,
        dry_run: bool = False,
        if_match: int | None = None,
        within: UnitOfWork | None = None,
    ) -> tuple[DocumentDiff, int]:
        """Make the environment's flags and segments exactly the document's.

        Idempotent: applying what is already there writes nothing and keeps
        the version. With ``if_match`` (an environment version, from export)
        it applies only if nothing changed since. Returns what differed and
        the version after.
        """
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            current = document_to_data(parse_document(_document(work, environment_id)))
            wanted = _validated(dict(data))
            diff = diff_parts(current, wanted)
            version = work.environments.version(environment_id) or 0
            if if_match is not None and if_match != version:
                raise PreconditionFailed(version)
            if dry_run or diff.empty:
                return diff, version
            recorded = work.record(
                actor=change.actor,
                action="document.apply",
                target=env,
                reason=change.reason,
                before=current,
                after=wanted,
                environment_id=environment_id,
            )
            version = recorded.environment_version or 0
            for part in PARTS:
                items = work.items(part)  # type: ignore[arg-type]
                new = wanted.get(part, {})
                for key in diff.removed[part]:
                    items.remove(environment_id, key)
                for key in diff.changed[part]:
                    items.put(environment_id, key, new[key], version, exists=True)
                for key in diff.added[part]:
                    items.put(environment_id, key, new[key], version, exists=False)
            return diff, version
