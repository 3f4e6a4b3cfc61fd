"""core/served.py: which variants a flag can serve, read from its configuration alone."""

from __future__ import annotations

from typing import Any

import pytest

from unveil.core import parse_document
from unveil.core.served import flag_alone, only_variant, served_variants

WHEN = [{"attr": "country", "op": "eq", "values": ["NL"]}]


@pytest.mark.parametrize(
    ("flag", "variants"),
    [
        ({"default": "on"}, {"on"}),
        ({"default": {"rollout": {"on": 100, "off": 0}}}, {"on"}),
        ({"default": {"rollout": {"on": 50, "off": 50}}}, {"on", "off"}),
        ({"default": "on", "enabled": False}, {"off"}),  # the kill switch: off for everyone
        ({"default": "on", "rules": [{"when": WHEN, "serve": "off"}]}, {"on", "off"}),
        ({"default": "on", "rules": [{"when": WHEN, "serve": "on"}]}, {"on"}),
        ({"default": "on", "targets": {"off": ["user-1"]}}, {"on", "off"}),
        ({"default": "on", "targets": {"off": []}}, {"on"}),  # nobody listed
        # a prerequisite may fail, and then the off variant is served
        ({"default": "on", "prerequisites": [{"flag": "base", "variants": ["on"]}]}, {"on", "off"}),
    ],
)
def test_the_variants_a_flag_can_serve(flag: dict[str, Any], variants: set[str]) -> None:
    document = parse_document({"flags": {"f": flag, "base": {"default": "on"}}})
    assert served_variants(document.flags["f"]) == variants
    assert only_variant(document.flags["f"]) == (
        next(iter(variants)) if len(variants) == 1 else None
    )


def test_a_stored_flag_reads_alone_even_when_what_it_names_is_gone() -> None:
    gone = {"default": "on", "rules": [{"when": [{"segment": "deleted"}], "serve": "on"}]}
    flag = flag_alone("f", gone)
    assert flag is not None
    assert only_variant(flag) == "on"
    assert flag_alone("f", {"default": "nowhere"}) is None  # not a variant of the flag
    assert flag_alone("f", "not a flag") is None
