"""Changing flags and segments: validate through the core, then record the change.

Every write holds the environment's row first, so writes to one environment
go one at a time and its version counts them exactly. It then checks the
change against the environment's validated flags as this node holds them at
exactly that version (``unveil.service.documents``): the changed entry,
what it names and what names it, in proportion to the change and not to the
environment. Where that check cannot tell, the whole document is read from
the rows and parsed by the core. Either way a change that would leave
anything invalid (a rule naming a segment that is gone, a prerequisite on a
deleted flag) is refused with every problem a whole reading finds, and
nothing is written.

A flag or segment's version is the environment version at which it last
changed: it grows with every change and never repeats for a key, even
across a delete and a re-create, so If-Match can never match a stale read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unveil.core import InvalidDocument, Ruleset, document_to_data
from unveil.core.incremental import entry_data, whole_patched
from unveil.service.documents import (
    Changes,
    Documents,
    Loaded,
    no_changes,
    stored_document,
    validated,
)
from unveil.service.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    StoredInvalid,
)
from unveil.service.scope import (
    environment_items,
    require_environment,
    require_held_environment,
    require_held_item,
)
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


class FlagService:
    """Flags and segments of environments."""

    def __init__(self, store: Store, documents: Documents | None = None) -> None:
        self.store = store
        #: the environments' validated flags this node holds (its snapshots are made from them)
        self.documents = documents or Documents(store)

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

    def loaded(self, environment_id: int) -> Loaded:
        """The environment's validated flags at its current version (an SDK key's)."""
        return self.documents.current(environment_id)

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
        return Snapshot(version, document_to_data(stored_document(reading, environment_id)))

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
            environment_id, version, before = require_held_item(work, part, project, env, key)
            if before is not None:
                if create_only:
                    raise Conflict(f"{what} exists already")
                if if_match is None:
                    raise PreconditionRequired(f"changing {what} needs If-Match")
                if if_match != before.version:
                    raise PreconditionFailed(before.version)
            elif if_match is not None:
                raise NotFound(f"no {what}")
            body = dict(data) if isinstance(data, Mapping) else data  # not one: refused, named
            ruleset = self._changed(work, environment_id, version, part, key, body)
            canonical = entry_data(ruleset.document, part, key)
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
            written = recorded.environment_version or 0
            work.items(part).put(environment_id, key, canonical, written, before is not None)
            changes = no_changes()
            changes[part][key] = canonical
            self._wrote(work, environment_id, written, ruleset, version, changes)
            return FlagRecord(key, canonical, written, created=before is None)

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
            environment_id, version, before = require_held_item(work, part, project, env, key)
            if before is None:
                raise NotFound(f"no {_SINGULAR[part]} '{key}'")
            if if_match is None:
                raise PreconditionRequired(f"deleting {_SINGULAR[part]} '{key}' needs If-Match")
            if if_match != before.version:
                raise PreconditionFailed(before.version)
            ruleset = self._changed(work, environment_id, version, part, key, None)
            work.items(part).remove(environment_id, key)
            recorded = work.record(
                actor=change.actor,
                action=f"{_SINGULAR[part]}.delete",
                target=key,
                reason=change.reason,
                before=before.data,
                environment_id=environment_id,
            )
            written = recorded.environment_version or 0
            changes = no_changes()
            changes[part][key] = None
            self._wrote(work, environment_id, written, ruleset, version, changes)
            return written

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
            environment_id, version = require_held_environment(work, project, env)
            try:
                base = self.documents.within(work, environment_id, version)
                current = document_to_data(base.ruleset.document)
            except StoredInvalid:
                # stored under older, looser rules: the document replaces it, row for row
                current = environment_items(work, environment_id)
            parsed = validated(dict(data))
            wanted = document_to_data(parsed)
            diff = diff_parts(current, wanted)
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
            written = recorded.environment_version or 0
            changes = no_changes()
            for part in PARTS:
                items = work.items(part)  # type: ignore[arg-type]
                new = wanted.get(part, {})
                changed = {k: new[k] for k in diff.changed[part]}
                added = {k: new[k] for k in diff.added[part]}
                items.remove_many(environment_id, diff.removed[part])
                items.put_many(environment_id, changed, written, exists=True)
                items.put_many(environment_id, added, written, exists=False)
                changes[part].update(dict.fromkeys(diff.removed[part]))
                changes[part].update(changed)
                changes[part].update(added)
            self._wrote(work, environment_id, written, Ruleset(parsed), version, changes)
            return diff, written

    # -- checking one change ---------------------------------------------------------

    def _changed(
        self,
        work: UnitOfWork,
        environment_id: int,
        version: int,
        part: Part,
        key: str,
        data: object,
    ) -> Ruleset:
        """The environment's flags with ``key`` set to ``data`` (None: removed), validated.

        Incrementally against the flags at ``version`` (the environment's, read
        with its row held); where that check cannot tell, the whole patched
        document as a whole reading takes it, refused with every problem, but
        reading only the changed entry: a refusal at ten thousand flags costs
        what an acceptance does, not a reading of every row while the
        environment's writers wait (``unveil.core.incremental.whole_patched``).
        """
        base = self.documents.within(work, environment_id, version)
        patch: dict[str, Any] = {name: {} for name in PARTS}
        patch[part][key] = data
        patched = base.ruleset.patched(patch)
        if patched is not None:
            return patched
        try:
            return Ruleset(whole_patched(base.ruleset.document, patch, in_key_order=True))
        except InvalidDocument as exc:
            raise Invalid(exc.problems) from None

    def _wrote(
        self,
        work: UnitOfWork,
        environment_id: int,
        written: int,
        ruleset: Ruleset,
        previous: int,
        changes: Changes,
    ) -> None:
        """The environment as this write leaves it: kept for the next one once it commits."""
        self.documents.wrote(work, Loaded(environment_id, written, ruleset), previous, changes)
