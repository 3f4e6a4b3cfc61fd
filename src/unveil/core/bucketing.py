"""Bucketing schemes: where a context falls in a rollout, stably.

A scheme maps (salt, value) to a bucket in [0, FULL_WEIGHT). A rollout's
variants own consecutive ranges of buckets in the order of the flag's
variants, so raising one variant's share only ever adds buckets to it.

Schemes are named, so a flag imported from another system can keep the
hashing it had and every user stays where they were. A new scheme is one
function and one row in ``SCHEMES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import mmh3

from unveil.core.errors import UnknownBucketingScheme
from unveil.core.model import DEFAULT_SCHEME, FULL_WEIGHT

__all__ = ["SCHEMES", "BucketFn", "bucket_text", "murmur3_bucket", "scheme"]

BucketFn = Callable[[str, str], int]


def murmur3_bucket(salt: str, value: str) -> int:
    """The native scheme: 32-bit MurmurHash3 (seed 0) of ``salt.value``."""
    return int(mmh3.hash(f"{salt}.{value}", 0, False)) % FULL_WEIGHT


SCHEMES: Mapping[str, BucketFn] = MappingProxyType({DEFAULT_SCHEME: murmur3_bucket})


def scheme(name: str) -> BucketFn:
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
