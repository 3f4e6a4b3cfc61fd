"""Public ids of rows people name in URLs and commands: a letter and the row's number.

``r17`` is release row 17, ``s3`` schedule row 3, ``c7`` change request row
7. Anything else (a leading zero, a number too large for a row, other
text) names no row, so a lookup by it finds nothing instead of failing.
"""

from __future__ import annotations

__all__ = ["row_number"]


def row_number(public_id: str, prefix: str) -> int | None:
    """The row a public id with ``prefix`` names, or None when the text is not one."""
    digits = public_id.removeprefix(prefix)
    if not public_id.startswith(prefix) or not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > 18 or digits.startswith("0"):
        return None
    return int(digits)
