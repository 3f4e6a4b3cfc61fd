"""Conditional requests: does an ``If-None-Match`` header match our ETag?

One reading for every route that answers 304 (the SDK snapshot, OFREP's bulk
evaluation), as RFC 9110 (section 13.1.2) defines it: ``*`` matches any
current representation; otherwise the header is a list of entity tags, and
it matches if any of them equals ours under weak comparison, where ``W/"x"``
and ``"x"`` are the same tag. Caches and proxies do weaken tags and join
lists, so a strict string comparison answered 200 where 304 was due.
"""

from __future__ import annotations

import re

__all__ = ["accepts_gzip", "none_match"]

# A quoted entity tag, weak or not; or, leniently, a bare token some clients send.
_TAG = re.compile(r'(?:W/)?"[^"]*"|[^,\s]+')


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/").strip('"')


def none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match: header`` matches ``etag``: then the answer is 304."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in _TAG.findall(header))


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding: header`` takes gzip (RFC 9110 12.5.3).

    gzip named with a weight above zero, or not named and ``*`` taken;
    ``gzip;q=0`` refuses it whatever ``*`` says.
    """
    if not header:
        return False
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False
