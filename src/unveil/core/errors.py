"""The exceptions of unveil, on one screen.

    UnveilError                 root: catch this to catch anything unveil raises
    ├── InvalidDocument         a flags document was refused whole; .problems lists
    │                           every (path, message) found, never just the first
    └── UnknownBucketingScheme  a scheme name that no one registered

Evaluation never raises any of these: it answers with an error code instead
(see ``unveil.core.model.ErrorCode``). They belong to loading and validating.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["InvalidDocument", "Problem", "UnknownBucketingScheme", "UnveilError"]


class UnveilError(Exception):
    """Root of every exception unveil raises on purpose."""


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with a document, named by where it is."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidDocument(UnveilError):
    """A document with problems; nothing of it is used."""

    #: how the message begins, before the count of problems
    subject = "the flags document has"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        head = f"{self.subject} {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems))


class UnknownBucketingScheme(UnveilError):
    """Asked for a bucketing scheme that is not registered."""
