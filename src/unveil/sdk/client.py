"""The application's handle on its flags.

For now the client reads flags from a file or a dict (offline mode); it
evaluates locally through a compiled ``Ruleset`` and never raises from an
evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unveil.core import Evaluation, Ruleset

__all__ = ["Client"]


class Client:
    """Evaluates flags for contexts; ``key`` in a context is its targeting key."""

    def __init__(self, ruleset: Ruleset, *, source: str | Path | None = None) -> None:
        self._ruleset = ruleset
        self._source = source

    @classmethod
    def from_file(cls, source: str | Path | Mapping[str, Any]) -> Client:
        """A client over a flags file (YAML or JSON) or the same data as a dict.

        Raises ``InvalidDocument`` with every problem if the flags are bad.
        """
        if isinstance(source, Mapping):
            return cls(Ruleset.from_data(source))
        return cls(_load(source), source=source)

    @property
    def ruleset(self) -> Ruleset:
        """The flags this client evaluates now."""
        return self._ruleset

    def reload(self) -> None:
        """Read the file again. A bad file raises and the old flags stay in use."""
        if self._source is None:
            return
        self._ruleset = _load(self._source)

    def value(self, key: str, context: object = None, default: Any = None) -> Any:
        """The flag's value for this context, or ``default`` if it cannot be had."""
        return self._ruleset.value(key, context, default)

    def enabled(self, key: str, context: object = None, default: bool = False) -> bool:
        """Whether a boolean flag is on for this context."""
        return self._ruleset.enabled(key, context, default)

    def evaluate(self, key: str, context: object = None, default: Any = None) -> Evaluation:
        """Value, variant, reason and error code for this context."""
        return self._ruleset.evaluate(key, context, default)


def _load(path: str | Path) -> Ruleset:
    # the YAML reader is imported only by applications that read files
    from unveil.sdk.files import load_document

    return Ruleset(load_document(path))
