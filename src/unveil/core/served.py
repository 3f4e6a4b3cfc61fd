"""Which variants a flag can serve at all, read from its configuration alone.

A flag that can serve only one variant, whoever asks, is fully rolled out
(or fully switched off): its code path for the other variants is dead and
the flag is a clean-up candidate (see ``unveil.service.stale``). The answer
is read from the configuration, not from traffic, so it holds for every
context, including ones never seen.
"""

from __future__ import annotations

from unveil.core.codec import _read_flag, _Reader
from unveil.core.model import Flag, Rollout, Serve

__all__ = ["flag_alone", "only_variant", "served_variants"]


def _variants_of(serve: Serve) -> set[str]:
    if isinstance(serve, Rollout):
        return {name for name, weight in serve.weights if weight > 0}
    return {serve}


def served_variants(flag: Flag) -> frozenset[str]:
    """Every variant some context could be given.

    Disabled: the off variant alone. Otherwise the targets' variants (each
    with at least one key), every rule's, the default's, and the off
    variant when a prerequisite could fail. A rule that can never match is
    still counted: telling that would need the contexts, so the answer errs
    toward "more than one", never toward calling a live flag rolled out.
    """
    if not flag.enabled:
        return frozenset({flag.off_variant})
    variants = {name for name, keys in flag.targets.items() if keys}
    for rule in flag.rules:
        variants |= _variants_of(rule.serve)
    variants |= _variants_of(flag.default)
    if flag.prerequisites:
        variants.add(flag.off_variant)
    return frozenset(variants)


def only_variant(flag: Flag) -> str | None:
    """The one variant everyone gets, or None if contexts can get different ones."""
    variants = served_variants(flag)
    return next(iter(variants)) if len(variants) == 1 else None


def flag_alone(key: str, data: object) -> Flag | None:
    """A flag's stored form read by itself, or None if it is not a valid flag.

    For a flag as the audit log kept it: the segments and flags it names are
    not checked (they were, when it was written), so an old version reads
    even if what it named is gone.
    """
    reader = _Reader()
    flag = _read_flag(reader, key, data, f"flags.{key}")
    return None if flag is None or reader.problems else flag
