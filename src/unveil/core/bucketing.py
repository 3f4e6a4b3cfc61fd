"""Bucketing schemes: where a context falls in a rollout or a sample, stably.

A scheme answers two questions about a (salt, value) pair:

- ``split``: its bucket in ``[0, total)`` for a rollout whose weights add up
  to ``total``. The rollout's variants own consecutive ranges of buckets in
  the order of the flag's variants, so raising one variant's share only ever
  adds buckets to it.
- ``sample``: its bucket in ``[0, FULL_WEIGHT)`` for a sample condition,
  which holds when the bucket is below the sample's percentage.

Schemes are named, so a flag imported from another system keeps the hashing
it had and every user stays where it was. A new scheme is two functions and
one row in ``SCHEMES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import mmh3

from unveil.core.errors import UnknownBucketingScheme
from unveil.core.model import DEFAULT_SCHEME, FULL_WEIGHT

__all__ = [
    "SCHEMES",
    "UNLEASH_SCHEME",
    "Scheme",
    "bucket_text",
    "murmur3_bucket",
    "scheme",
]

#: The scheme that reproduces Unleash's placement of users.
UNLEASH_SCHEME = "unleash"

# Unleash hashes variant assignment with this seed, strategy percentages with 0.
_UNLEASH_VARIANT_SEED = 86028157
_UNLEASH_PERCENT_STEP = FULL_WEIGHT // 100


def murmur3_bucket(salt: str, value: str, total: int = FULL_WEIGHT) -> int:
    """The native scheme: 32-bit MurmurHash3 (seed 0) of ``salt.value``."""
    return int(mmh3.hash(f"{salt}.{value}", 0, False)) % total


def _murmur3_sample(salt: str, value: str) -> int:
    return int(mmh3.hash(f"{salt}.{value}", 0, False)) % FULL_WEIGHT


def _unleash_split(salt: str, value: str, total: int) -> int:
    return int(mmh3.hash(f"{salt}:{value}", _UNLEASH_VARIANT_SEED, False)) % total


def _unleash_sample(salt: str, value: str) -> int:
    """Unleash's whole percent 1..100, placed at the top of its range.

    Unleash lets a context in when ``hash % 100 + 1 <= percentage``; putting
    percent ``n`` at ``n * 1000 - 1`` makes ``bucket < percent`` the same test
    for whole and fractional percentages alike.
    """
    whole = int(mmh3.hash(f"{salt}:{value}", 0, False)) % 100 + 1
    return whole * _UNLEASH_PERCENT_STEP - 1


@dataclass(frozen=True, slots=True)
class Scheme:
    """One named way of placing contexts in buckets."""

    split: Callable[[str, str, int], int]
    sample: Callable[[str, str], int]


SCHEMES: Mapping[str, Scheme] = MappingProxyType(
    {
        DEFAULT_SCHEME: Scheme(murmur3_bucket, _murmur3_sample),
        UNLEASH_SCHEME: Scheme(_unleash_split, _unleash_sample),
    }
)


def scheme(name: str) -> Scheme:
    """The scheme registered under ``name``."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnknownBucketingScheme(name) from None


def bucket_text(value: object) -> str | None:
    """The text a context value is hashed as: strings and whole numbers only."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
