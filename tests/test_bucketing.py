"""Bucketing is a promise to users: these numbers must never change."""

from __future__ import annotations

import mmh3
import pytest

from unveil.core import Ruleset
from unveil.core.bucketing import SCHEMES, bucket_text, murmur3_bucket, scheme
from unveil.core.errors import UnknownBucketingScheme


def test_murmur3_is_the_published_x86_32_function() -> None:
    # MurmurHash3_x86_32("hello", seed 0) from the reference implementation
    assert mmh3.hash("hello", 0, False) == 0x248BFA47


@pytest.mark.parametrize(
    ("salt", "value", "bucket"),
    [
        ("new-checkout", "user-1", 8_746),
        ("new-checkout", "user-2", 27_883),
        ("f", "", 41_367),
        ("salt", "ключ", 28_620),  # text is hashed as UTF-8
        ("a.b", "c", 28_810),
    ],
)
def test_native_buckets_are_pinned(salt: str, value: str, bucket: int) -> None:
    assert murmur3_bucket(salt, value) == bucket


def test_compiled_rollout_uses_the_pinned_buckets() -> None:
    # user-1 is in bucket 8,746 of new-checkout: inside 8.747%, outside 8.746%
    def variant(share: float) -> str | None:
        rs = Ruleset.from_data(
            {"flags": {"new-checkout": {"default": {"rollout": {"on": share, "off": 100 - share}}}}}
        )
        return rs.evaluate("new-checkout", {"key": "user-1"}).variant

    assert variant(8.747) == "on"
    assert variant(8.746) == "off"


def test_schemes_are_named() -> None:
    assert scheme("murmur3").split is murmur3_bucket
    assert "murmur3" in SCHEMES
    with pytest.raises(UnknownBucketingScheme):
        scheme("nope")


@pytest.mark.parametrize(
    ("value", "text"),
    [("a", "a"), (7, "7"), (-3, "-3"), (True, None), (1.5, None), (None, None), ([1], None)],
)
def test_bucket_text(value: object, text: str | None) -> None:
    assert bucket_text(value) == text
