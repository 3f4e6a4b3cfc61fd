"""Promotion: copying flags and segments from one environment of a project to another.

A promotion compares what it would copy (some flags and segments, or the
whole source environment) with what the target has, and copies it as one
change in the target: one unit of work, one whole-document apply there
(so one version bump, validated whole), plus an audit entry
``promotion.applied`` that names the source environment and the source
version it copied. Targeting that names something the target would still
lack afterwards (a rule on a segment only the source has, a prerequisite
flag the target has not) is refused with every such name, and nothing is
written: never half a copy. Individual targets (a flag's ``targets``, lists
of keys that often differ per environment: test users in staging) can be
kept from the target instead of copied.

In an environment that requires approval a promotion becomes a change
request (``promotion.apply``): the request pins the source version it was
asked on, so the approver approves exactly the copy they were shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unveil.core import Problem
from unveil.service.errors import Conflict, Invalid
from unveil.service.flags import Change, FlagService, diff_parts
from unveil.service.scope import environment_items, require_environment
from unveil.service.text import check_text, text_problem
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = ["PROMOTION", "Promotion", "PromotionRequest", "PromotionService", "references"]

#: the audit action (and change request / schedule action) of a promotion
PROMOTION = "promotion.apply"


@dataclass(frozen=True, slots=True)
class PromotionRequest:
    """What to copy, from where, keeping which targets.

    No flags and no segments: the whole source environment. ``keep_targets``:
    True keeps every promoted flag's targets as the target environment has
    them; a list keeps them for those flags only. ``source_version`` pins the
    source (a change request's approval must copy what was shown).
    """

    source: str
    flags: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    keep_targets: bool | tuple[str, ...] = False
    source_version: int | None = None

    @classmethod
    def from_data(cls, data: object, prefix: str = "") -> PromotionRequest:
        """The request from plain data (an API body, a schedule's or change request's
        payload); ``Invalid`` naming every field that is wrong."""
        problems: list[Problem] = []
        if not isinstance(data, Mapping):
            raise Invalid((Problem(prefix.rstrip(".") or "promotion", "must be an object"),))
        known = {"source", "flags", "segments", "keep_targets", "source_version"}
        problems += [
            Problem(f"{prefix}{k}", "is not a field of a promotion") for k in data if k not in known
        ]
        source = data.get("source")
        named = text_problem(source, f"{prefix}source", 200)
        if named is not None:
            problems.append(named)
        lists: dict[str, tuple[str, ...]] = {}
        for name in ("flags", "segments"):
            value = data.get(name) or []
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                problems.append(Problem(f"{prefix}{name}", "must be a list of keys"))
                value = []
            lists[name] = tuple(value)
        keep = data.get("keep_targets", False)
        if not isinstance(keep, bool) and not (
            isinstance(keep, list | tuple) and all(isinstance(v, str) for v in keep)
        ):
            problems.append(
                Problem(f"{prefix}keep_targets", "must be true, false or a list of flags")
            )
            keep = False
        pinned = data.get("source_version")
        if pinned is not None and (not isinstance(pinned, int) or isinstance(pinned, bool)):
            problems.append(Problem(f"{prefix}source_version", "must be a version number"))
            pinned = None
        if problems:
            raise Invalid(tuple(problems))
        return cls(
            str(source),
            lists["flags"],
            lists["segments"],
            keep if isinstance(keep, bool) else tuple(keep),
            pinned,
        )

    def as_data(self) -> dict[str, Any]:
        keep = self.keep_targets
        return {
            "source": self.source,
            "flags": list(self.flags),
            "segments": list(self.segments),
            "keep_targets": keep if isinstance(keep, bool) else list(keep),
            "source_version": self.source_version,
        }

    def pinned(self, version: int) -> PromotionRequest:
        return PromotionRequest(self.source, self.flags, self.segments, self.keep_targets, version)

    def keeps_targets_of(self, key: str) -> bool:
        keep = self.keep_targets
        return keep if isinstance(keep, bool) else key in keep


@dataclass(frozen=True, slots=True)
class Promotion:
    """What a promotion copies (or copied): the target's items before and after."""

    project: str
    source: str
    target: str
    source_version: int
    target_version: int
    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    only_in_target: dict[str, list[str]]
    applied: bool = False
    written_version: int | None = None
    kept_targets: list[str] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        present = {p: {k: v for k, v in i.items() if v is not None} for p, i in self.before.items()}
        diff = diff_parts(present, self.after)
        unchanged = {
            part: sorted(
                k for k in self.after[part] if self.before[part].get(k) == self.after[part][k]
            )
            for part in self.after
        }
        return {
            "project": self.project,
            "source": self.source,
            "target": self.target,
            "source_version": self.source_version,
            "target_version": self.target_version,
            "applied": self.applied,
            "written_version": self.written_version,
            "flags": sorted(self.after["flags"]),
            "segments": sorted(self.after["segments"]),
            "kept_targets": self.kept_targets,
            "added": diff.added,
            "changed": diff.changed,
            "unchanged": unchanged,
            "only_in_target": self.only_in_target,
            "before": self.before,
            "after": self.after,
        }


def _clauses(rules: Any) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
    if not isinstance(rules, list):
        return
    for i, rule in enumerate(rules):
        when = rule.get("when") if isinstance(rule, Mapping) else None
        if isinstance(when, list):
            for j, clause in enumerate(when):
                if isinstance(clause, Mapping):
                    yield i, j, clause


def references(part: str, key: str, data: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What one flag or segment names elsewhere: (path, "segment" | "flag", name)."""
    found = [
        (f"{part}.{key}.rules[{i}].when[{j}].segment", "segment", str(clause["segment"]))
        for i, j, clause in _clauses(data.get("rules"))
        if isinstance(clause.get("segment"), str)
    ]
    prerequisites = data.get("prerequisites") if part == "flags" else None
    if isinstance(prerequisites, list):
        found += [
            (f"{part}.{key}.prerequisites[{i}].flag", "flag", str(pre["flag"]))
            for i, pre in enumerate(prerequisites)
            if isinstance(pre, Mapping) and isinstance(pre.get("flag"), str)
        ]
    return found


def _names_problems(
    names: Sequence[str], field_name: str, have: Mapping[str, Any], env: str
) -> list[Problem]:
    """What is wrong with the keys a request names: not keys, twice, or not in the source."""
    noun = field_name[:-1]
    problems = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            problems.append(Problem(f"{field_name}[{i}]", f"must be a {noun}'s key"))
        elif name in seen:
            problems.append(Problem(f"{field_name}[{i}]", f"names {noun} '{name}' twice"))
        elif name not in have:
            problems.append(Problem(f"{field_name}[{i}]", f"no {noun} '{name}' in {env}"))
        if isinstance(name, str):
            seen.add(name)
    return problems


class PromotionService:
    """Compare two environments, and copy from one to the other as one change."""

    def __init__(self, store: Store, flags: FlagService) -> None:
        self.store = store
        self.flags = flags

    def compare(self, project: str, target: str, request: PromotionRequest) -> Promotion:
        """What the promotion would copy; refused (``Invalid``) as applying it would be."""
        check_text(target, "target", 200)
        with self.store.reading() as r:
            return self._plan(r, project, target, request)

    def apply(
        self,
        project: str,
        target: str,
        request: PromotionRequest,
        change: Change,
        within: UnitOfWork | None = None,
    ) -> Promotion:
        """Copy it: one whole-document apply in the target, audited with its source."""
        with self.store.unit_of_work(within) as work:
            require_environment(work, project, target, lock=True)
            plan = self._plan(work, project, target, request)
            if request.source_version is not None and request.source_version != plan.source_version:
                raise Conflict(
                    f"{request.source} changed since the promotion was asked "
                    f"(version {request.source_version} then, {plan.source_version} now); "
                    "compare again"
                )
            target_id = require_environment(work, project, target)
            current = environment_items(work, target_id)
            document = {
                "version": 1,
                "flags": {**current["flags"], **plan.after["flags"]},
                "segments": {**current["segments"], **plan.after["segments"]},
            }
            why = f"promoted from {request.source} at version {plan.source_version}"
            if change.reason:
                why += f": {change.reason}"
            _, written = self.flags.apply_document(
                project, target, document, Change(change.actor, why), within=work
            )
            changed = written != plan.target_version
            done = Promotion(
                plan.project,
                plan.source,
                plan.target,
                plan.source_version,
                plan.target_version,
                plan.before,
                plan.after,
                plan.only_in_target,
                applied=True,
                written_version=written if changed else None,
                kept_targets=plan.kept_targets,
            )
            data = done.as_data()
            work.record(
                actor=change.actor,
                action=PROMOTION,
                target=target,
                reason=why,
                before={p: data["before"][p] for p in ("flags", "segments")},
                after={
                    "source": request.source,
                    "source_version": plan.source_version,
                    "flags": data["flags"],
                    "segments": data["segments"],
                    "kept_targets": plan.kept_targets,
                    "added": data["added"],
                    "changed": data["changed"],
                    "environment_version": done.written_version,
                },
                environment_id=target_id,
                versioned=False,
            )
            return done

    def _plan(
        self, reading: Reading, project: str, target: str, request: PromotionRequest
    ) -> Promotion:
        if request.source == target:
            raise Invalid((Problem("source", f"is the target environment '{target}' itself"),))
        source_id = require_environment(reading, project, request.source)
        target_id = require_environment(reading, project, target)
        source = environment_items(reading, source_id)
        there = environment_items(reading, target_id)
        source_version = reading.environments.version(source_id) or 0
        target_version = reading.environments.version(target_id) or 0
        problems = [
            *_names_problems(request.flags, "flags", source["flags"], request.source),
            *_names_problems(request.segments, "segments", source["segments"], request.source),
        ]
        if not isinstance(request.keep_targets, bool):
            problems += [
                Problem(f"keep_targets[{i}]", f"flag '{k}' is not promoted")
                for i, k in enumerate(request.keep_targets)
                if (request.flags or request.segments) and k not in request.flags
            ]
        if problems:
            raise Invalid(tuple(problems))
        whole = not request.flags and not request.segments
        chosen = {
            "flags": list(source["flags"]) if whole else list(request.flags),
            "segments": list(source["segments"]) if whole else list(request.segments),
        }
        after: dict[str, dict[str, Any]] = {"flags": {}, "segments": {}}
        kept: list[str] = []
        for key in chosen["flags"]:
            data = dict(source["flags"][key])
            if request.keeps_targets_of(key):
                data.pop("targets", None)
                own = (there["flags"].get(key) or {}).get("targets")
                if own:
                    data["targets"] = own
                kept.append(key)
            after["flags"][key] = data
        for key in chosen["segments"]:
            after["segments"][key] = source["segments"][key]
        result = {p: {**there[p], **after[p]} for p in ("flags", "segments")}
        missing = [
            Problem(
                path,
                f"names {kind} '{name}', which {target} does not have: promote it too "
                f"(add it to {kind}s) or create it there first",
            )
            for part in ("flags", "segments")
            for key, data in after[part].items()
            for path, kind, name in references(part, key, data)
            if name not in result[f"{kind}s"]
        ]
        if missing:
            raise Invalid(tuple(missing))
        before = {p: {k: there[p].get(k) for k in after[p]} for p in ("flags", "segments")}
        only = {p: sorted(k for k in there[p] if k not in source[p]) for p in ("flags", "segments")}
        return Promotion(
            project,
            request.source,
            target,
            source_version,
            target_version,
            before,
            after,
            only,
            kept_targets=sorted(kept),
        )
