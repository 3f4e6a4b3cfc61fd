"""The exceptions of the release logic, below ``unveil.core``'s root.

    UnveilError (unveil.core)
    ├── InvalidDocument (unveil.core)   refused whole, .problems names every (path, message)
    │   ├── InvalidPlan                 a release plan that cannot be run
    │   └── InvalidState                a stored release state that is not one we wrote
    ├── InvalidWindow                   an advancing window's text that does not parse
    └── CommandRefused                  a command the release cannot take in its phase;
                                        .reason says why, and nothing changed

A refusal is an exception rather than a returned value so that ``step`` has
one return type, and so that a caller that forgets to look cannot carry on as
if the command had been taken. The server answers it with 409.
"""

from __future__ import annotations

from unveil.core.errors import InvalidDocument, UnveilError

__all__ = ["CommandRefused", "InvalidPlan", "InvalidState", "InvalidWindow"]


class InvalidPlan(InvalidDocument):
    """A release plan with problems: nothing of it is started."""

    subject = "the release plan has"


class InvalidState(InvalidDocument):
    """Stored release state that does not read back: it was not written by us."""

    subject = "the stored release state has"


class InvalidWindow(UnveilError):
    """The text of an advancing window that does not parse, or never opens."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"window {text!r}: {reason}")


class CommandRefused(UnveilError):
    """A command that the release cannot take now; the state is unchanged."""

    def __init__(self, command: str, phase: str, reason: str) -> None:
        self.command = command
        self.phase = phase
        self.reason = reason
        super().__init__(f"cannot {command} a release that is {phase.replace('_', ' ')}: {reason}")
