"""A patch applied to a valid document by reading only what it touches.

``parse_document`` reads a whole environment; with ten thousand flags that
costs the better part of a second, and a live client would pay it for every
one-flag change. ``parse_patch`` reads only the flags and segments a patch
changes, and checks what they name and what names them (prerequisites and
their variants, segments, removed entries still in use, cycles and chains
when an edge changed) against an index of references kept beside the
document (``References``).

It is exactly as strict as a whole reading, by construction in one
direction and by a property test in the other: when it finds nothing wrong
it answers the new document; when it finds anything at all it answers None,
and the caller reads the whole patched document with ``parse_document``,
which refuses it with the same problems a whole reload would give (or
accepts it). tests/test_incremental.py checks on random environments and
random patches that both ways accept the same documents and refuse with the
same problems.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from unveil.core.codec import (
    MAX_FLAGS,
    MAX_PREREQUISITE_DEPTH,
    MAX_SEGMENT_DEPTH,
    MAX_SEGMENTS,
    _check_depth,
    _find_cycle,
    _flag_to_data,
    _join,
    _read_flag,
    _read_segment,
    _Reader,
    _segment_to_data,
    checked_document,
    read_entry,
)
from unveil.core.model import Condition, Document, Flag, Segment, SegmentMatch

__all__ = [
    "Patched",
    "References",
    "entry_data",
    "parse_patch",
    "references",
    "whole_patched",
]


def _named(conditions: Iterable[tuple[Condition, ...]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for when in conditions:
        for cond in when:
            if isinstance(cond, SegmentMatch):
                seen[cond.segment] = None
    return tuple(seen)


def flag_segments(flag: Flag) -> tuple[str, ...]:
    """The segments a flag's rules name, once each."""
    return _named(rule.when for rule in flag.rules)


def segment_segments(segment: Segment) -> tuple[str, ...]:
    """The segments a segment's rules name, once each."""
    return _named(rule.when for rule in segment.rules)


@dataclass(frozen=True, slots=True)
class References:
    """Who names whom in a document, both ways; only entries that name something are kept.

    Kept beside a document so that a patch finds what depends on what it
    changes without walking every flag.
    """

    needs: Mapping[str, tuple[str, ...]]  # flag -> its prerequisite flags
    needed_by: Mapping[str, frozenset[str]]  # flag -> flags that need it
    flag_uses: Mapping[str, tuple[str, ...]]  # flag -> segments its rules name
    segment_uses: Mapping[str, tuple[str, ...]]  # segment -> segments its rules name
    flag_users: Mapping[str, frozenset[str]]  # segment -> flags that name it
    segment_users: Mapping[str, frozenset[str]]  # segment -> segments that name it

    def dependents(self, flags: Iterable[str], segments: Iterable[str]) -> set[str]:
        """The flags whose answers may move when these flags and segments change.

        The flags themselves, the flags that use the segments (through other
        segments too), and everything that needs any of those as a
        prerequisite, however far down the chain.
        """
        out = set(flags)
        seen_segments: set[str] = set()
        pending = list(segments)
        while pending:
            name = pending.pop()
            if name in seen_segments:
                continue
            seen_segments.add(name)
            out.update(self.flag_users.get(name, ()))
            pending.extend(self.segment_users.get(name, ()))
        stack = list(out)
        while stack:
            for later in self.needed_by.get(stack.pop(), ()):
                if later not in out:
                    out.add(later)
                    stack.append(later)
        return out


def _reverse(forward: Mapping[str, tuple[str, ...]]) -> dict[str, frozenset[str]]:
    back: dict[str, set[str]] = {}
    for owner, names in forward.items():
        for name in names:
            back.setdefault(name, set()).add(owner)
    return {name: frozenset(owners) for name, owners in back.items()}


def references(document: Document) -> References:
    """The index of a whole document (once per snapshot; patches update it)."""
    needs = {
        k: tuple(p.flag for p in f.prerequisites)
        for k, f in document.flags.items()
        if f.prerequisites
    }
    flag_uses = {k: u for k, f in document.flags.items() if (u := flag_segments(f))}
    segment_uses = {k: u for k, s in document.segments.items() if (u := segment_segments(s))}
    return References(
        needs, _reverse(needs), flag_uses, segment_uses, _reverse(flag_uses), _reverse(segment_uses)
    )


def _moved(
    forward: Mapping[str, tuple[str, ...]],
    back: Mapping[str, frozenset[str]],
    changes: Mapping[str, tuple[str, ...] | None],
) -> tuple[dict[str, tuple[str, ...]], dict[str, frozenset[str]]]:
    """``forward`` and ``back`` with the owners in ``changes`` naming new things (None: gone)."""
    new_forward = dict(forward)
    new_back = dict(back)
    for owner, names in changes.items():
        old = forward.get(owner, ())
        for name in old:
            rest = new_back.get(name, frozenset()) - {owner}
            if rest:
                new_back[name] = rest
            else:
                new_back.pop(name, None)
        if names:
            new_forward[owner] = names
            for name in names:
                new_back[name] = new_back.get(name, frozenset()) | {owner}
        else:
            new_forward.pop(owner, None)
    return new_forward, new_back


@dataclass(frozen=True, slots=True)
class Patched:
    """A patched document, its index, and the flags whose compiled form is stale."""

    document: Document
    references: References
    stale: frozenset[str]


def _section(patch: Mapping[str, Any], name: str) -> Mapping[Any, Any]:
    part = patch.get(name)
    return part if isinstance(part, Mapping) else {}


def parse_patch(document: Document, refs: References, patch: Mapping[str, Any]) -> Patched | None:
    """The valid ``document`` with ``patch``'s flags and segments, or None to read it whole.

    None means something may be wrong (or that this reader does not decide
    it): the caller then reads the whole patched document with
    ``parse_document``, whose problems are the ones to report.
    """
    r = _Reader()
    # copy() of a mappingproxy is its dict's own copy, in C; dict(proxy) walks it item by item
    segments: dict[str, Segment] = document.segments.copy()  # type: ignore[attr-defined]
    flags: dict[str, Flag] = document.flags.copy()  # type: ignore[attr-defined]
    read_segments: dict[str, Segment] = {}
    read_flags: dict[str, Flag] = {}
    gone_segments: list[str] = []
    gone_flags: list[str] = []
    for key, body in _section(patch, "segments").items():
        if body is None:
            if segments.pop(key, None) is not None:
                gone_segments.append(key)
            continue
        segment = read_entry(r, "segments", "segment", key, body, _read_segment)
        if segment is None or r.problems:
            return None
        segments[key] = read_segments[key] = segment
    for key, body in _section(patch, "flags").items():
        if body is None:
            if flags.pop(key, None) is not None:
                gone_flags.append(key)
            continue
        flag = read_entry(r, "flags", "flag", key, body, _read_flag)
        if flag is None or r.problems:
            return None
        flags[key] = read_flags[key] = flag
    if len(flags) > MAX_FLAGS or len(segments) > MAX_SEGMENTS:
        return None

    # what the read entries name must exist, with the variants named
    segment_changes: dict[str, tuple[str, ...] | None] = dict.fromkeys(gone_segments)
    for key, segment in read_segments.items():
        uses = segment_changes[key] = segment_segments(segment)
        if any(name not in segments for name in uses):
            return None
    flag_changes: dict[str, tuple[str, ...] | None] = dict.fromkeys(gone_flags)
    need_changes: dict[str, tuple[str, ...] | None] = dict.fromkeys(gone_flags)
    for key, flag in read_flags.items():
        uses = flag_changes[key] = flag_segments(flag)
        if any(name not in segments for name in uses):
            return None
        need_changes[key] = tuple(pre.flag for pre in flag.prerequisites)
        for pre in flag.prerequisites:
            other = flags.get(pre.flag)
            if pre.flag == key or other is None:
                return None
            if any(variant not in other.variants for variant in pre.variants):
                return None
        for later in refs.needed_by.get(key, ()):
            if later in read_flags or later not in flags:
                continue  # read itself, or removed by this patch
            for pre in flags[later].prerequisites:
                if pre.flag == key and any(v not in flag.variants for v in pre.variants):
                    return None
    # nothing left may name what the patch removes
    for key in gone_segments:
        if any(u in flags and u not in read_flags for u in refs.flag_users.get(key, ())):
            return None
        if any(u in segments and u not in read_segments for u in refs.segment_users.get(key, ())):
            return None
    for key in gone_flags:
        if any(u in flags and u not in read_flags for u in refs.needed_by.get(key, ())):
            return None

    needs, needed_by = _moved(refs.needs, refs.needed_by, need_changes)
    flag_uses, flag_users = _moved(refs.flag_uses, refs.flag_users, flag_changes)
    segment_uses, segment_users = _moved(refs.segment_uses, refs.segment_users, segment_changes)
    # a cycle or a longer chain can only come with an edge that was not there
    if any(need_changes[k] != refs.needs.get(k, ()) for k in read_flags):
        graph = {k: list(v) for k, v in needs.items()}
        if next(_find_cycle(graph), None) is not None:
            return None
        _check_depth(r, graph, "flags", "prerequisites", MAX_PREREQUISITE_DEPTH, ".prerequisites")
    if any(segment_changes[k] != refs.segment_uses.get(k, ()) for k in read_segments):
        graph = {k: list(v) for k, v in segment_uses.items()}
        if next(_find_cycle(graph), None) is not None:
            return None
        _check_depth(r, graph, "segments", "segments", MAX_SEGMENT_DEPTH, ".rules")
    if r.problems:
        return None

    new_refs = References(needs, needed_by, flag_uses, segment_uses, flag_users, segment_users)
    changed_segments = [*read_segments, *gone_segments]
    stale = refs.dependents([*read_flags, *gone_flags], changed_segments)
    stale |= new_refs.dependents((), changed_segments)
    return Patched(
        Document(
            flags=MappingProxyType(flags),
            segments=MappingProxyType(segments),
            version=document.version,
        ),
        new_refs,
        frozenset(stale),
    )


def entry_data(document: Document, part: str, key: str) -> dict[str, Any]:
    """One flag's (``part`` "flags") or segment's canonical data, as ``document_to_data`` has it.

    A server that validated a write with ``parse_patch`` stores, records and
    sends this one entry, without turning the whole document back into data.
    """
    if part == "flags":
        return _flag_to_data(document.flags[key])
    return _segment_to_data(document.segments[key])


# -- the whole reading of a patched document, without reading it again -------------------


def _patched_keys(
    current: Mapping[str, Any], changes: Mapping[Any, Any], in_key_order: bool
) -> dict[Any, Any]:
    """The section after the patch, in the order a whole reading would see it: a changed
    entry keeps its place, a new one comes last, a removed one is gone. The values are
    the patch's raw bodies for what it changes and the valid entries for the rest."""
    section: dict[Any, Any] = dict(sorted(current.items())) if in_key_order else dict(current)
    for key, body in changes.items():
        if body is None:
            section.pop(key, None)
        else:
            section[key] = body
    return section


def _note_references(r: _Reader, path: str, when: tuple[Condition, ...], owner: str | None) -> None:
    for i, condition in enumerate(when):
        if isinstance(condition, SegmentMatch):
            r.segment_refs.append((f"{path}[{i}].segment", condition.segment, owner))


def _read_valid_section(
    r: _Reader,
    name: str,
    noun: str,
    section: Mapping[Any, Any],
    changes: Mapping[Any, Any],
    read: Callable[[_Reader, str, object, str], Any],
    limit: int,
    note: Callable[[_Reader, str, Any], None],
) -> dict[str, Any]:
    """``_read_section`` of a section whose unchanged entries are known valid: only the
    patch's entries are read; the others leave in ``r`` what reading them would."""
    out: dict[str, Any] = {}
    if len(section) > limit:
        r.fail(name, f"has {len(section)} {noun}s, more than the limit of {limit}")
        return out
    for key, body in section.items():
        if key in changes:
            item = read_entry(r, name, noun, key, body, read)
            if item is not None:
                out[key] = item
        else:
            note(r, _join(name, key), body)
            out[key] = body
    return out


def _note_segment(r: _Reader, path: str, segment: Segment) -> None:
    for i, rule in enumerate(segment.rules):
        _note_references(r, f"{path}.rules[{i}].when", rule.when, segment.key)


def _note_flag(r: _Reader, path: str, flag: Flag) -> None:
    if flag.prerequisites:
        r.prerequisites.append((path, flag.key, flag.prerequisites))
    for i, rule in enumerate(flag.rules):
        _note_references(r, f"{path}.rules[{i}].when", rule.when, None)


def whole_patched(
    document: Document, patch: Mapping[str, Any], in_key_order: bool = False
) -> Document:
    """The valid ``document`` with ``patch``, as a whole reading of the patched document
    answers it: the document, or ``InvalidDocument`` with every problem, the same
    problems in the same order.

    For a patch ``parse_patch`` doubts. Reading the whole document again costs
    the better part of a second at ten thousand flags, and a server does it
    holding the environment's write lock; here only the patch's entries are
    read, and the entries known valid leave in the reader what reading them
    would have (the names they use), so that the checks of references,
    cycles and chains run over the whole document as they do in
    ``parse_document``. tests/test_incremental.py holds the two to the same
    answers on random documents and patches.

    ``in_key_order`` reads the entries the patch does not touch in key order, as a
    reading of the stored rows does: a node's own document keeps the order it
    learnt its keys in, and two nodes would otherwise name the same problems in
    different orders.
    """
    r = _Reader()
    segment_changes = _section(patch, "segments")
    flag_changes = _section(patch, "flags")
    raw_segments = _patched_keys(document.segments, segment_changes, in_key_order)
    raw_flags = _patched_keys(document.flags, flag_changes, in_key_order)
    segments = _read_valid_section(
        r,
        "segments",
        "segment",
        raw_segments,
        segment_changes,
        _read_segment,
        MAX_SEGMENTS,
        _note_segment,
    )
    flags = _read_valid_section(
        r, "flags", "flag", raw_flags, flag_changes, _read_flag, MAX_FLAGS, _note_flag
    )
    return checked_document(r, raw_flags, raw_segments, flags, segments)
