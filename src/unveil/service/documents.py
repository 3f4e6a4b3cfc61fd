"""Each environment's flags, validated and in memory, at a version the database had.

A write to one flag of an environment of ten thousand used to read every
row, validate the whole document and turn it back into data, and the node's
snapshot did it twice more: seconds for one changed description. Here a
node keeps, per environment, the validated document (a ``Ruleset``, whose
flags compile only when evaluated) and the environment version it is at. A
write holds the environment's row, reads its version, and checks its change
as a patch (``Ruleset.patched``: the changed entries, what they name and
what names them) against the document at exactly that version.

Correctness comes first:

- A document is used only at the version the database has inside the
  transaction that uses it (the write's, with the row held). Other nodes
  write too; a node that finds the database ahead catches up from the rows
  written since (an item's version is the environment's when it last
  changed) and the keys still there (what is gone), and reads the whole
  environment when anything is in doubt.
- What a write makes is kept once its transaction has committed
  (``UnitOfWork.on_commit``), never before: a rollback leaves nothing here.
  Until then only the same transaction sees it (a job's unit of work may
  change several flags).
- The patch check answers "cannot tell" rather than wrong; then the caller
  reads and validates the whole document, which gives exactly the problems
  of a whole reading (tests/test_incremental_write.py holds both ways to the
  same answers).

Beside each document a short log of what each version changed (canonical
data, None for removed) lets the node's snapshot and its stream clients
follow in proportion to the change.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from unveil.core import Document, InvalidDocument, Ruleset, parse_document
from unveil.core.incremental import entry_data
from unveil.service.errors import Conflict, Invalid, NotFound, StoredInvalid
from unveil.store.items import PARTS
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = ["Changes", "Documents", "Loaded", "changes_patch", "stored_document", "whole_document"]

#: What one version changed: per part ("flags", "segments"), key -> canonical data or None.
Changes = dict[str, dict[str, Any]]

#: Versions whose changes are remembered per environment (a snapshot further behind is
#: rebuilt from the whole document), and the most changed entries they may hold in all:
#: a whole document applied is not kept in memory twice over.
HISTORY = 64
HISTORY_ENTRIES = 2_000
#: Attempts at reading an environment whole while other nodes keep writing to it.
_READ_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Loaded:
    """An environment's validated flags at one of its versions."""

    environment_id: int
    version: int
    ruleset: Ruleset


def no_changes() -> Changes:
    return {part: {} for part in PARTS}


def changes_patch(changes: Changes) -> dict[str, Any]:
    """The patch body ``Ruleset.patched`` takes for these changes."""
    return {part: dict(changes.get(part, {})) for part in PARTS}


def whole_document(reading: Reading, environment_id: int) -> dict[str, Any]:
    """The environment's flags document as plain data, from every row."""
    document: dict[str, Any] = {"version": 1}
    for part in PARTS:
        items = reading.items(part).all(environment_id)  # type: ignore[arg-type]
        document[part] = {item.key: item.data for item in items}
    return document


def stored_document(reading: Reading, environment_id: int) -> Document:
    """The environment's rows read by the core, or ``StoredInvalid`` with every problem.

    Rules tighten between versions: rows written under older ones may no
    longer read, and the refusal says so (and how to put it right).
    """
    try:
        return parse_document(whole_document(reading, environment_id))
    except InvalidDocument as exc:
        raise StoredInvalid(exc.problems) from None


def validated(document: object) -> Document:
    """The whole document read by the core, or ``Invalid`` with every problem."""
    try:
        return parse_document(document)
    except InvalidDocument as exc:
        raise Invalid(exc.problems) from None


class Documents:
    """The environments' validated flags this node holds, and what each version changed."""

    def __init__(self, store: Store, history: int = HISTORY) -> None:
        self._store = store
        self._history = history
        self._lock = threading.Lock()
        self._known: dict[int, Loaded] = {}
        self._log: dict[int, deque[tuple[int, int, Changes, int]]] = {}
        self._pending: WeakKeyDictionary[UnitOfWork, dict[int, Loaded]] = WeakKeyDictionary()
        #: how many times an environment was read whole (the slow way), for tests and metrics
        self.whole_reads = 0

    # -- what is known ------------------------------------------------------------------

    def known(self, environment_id: int) -> Loaded | None:
        with self._lock:
            return self._known.get(environment_id)

    def changes(self, environment_id: int, since: int, until: int) -> Changes | None:
        """What changed from version ``since`` to ``until``, or None if it is not all known."""
        if since == until:
            return no_changes()
        with self._lock:
            log = list(self._log.get(environment_id, ()))
        merged = no_changes()
        at = since
        for previous, version, changes, _size in log:
            if version <= at:
                continue
            if previous != at:
                return None  # a gap: this node read the environment whole in between
            for part, entries in changes.items():
                merged[part].update(entries)
            at = version
            if at == until:
                return merged
        return None

    def _install(self, loaded: Loaded, previous: int | None, changes: Changes | None) -> None:
        """Keep ``loaded`` if it is newer than what is kept; log its changes when they follow."""
        with self._lock:
            held = self._known.get(loaded.environment_id)
            if held is not None and held.version >= loaded.version:
                return
            self._known[loaded.environment_id] = loaded
            log = self._log.setdefault(loaded.environment_id, deque(maxlen=self._history))
            size = 0 if changes is None else sum(len(entries) for entries in changes.values())
            if previous is None or changes is None or size > HISTORY_ENTRIES:
                log.clear()  # read whole (or too large to keep): nothing before it follows on
                return
            log.append((previous, loaded.version, changes, size))
            total = sum(entry[3] for entry in log)
            while total > HISTORY_ENTRIES:
                total -= log.popleft()[3]

    def forget(self, environment_id: int) -> None:
        """Drop what is kept of an environment (the next use reads it whole)."""
        with self._lock:
            self._known.pop(environment_id, None)
            self._log.pop(environment_id, None)

    # -- reading -------------------------------------------------------------------------

    def current(self, environment_id: int) -> Loaded:
        """The environment as the database has it now, caught up or read whole, and kept."""
        with self._store.reading() as r:
            version = r.environments.version(environment_id)
            if version is None:
                raise NotFound(f"no environment {environment_id}")
            known = self.known(environment_id)
            if known is not None and known.version >= version:
                return known
            if known is not None:
                caught = self._catch_up(r, known, version)
                if caught is not None and r.environments.version(environment_id) == version:
                    loaded, changes = caught
                    self._install(loaded, known.version, changes)
                    return loaded
            loaded = self._read_whole(r, environment_id, version)
        self._install(loaded, None, None)
        return loaded

    def within(self, work: UnitOfWork, environment_id: int, version: int) -> Loaded:
        """The environment at ``version``, its version inside ``work`` (whose row is held).

        Read in ``work``, it may include the transaction's own changes: then
        it is kept only if the transaction commits.
        """
        pending = self._pending.get(work, {}).get(environment_id)
        if pending is not None and pending.version == version:
            return pending
        known = self.known(environment_id)
        if known is not None and known.version == version:
            return known
        caught = None
        if known is not None and known.version < version:
            caught = self._catch_up(work, known, version)
        if caught is not None:
            loaded, changes = caught
            previous: int | None = known.version if known is not None else None
        else:
            loaded, changes, previous = self._read_whole(work, environment_id, version), None, None
        if environment_id in work.changed_environments:  # holds this transaction's changes
            self.wrote(work, loaded, previous, changes)
        else:  # the committed state: the row is held, nobody else can have moved it
            self._install(loaded, previous, changes)
        return loaded

    def wrote(
        self, work: UnitOfWork, loaded: Loaded, previous: int | None, changes: Changes | None
    ) -> None:
        """What ``work`` made of the environment: seen by ``work`` now, kept when it commits."""
        self._pending.setdefault(work, {})[loaded.environment_id] = loaded
        work.on_commit(lambda: self._install(loaded, previous, changes))

    # -- the slow way and the catching up ----------------------------------------------------

    def _read_whole(self, reading: Reading, environment_id: int, version: int) -> Loaded:
        """Every row, validated.

        On PostgreSQL each statement may see commits made after the one
        before: the version is read again after the rows, and the reading
        holds only if it did not move (every commit to the environment moves
        it), else it is repeated.
        """
        for _ in range(_READ_ATTEMPTS):
            document = stored_document(reading, environment_id)
            after = reading.environments.version(environment_id)
            if after == version:
                with self._lock:
                    self.whole_reads += 1
                return Loaded(environment_id, version, Ruleset(document))
            if after is None:
                raise NotFound(f"no environment {environment_id}")
            version = after
        raise Conflict(f"environment {environment_id} kept changing while it was read")

    @staticmethod
    def _catch_up(reading: Reading, known: Loaded, version: int) -> tuple[Loaded, Changes] | None:
        """``known`` moved to ``version`` by the rows written since, or None to read whole."""
        changes = no_changes()
        document = known.ruleset.document
        for part in PARTS:
            items = reading.items(part)  # type: ignore[arg-type]
            held: Mapping[str, Any] = document.flags if part == "flags" else document.segments
            for item in items.changed_since(known.environment_id, known.version):
                changes[part][item.key] = item.data
            still = items.keys(known.environment_id)
            changes[part].update((key, None) for key in held if key not in still)
        patched = known.ruleset.patched(changes_patch(changes))
        if patched is None:
            return None
        for part, entries in changes.items():
            for key, data in entries.items():
                if data is not None:
                    entries[key] = entry_data(patched.document, part, key)
        return Loaded(known.environment_id, version, patched), changes
